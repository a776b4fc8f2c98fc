"""Multi-layer perceptrons shared by the VAE decoder and the amortized encoders."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from pgm_lab._deferred import defer
from pgm_lab.errors import ConfigError, DataError

__all__ = ["ACTIVATIONS", "mlp", "check_dims", "hidden_tuple", "as_rows", "param_dtype"]

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU}


def check_dims(**dims: object) -> None:
    """Raise :class:`ConfigError` unless every keyword is a positive int."""
    for name, d in dims.items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(f"{name} must be a positive int, got {d!r}")


def hidden_tuple(hidden_dims: object) -> tuple[int, ...]:
    """``hidden_dims`` as a tuple of positive ints, or :class:`ConfigError`."""
    if not isinstance(hidden_dims, Sequence) or isinstance(hidden_dims, str) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_dims
    ):
        raise ConfigError(
            f"hidden_dims must be a sequence of positive ints, got {hidden_dims!r}; try (128,)"
        )
    return tuple(hidden_dims)


def mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str) -> nn.Sequential:
    """``Linear -> act -> ... -> Linear`` with the given hidden widths (none: one Linear)."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    widths = [in_dim, *hidden_dims]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


def param_dtype(net: nn.Module) -> torch.dtype:
    """The dtype of ``net``'s parameters (of its first one): that of its inputs and outputs.

    Read from the module's own parameters (``nn.Module.parameters``), not through a
    :class:`pyro.nn.PyroModule` attribute: that would issue a ``pyro.param`` statement through
    the whole effect-handler stack on every call, only to learn a dtype (the layers issue
    their ``pyro.param`` statements when they run).
    """
    return next(net.parameters()).dtype


def as_rows(x: torch.Tensor, dim: int, name: str = "x",
            dtype: torch.dtype | None = None, *, check_finite: bool = True) -> torch.Tensor:
    """Validate a batch ``[N, dim]`` of finite floats (cheap checks only: runs every step).

    ``dtype`` (the network's): ``x`` is cast to it, so float64 data (NumPy's default) work
    with float32 networks instead of failing in a matmul. ``check_finite=False`` skips the
    one check that reads a value to the host (a GPU synchronisation), or, inside
    ``pgm_lab._deferred.deferring`` (the unvalidated steps of :func:`pgm_lab.train.fit`),
    leaves it for the next read of the loss; the type and shape checks read only metadata.
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{name} must be a torch.Tensor [N, {dim}], got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim or x.shape[0] == 0:
        raise DataError(f"{name} must have shape [N, {dim}] with N >= 1, got "
                        f"{tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        x = x.to(torch.get_default_dtype())
    elif not check_finite:
        defer(~torch.isfinite(x.sum()), lambda: as_rows(x, dim, name))
    elif not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):
        # One sum (NaN/inf propagate) is ~70x cheaper than isfinite().all() on a 128 x 784
        # batch; the exact check only runs when the sum is not finite.
        bad = (~torch.isfinite(x)).nonzero()[0].tolist()
        raise DataError(f"{name} must be finite, got {x[tuple(bad)].item()} at {name}{bad}; "
                        "try removing or imputing the missing values")
    return x
