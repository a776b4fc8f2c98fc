"""Shared helpers of the DAG tests: pgmpy oracles (imported lazily, warnings silenced)."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import pytest
import torch

from pgm_lab.dag import to_pgmpy

PGMPY_MODELS = Path(__file__).resolve().parents[2] / (
    ".venv/lib/python3.11/site-packages/pgmpy/utils/example_models")


def pgmpy():
    """Import pgmpy's inference and model classes (its import emits FutureWarnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("pgmpy")
        from pgmpy.factors.discrete import TabularCPD
        from pgmpy.inference import VariableElimination
        from pgmpy.models import DiscreteBayesianNetwork
        from pgmpy.readwrite import BIFReader
    return TabularCPD, VariableElimination, DiscreteBayesianNetwork, BIFReader


def pgmpy_file(name: str) -> Path:
    """Path of a bnlearn network in pgmpy's wheel (skips if pgmpy is not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("pgmpy")
    if spec is None:
        pytest.skip("pgmpy not installed")
    path = Path(spec.origin).parent / "utils" / "example_models" / f"{name}.bif.gz"
    if not path.exists():
        pytest.skip(f"{path} not in this pgmpy version")
    return path


@functools.cache
def pgmpy_from_dag(dag):
    """The same network as a pgmpy DiscreteBayesianNetwork (cached per DAG)."""
    pgmpy()  # skips when pgmpy is not installed
    return to_pgmpy(dag)


def pgmpy_posterior(model, query: str, evidence: dict[str, str], states) -> torch.Tensor:
    """pgmpy VariableElimination marginal of ``query``, ordered like ``states``."""
    _, VE, _, _ = pgmpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = VE(model).query([query], evidence=evidence, show_progress=False)
    order = [f.state_names[query].index(s) for s in states]
    return torch.as_tensor(f.values[order], dtype=torch.float64)
