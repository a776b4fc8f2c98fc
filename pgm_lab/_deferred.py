"""Value checks that a training step leaves for the next read of the loss.

A check of data values (finite, binary) reads a tensor to the host: on a GPU, a wait for every
queued kernel. Inside :func:`deferring` (the steps :func:`pgm_lab.train.fit` runs without
Pyro's validation) a model records such a check instead of running it: a 0-d bool tensor
``failed`` computed on the device, and the function that runs the check and raises its error.
``fit`` reads the flags of a window of steps together with the window's loss (one host
synchronisation) and runs a failed check to raise its error, naming the step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

__all__ = ["DeferredCheck", "deferring", "defer", "pending"]


class DeferredCheck(NamedTuple):
    """``failed``: 0-d bool tensor, true when the data fail; ``check()`` raises the error."""

    failed: torch.Tensor
    check: Callable[[], None]


_pending: list[DeferredCheck] | None = None


@contextmanager
def deferring() -> Iterator[list[DeferredCheck]]:
    """Collect the checks deferred while the block runs (nested blocks collect their own)."""
    global _pending
    outer, _pending = _pending, []
    try:
        yield _pending
    finally:
        _pending = outer


def defer(failed: torch.Tensor, check: Callable[[], None]) -> bool:
    """Record a check for the next read of the loss; ``False`` (nothing recorded) outside
    :func:`deferring`, where the caller decides whether to check now."""
    if _pending is None:
        return False
    _pending.append(DeferredCheck(failed.detach(), check))
    return True


def pending() -> list[DeferredCheck]:
    """The checks recorded so far in the innermost :func:`deferring` block (empty outside)."""
    return [] if _pending is None else list(_pending)
