"""Small helpers shared by the DAG modules (below all of them: imports only torch and errors)."""

from __future__ import annotations

import operator
from typing import Any

import torch

from ..errors import DAGError

__all__ = ["forked_rng", "positive_int"]


def positive_int(value: Any, what: str, error: type[Exception] = DAGError) -> int:
    """``value`` as a Python int >= 1 (numpy/torch integer scalars accepted, bools not)."""
    try:
        n = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        n = None
    if n is None or n < 1:
        raise error(f"expected {what} to be a positive int, got {value!r}; try {what}=1000")
    return n


class forked_rng:
    """``with forked_rng(seed):`` runs on a forked, seeded torch RNG (no-op for ``seed=None``)."""

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self._fork = None

    def __enter__(self) -> None:
        if self.seed is not None:
            self._fork = torch.random.fork_rng(devices=[])
            self._fork.__enter__()
            torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)
