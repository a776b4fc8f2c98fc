"""Enumeration of binary layers: every state of ``n`` units, and sums over them in chunks.

The lowest module of :mod:`pgm_lab.rbm` after :mod:`~pgm_lab.rbm.bernoulli`: exact free energies
of coupled layers (:mod:`~pgm_lab.rbm.energy`) and exact log-partition functions
(:mod:`~pgm_lab.rbm.partition`) both enumerate through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InferenceError

__all__ = ["MAX_EXACT_UNITS", "binary_states", "check_enumerable", "logsumexp_states"]

#: Exact enumeration is refused above this many enumerated units (2^25 states).
MAX_EXACT_UNITS = 25


def binary_states(start: int, stop: int, n: int, dtype: torch.dtype,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """States ``start .. stop - 1`` of ``n`` binary units, ``[stop - start, n]``; bit ``i`` of
    the code is unit ``i``."""
    codes = torch.arange(start, stop, device=device)
    return ((codes[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)


def check_enumerable(n: int, max_units: int = MAX_EXACT_UNITS, what: str = "exact log Z"
                     ) -> None:
    """Refuse to enumerate more than ``2^max_units`` states."""
    if n > max_units:
        raise InferenceError(
            f"{what} enumerates 2^{n} states; expected at most 2^{max_units} "
            f"(max_units={max_units}); use method='ais' or pass a larger max_units")


def logsumexp_states(log_f: Callable[[torch.Tensor], torch.Tensor], n: int, *,
                     dtype: torch.dtype, device: torch.device | str = "cpu",
                     chunk_size: int = 2**16) -> torch.Tensor:
    r""":math:`\log \sum_{s \in \{0,1\}^n} e^{f(s)}` with ``log_f: [S, n] -> [S, ...]``.

    Returns ``[...]``; the states are visited in chunks of ``chunk_size`` (memory
    :math:`O(\text{chunk} \times \ldots)`), differentiable through ``log_f``.
    """
    chunks = []
    for start in range(0, 2**n, chunk_size):
        s = binary_states(start, min(2**n, start + chunk_size), n, dtype, device)
        chunks.append(torch.logsumexp(log_f(s), 0))
    return torch.logsumexp(torch.stack(chunks), 0)
