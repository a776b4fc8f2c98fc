"""Fast Bernoulli draws for the Gibbs samplers, driven by a ``torch.Generator``.

Why not ``torch.bernoulli``: on CPU, torch draws every number from one Mersenne twister behind
a lock, ~5-25 ns per unit (``torch.bernoulli(p)`` is the slowest variant), which made sampling,
not the two matmuls, the cost of a Gibbs step. Here each call draws three 63-bit words from
the caller's ``torch.Generator`` (or torch's global RNG), uses them as the state of a NumPy
SFC64 generator and fills the uniforms from it (~2-4 ns per number) into a reused buffer.
Randomness therefore stays a deterministic function of the torch generator's state --
seeding, ``get_state`` / ``set_state`` checkpoints and exact resume keep working. Below
``NUMPY_MIN_SIZE`` numbers the fixed cost of that hand-over exceeds the saving and
``torch.rand`` is used, as on other devices (a counter-based Philox generator on CUDA).
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

__all__ = ["uniform", "bernoulli_logits"]

NUMPY_MIN_SIZE = 2**15  # measured crossover on a 2-core x86 machine (64x100 RBM, batch 256)
SCRATCH_MAX_SIZE = 2**22
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_local = threading.local()


def _sfc64(generator: torch.Generator | None) -> np.random.Generator:
    """A NumPy SFC64 stream whose state words ``a, b, c`` are drawn from ``generator``.

    SFC64 (Doty-Humphrey's small fast chaotic generator) has a 64-bit counter in its state,
    so every state lies on a cycle of at least :math:`2^{64}`; random words need no warm-up.
    """
    state = np.ones(4, dtype=np.uint64)  # a, b, c, counter = 1
    state[:3] = torch.empty(3, dtype=torch.int64).random_(generator=generator).numpy()
    rng = getattr(_local, "rng", None)
    if rng is None:  # one reusable object per thread: only its state is set per call
        rng = _local.rng = np.random.Generator(np.random.SFC64(0))
    rng.bit_generator.state = {"bit_generator": "SFC64", "state": {"state": state},
                               "has_uint32": 0, "uinteger": 0}
    return rng


def _fill_uniform(out: np.ndarray, generator: torch.Generator | None) -> np.ndarray:
    return _sfc64(generator).random(out=out, dtype=out.dtype)


def uniform(shape: tuple[int, ...], *, dtype: torch.dtype = torch.float32,
            device: torch.device | str = "cpu",
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform numbers on ``[0, 1)`` of ``shape`` (float32: 24 random bits, float64: 53)."""
    device = torch.device(device)
    if device.type != "cpu" or dtype not in _NUMPY_DTYPES or math.prod(shape) < NUMPY_MIN_SIZE:
        return torch.rand(shape, dtype=dtype, device=device, generator=generator)
    out = np.empty(shape, dtype=_NUMPY_DTYPES[dtype])
    return torch.from_numpy(_fill_uniform(out, generator))


def _scratch(n: int, dtype: np.dtype) -> np.ndarray:
    """A per-thread reusable buffer of ``n`` numbers (saves a large allocation per draw)."""
    key = f"scratch_{np.dtype(dtype).name}"
    buf = getattr(_local, key, None)
    if buf is None or buf.size < n:
        buf = np.empty(n, dtype=dtype)
        if n <= SCRATCH_MAX_SIZE:
            setattr(_local, key, buf)
    return buf[:n]


def bernoulli_logits(logits: torch.Tensor, generator: torch.Generator | None = None, *,
                     inplace: bool = False) -> torch.Tensor:
    r"""Draw :math:`x \sim \mathrm{Bernoulli}(\sigma(\ell))` as float 0/1, shape of ``logits``.

    :math:`x = [u < \sigma(\ell)]` with :math:`u \sim U[0, 1)`; no gradient flows. With
    ``inplace=True`` the result overwrites ``logits`` (for callers that own that temporary).
    """
    p = logits.detach()
    p = p.sigmoid_() if inplace else torch.sigmoid(p)
    n = p.numel()
    if p.device.type != "cpu" or p.dtype not in _NUMPY_DTYPES or n < NUMPY_MIN_SIZE:
        u = torch.rand(p.shape, dtype=p.dtype, device=p.device, generator=generator)
    else:
        u = torch.from_numpy(_fill_uniform(_scratch(n, _NUMPY_DTYPES[p.dtype]), generator))
        u = u.view(p.shape)
    return torch.lt(u, p, out=p)
