"""The training thread count: chosen from a step's work, explicit counts honoured, restored."""

import pyro
import pytest
import torch

from pgm_lab._threads import (
    WORK_PER_THREAD,
    choose_num_threads,
    step_work,
    training_threads,
)
from pgm_lab.errors import ConfigError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import IWAE
from pgm_lab.models import VAE
from pgm_lab.rbm import RBM
from pgm_lab.train import fit


@pytest.fixture
def two_threads():
    """torch set to 2 threads (the default on a 2-core machine), restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_step_work_counts_batch_parameters_and_particles():
    vae, guide = VAE(64, 8, (128,)), AmortizedNormal(64, 8, (128,))
    params = list(vae.parameters()) + list(guide.parameters())
    n = 64 * 128 + 128 + 128 * 16 + 16 + 8 * 128 + 128 + 128 * 64 + 64
    assert sum(p.numel() for p in params) == n
    assert step_work(100, params) == 100 * n
    assert step_work(100, params, IWAE(50)) == 100 * n * 50
    assert step_work(10, RBM(64, 20).parameters()) == 10 * (64 * 20 + 64 + 20)


def test_small_work_gets_one_thread_and_large_work_at_most_the_current_setting(two_threads):
    assert choose_num_threads(0) == 1
    assert choose_num_threads(100 * 20_000 * 50) == 1  # the VAE 64-128-8, IWAE-50, batch 100
    assert choose_num_threads(2 * WORK_PER_THREAD - 1) == 1
    assert choose_num_threads(2 * WORK_PER_THREAD) == 2
    assert choose_num_threads(100 * WORK_PER_THREAD) == 2  # never above torch's setting


def test_training_threads_honours_an_explicit_count_and_restores_on_error(two_threads):
    with training_threads(None, 0) as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), training_threads(1, 10**12):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2
    with training_threads(2, 0) as count:
        assert count == 2 and torch.get_num_threads() == 2
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ConfigError, match="num_threads must be a positive int or None"):
            with training_threads(bad, 0):
                pass


def test_fit_picks_one_thread_for_a_small_vae_and_restores_the_setting(two_threads):
    # With num_threads=None fit kept torch's default (2 threads here): the VAE 64-128-8 at
    # batch 100 trained ~10x slower than with one thread on a busy 2-core machine.
    vae, guide = VAE(64, 8, (128,)), AmortizedNormal(64, 8, (128,))
    x = torch.bernoulli(torch.full((200, 64), 0.3), generator=torch.Generator().manual_seed(0))
    seen = []
    fit(vae.model, guide, x, epochs=2, batch_size=100, progress=False, device="cpu",
        callbacks=[lambda epoch, record: seen.append(torch.get_num_threads())])
    assert seen == [1, 1] and torch.get_num_threads() == 2
    pyro.clear_param_store()
    seen.clear()
    fit(vae.model, guide, x, epochs=1, batch_size=100, progress=False, device="cpu",
        num_threads=2, callbacks=[lambda epoch, record: seen.append(torch.get_num_threads())])
    assert seen == [2]


def test_rbm_fit_picks_one_thread_by_itself(two_threads):
    x = torch.bernoulli(torch.full((20, 64), 0.5), generator=torch.Generator().manual_seed(0))
    seen = []
    RBM(64, 20).fit(x, epochs=2, batch_size=10, progress=False,
                    callbacks=[lambda epoch, record: seen.append(torch.get_num_threads())])
    assert seen == [1, 1] and torch.get_num_threads() == 2
