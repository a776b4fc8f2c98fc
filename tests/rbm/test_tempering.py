"""Parallel tempering: the swap acceptance formula, stationarity of every replica, swap rates."""

import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError
from pgm_lab.rbm import ParallelTempering, parallel_tempering, swap_log_acceptance

from ._oracle import all_states, chi_square_pvalue, codes, joint_table, random_bm

pytestmark = pytest.mark.usefixtures("single_thread")

N_V, N_H = 4, 3
BETAS = torch.tensor([0.0, 0.4, 0.7, 1.0], dtype=torch.float64)


def _tempered_table(bm, beta):
    vs, hs, _ = joint_table(bm, N_V, N_H)
    neg_e = -beta * bm.energy(vs, hs).detach()
    return vs, hs, (neg_e - torch.logsumexp(neg_e, 0)).exp()


def test_swap_acceptance_is_the_ratio_of_product_densities():
    bm = random_bm(seed=0)
    states = all_states(N_V + N_H)
    vs, hs = states[:, :N_V], states[:, N_V:]
    e = bm.energy(vs, hs).detach()
    i, j = torch.randint(len(e), (50,)), torch.randint(len(e), (50,))
    for bi, bj in [(0.3, 1.0), (0.0, 0.5)]:
        # log [p_bi(x_j) p_bj(x_i)] - log [p_bi(x_i) p_bj(x_j)], normalizers cancel
        ratio = (-bi * e[j] - bj * e[i]) - (-bi * e[i] - bj * e[j])
        assert_close(swap_log_acceptance(bi, bj, e[i], e[j]), ratio)


def test_every_replica_samples_its_tempered_distribution():
    bm = random_bm(seed=1, scale=1.5)
    gen = torch.Generator().manual_seed(0)
    v0 = torch.bernoulli(torch.full((20000, N_V), 0.5, dtype=torch.float64), generator=gen)
    pt = ParallelTempering(bm, BETAS, v0, generator=gen)
    for _ in range(30):
        pt.step()
    for t, beta in enumerate(BETAS.tolist()):
        _, _, p = _tempered_table(bm, beta)
        counts = torch.bincount(codes(pt.v[t], pt.h[t]), minlength=len(p)).double()
        assert chi_square_pvalue(counts, p) > 1e-3, beta


def test_swap_rates_match_the_exact_expected_acceptance():
    # at stationarity, pair (t, t+1) accepts with E[min(1, exp(log_a))] under p_t x p_t+1
    bm = random_bm(seed=2)
    gen = torch.Generator().manual_seed(1)
    c = 20000
    v0 = torch.bernoulli(torch.full((c, N_V), 0.5, dtype=torch.float64), generator=gen)
    pt = ParallelTempering(bm, BETAS, v0, generator=gen)
    for _ in range(30):
        pt.step()
    pt.reset_rates()
    pt.step()
    pt.step()  # one step of each parity: every pair proposed once per chain
    vs, hs, _ = joint_table(bm, N_V, N_H)
    e = bm.energy(vs, hs).detach()
    for t in range(len(BETAS) - 1):
        _, _, p_lo = _tempered_table(bm, float(BETAS[t]))
        _, _, p_hi = _tempered_table(bm, float(BETAS[t + 1]))
        log_a = swap_log_acceptance(BETAS[t], BETAS[t + 1], e[:, None], e[None, :])
        expected = float((p_lo[:, None] * p_hi[None, :] * log_a.exp().clamp(max=1)).sum())
        se = (expected * (1 - expected) / c) ** 0.5
        assert abs(float(pt.swap_rates[t]) - expected) < 4 * se, (t, expected)


def test_parallel_tempering_function_and_validation():
    bm = random_bm(seed=3)
    v0 = torch.zeros(7, N_V, dtype=torch.float64)
    out = parallel_tempering(bm, v0, 5, num_temperatures=3, seed=0, record_samples=True)
    assert out.v.shape == (7, N_V) and out.h.shape == (7, N_H)
    assert out.samples.shape == (5, 7, N_V) and out.swap_rates.shape == (2,)
    assert ((out.swap_rates >= 0) & (out.swap_rates <= 1)).all()
    again = parallel_tempering(bm, v0, 5, num_temperatures=3, seed=0, record_samples=True)
    assert torch.equal(out.samples, again.samples)
    for bad in ([0.5, 0.9], [1.0, 0.5, 1.0], [-0.1, 1.0], [1.0]):
        with pytest.raises(ConfigError, match="betas must increase"):
            parallel_tempering(bm, v0, 1, betas=bad)
    with pytest.raises(ConfigError, match="num_temperatures"):
        parallel_tempering(bm, v0, 1, num_temperatures=1)
