"""Run a block on one torch thread (shared by the ``single_thread`` fixture and rbm's fixtures)."""

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """Tiny matmuls run faster on one thread (OpenMP spin-waits dominate on a busy machine;
    AIS's thousands of small kernels ran 8x slower with two threads on a loaded 2-core machine)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
