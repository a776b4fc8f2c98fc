"""How many torch CPU threads a training run uses, chosen from the work of one step.

The models of this library are small: an RBM 64x20 or a VAE 64-128-8 runs a few hundred
kernels per step, each on matrices of a few thousand entries. Splitting such a kernel over
threads gains nothing, and when other processes keep the cores busy every hand-off waits for
a descheduled thread: torch's default (one thread per core) then trains them 3-30x slower
than one thread. More threads pay off only once each of them gets a large share of work.
:func:`choose_num_threads` therefore grants one thread per
``WORK_PER_THREAD`` multiply-adds of a step's work, between 1 and torch's current setting;
pass an explicit count to use more for a large model on an idle machine.
The count depends only on the model, the loss and the batch size, never on the machine's
load, so a run and its resumption use the same number of threads (and round alike).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from .errors import ConfigError

__all__ = ["WORK_PER_THREAD", "check_num_threads", "step_work", "choose_num_threads",
           "training_threads"]

#: Multiply-adds of one step's work per thread (``batch_size x parameters x particles``).
#: Measured on a shared 2-core x86 machine (minimum and median of repeated runs): for an RBM
#: 64x20 or a VAE 64-128-8 one thread was as fast as two on idle cores and up to 30x faster
#: on cores busy with other processes; for larger steps (a VAE 784-400-50 at batch 128, 9e7;
#: 784-2048-50 at batch 1024, 3.5e9) two threads saved at most a third on idle cores but
#: lost 2-30x on busy ones. So a second thread is granted only from 2 x 2^32 = 8.6e9.
WORK_PER_THREAD = 2**32


def check_num_threads(num_threads: object) -> None:
    """Refuse anything but ``None`` or a positive int, with :class:`ConfigError`."""
    if num_threads is not None and (isinstance(num_threads, bool)
                                    or not isinstance(num_threads, int) or num_threads < 1):
        raise ConfigError(f"num_threads must be a positive int or None, got {num_threads!r}; "
                          "try None to let fit choose from the model size")


def step_work(batch_size: int, parameters: Iterable[torch.Tensor], loss: object = None) -> int:
    """Multiply-adds of one step, roughly: ``batch_size x parameters x num_particles``.

    Every parameter takes part in about one multiply-add per data point and particle in the
    forward pass (the weights of a dense layer do); ``num_particles`` is read from ``loss``
    when it has one (Pyro's ELBOs do), else 1.
    """
    particles = getattr(loss, "num_particles", 1)
    particles = particles if isinstance(particles, int) and particles > 0 else 1
    return batch_size * sum(p.numel() for p in parameters) * particles


def choose_num_threads(work: int) -> int:
    """``work // WORK_PER_THREAD`` threads, clipped to ``[1, torch.get_num_threads()]``."""
    return max(1, min(torch.get_num_threads(), work // WORK_PER_THREAD))


@contextmanager
def training_threads(num_threads: int | None, work: int) -> Iterator[int]:
    """Run the block with ``num_threads`` torch threads (``None``: :func:`choose_num_threads`
    of ``work``) and restore torch's setting afterwards, also on error. Yields the count."""
    check_num_threads(num_threads)
    saved = torch.get_num_threads()
    count = choose_num_threads(work) if num_threads is None else num_threads
    if count != saved:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != saved:
            torch.set_num_threads(saved)
