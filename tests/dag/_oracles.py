"""Shared helpers of the DAG tests: pgmpy oracles (imported lazily, warnings silenced), brute
force enumeration and random small networks."""

from __future__ import annotations

import functools
import itertools
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import strategies as st

from pgm_lab.dag import DAG, cpt, to_pgmpy

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


def brute_force(dag):
    """Joint probability table over all nodes by enumeration, axes in dag.nodes order."""
    cards = [len(dag.states(n)) for n in dag.nodes]
    pos = {n: i for i, n in enumerate(dag.nodes)}
    joint = torch.zeros(cards, dtype=torch.float64)
    tables = dag.tables()
    for x in itertools.product(*[range(c) for c in cards]):
        p = 1.0
        for n in dag.nodes:
            p *= float(tables[n][tuple(x[pos[v]] for v in (*dag.parents(n), n))])
        joint[x] = p
    return joint


def draw_evidence(data, dag, joint):
    """Evidence (node -> state index) on a random subset of ``dag``'s nodes, drawn with
    hypothesis' ``st.data()``; returns it with the slice of the brute-force ``joint`` it selects
    and the unobserved nodes in order."""
    nodes = list(dag.nodes)
    observed = data.draw(st.lists(st.sampled_from(nodes), unique=True, max_size=len(nodes)))
    ev = {v: data.draw(st.integers(0, len(dag.states(v)) - 1)) for v in observed}
    sub = joint[tuple(ev.get(n, slice(None)) for n in nodes)]
    return ev, sub, [n for n in nodes if n not in ev]


@st.composite
def small_networks(draw):
    n = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    cards = [draw(st.integers(1, 3)) for _ in range(n)]
    names = [f"x{i}" for i in range(n)]
    spec = {}
    for i in range(n):
        parents = [names[j] for j in range(i) if draw(st.booleans())][:3]
        shape = [cards[names.index(p)] for p in parents] + [cards[i]]
        # normalized Exp(1) draws = Dirichlet(1) rows, reproducible from the drawn seed
        table = -torch.rand(shape, generator=gen, dtype=torch.float64).log()
        if draw(st.booleans()):  # some zero entries (deterministic-ish tables)
            table = table * (torch.rand(shape, generator=gen) > 0.3)
            table[..., 0] += 1e-3
        spec[names[i]] = cpt(parents, table / table.sum(-1, keepdim=True))
    # list the spec in reverse: the order must be derived, not given
    return DAG(dict(reversed(list(spec.items())))), seed
