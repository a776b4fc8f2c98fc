"""GaussianBernoulliRBM: free energy and log Z against enumeration / numerical integration,
Gibbs moments, AIS against the exact log Z, training."""

import math

import pytest
import torch
from torch.testing import assert_close

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.rbm import GaussianBernoulliRBM, gibbs, parallel_tempering

from ._oracle import all_states

pytestmark = pytest.mark.usefixtures("single_thread")


def random_gbrbm(n_visible, n_hidden, seed, scale=0.7, learn_std=True):
    model = GaussianBernoulliRBM(n_visible, n_hidden, learn_std=learn_std, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (model.W, model.b, model.c, model.log_var):
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return model


def brute_energy(m, v, h):
    """The module docstring's energy, written out per unit."""
    w, b, c, var = m.W.detach(), m.b.detach(), m.c.detach(), m.log_var.detach().exp()
    e = torch.zeros(torch.broadcast_shapes(v.shape[:-1], h.shape[:-1]), dtype=torch.float64)
    for i in range(m.n_visible):
        e = e + (v[..., i] - b[i]) ** 2 / (2 * var[i])
        for j in range(m.n_hidden):
            e = e - v[..., i] / var[i] * w[i, j] * h[..., j]
    for j in range(m.n_hidden):
        e = e - c[j] * h[..., j]
    return e


def test_energy_and_free_energy_match_enumeration_over_h():
    m = random_gbrbm(3, 4, 0)
    v = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    hs = all_states(4)
    e = brute_energy(m, v[:, None], hs[None])  # [6, 16]
    assert_close(m.energy(v[:, None], hs[None]).detach(), e)
    assert_close(m.free_energy(v).detach(), -torch.logsumexp(-e, 1))


def test_log_z_matches_numerical_integration_over_v():
    m = random_gbrbm(2, 3, 2, scale=0.5)
    # trapezoid rule on a grid wide enough for every mixture component (|mean| < 3, sd < 2)
    grid = torch.linspace(-14.0, 14.0, 1401, dtype=torch.float64)
    v = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1)  # [G, G, 2]
    dens = torch.exp(-m.free_energy(v).detach())
    numeric = math.log(torch.trapezoid(torch.trapezoid(dens, grid), grid))
    assert_close(float(m.log_partition()), numeric, rtol=0, atol=1e-8)
    # and log p(v) integrates to one
    log_p = m.log_prob(v.reshape(-1, 2)).reshape(v.shape[:2])
    assert_close(float(torch.trapezoid(torch.trapezoid(log_p.exp(), grid), grid)), 1.0,
                 rtol=0, atol=1e-8)


def test_gibbs_moments_match_the_exact_ones():
    m = random_gbrbm(3, 3, 3)
    hs = all_states(3)
    p_h = torch.softmax(-m.hidden_free_energy(hs).detach(), 0)
    mean_v = p_h @ m.visible_mean(hs).detach()
    mean_h = p_h @ hs
    gen = torch.Generator().manual_seed(0)
    c = 20000
    out = gibbs(m, torch.zeros(c, 3, dtype=torch.float64), 40, generator=gen)
    for sample, exact in ((out.v, mean_v), (out.h, mean_h)):
        se = sample.std(0) / math.sqrt(c)  # independent chains: plain standard errors
        assert ((sample.mean(0) - exact).abs() < 4 * se).all(), (sample.mean(0), exact, se)


def test_ais_brackets_the_exact_log_z():
    m = random_gbrbm(5, 6, 4, scale=0.6)
    exact = float(m.log_partition())
    res = m.log_partition("ais", num_runs=200, num_betas=2000, return_result=True, seed=0)
    assert float(res.log_z_lower) < exact < float(res.log_z_upper), (res, exact)
    assert abs(float(res.log_z) - exact) < 4 * float(res.stderr) + 1e-3


@pytest.mark.parametrize("learn_std,gain", [(True, 1.0), (False, 0.3)])
def test_pcd_training_raises_the_exact_likelihood(learn_std, gain):
    # two well-separated clusters, standardized: the hidden units must learn the modes, and
    # learned variances shrink to the clusters' width (measured: -4.26 -> -1.58 / -3.74 nats)
    gen = torch.Generator().manual_seed(5)
    centres = torch.tensor([[2.0, -1.0, 0.5], [-2.0, 1.0, -0.5]], dtype=torch.float64)
    x = centres[torch.randint(2, (1000,), generator=gen)] + 0.3 * torch.randn(
        1000, 3, generator=gen, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    m = GaussianBernoulliRBM(3, 4, data=x, learn_std=learn_std, seed=0, dtype=torch.float64)
    log_var0 = m.log_var.detach().clone()
    before = float(m.log_prob(x).mean())
    m.fit(x, epochs=10, batch_size=20, lr=0.05, momentum=0.5, num_chains=100, seed=0)
    after = float(m.log_prob(x).mean())
    assert after > before + gain, (before, after)
    assert torch.equal(m.log_var.detach(), log_var0) is not learn_std


def test_gaussian_units_refuse_beta_zero_and_accept_real_data():
    m = random_gbrbm(2, 2, 6)
    with pytest.raises(ConfigError, match="beta > 0"):
        parallel_tempering(m, torch.zeros(3, 2, dtype=torch.float64), 1, num_temperatures=3)
    out = parallel_tempering(m, torch.full((3, 2), -5.0, dtype=torch.float64), 2,
                             betas=[0.5, 1.0], seed=0)
    assert out.v.shape == (3, 2)
    with pytest.raises(DataError, match="NaN"):
        m.log_prob(torch.tensor([[float("nan"), 0.0]]))
