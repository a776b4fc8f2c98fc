"""Numerical helpers of :mod:`pgm_lab.rbm` that depend on nothing else in the package."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["softplus", "phase_weights"]


def softplus(x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 + e^x)` to the precision of ``x``'s dtype.

    ``F.softplus`` returns ``x`` itself above ``threshold=20``, an error of :math:`e^{-x}
    \approx 2 \cdot 10^{-9}` per unit: below float32's resolution, but some :math:`10^5`
    float64 ulps.
    The threshold here is :math:`\max(20, -\log \epsilon)` for the dtype's machine epsilon
    :math:`\epsilon` (36.04 for float64), where :math:`e^{-x} < \epsilon` lies below half an
    ulp of ``x``.
    """
    return F.softplus(x, threshold=_softplus_threshold(x.dtype))


@functools.cache
def _softplus_threshold(dtype: torch.dtype) -> float:
    return max(20.0, -math.log(torch.finfo(dtype).eps))


@functools.lru_cache(maxsize=16)
def phase_weights(n_pos: int, n_neg: int, dtype: torch.dtype, device: torch.device
                   ) -> torch.Tensor:
    """``[-1/n_pos] * n_pos + [1/n_neg] * n_neg`` (cached: minibatch sizes repeat; read-only)."""
    w = torch.full((n_pos + n_neg,), 1.0 / n_neg, dtype=dtype, device=device)
    w[:n_pos] = -1.0 / n_pos
    return w
