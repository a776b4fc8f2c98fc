import numpy as np
import pyro
import pytest
import torch
from pyro.infer.importance import psis_diagnostic, vectorized_importance_weights

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import (
    active_units,
    effective_sample_size,
    iwae_curve,
    latent_activity,
    posterior_means,
    psis_khat,
    standard_error,
)
from pgm_lab.infer.bounds import _log_weight_chunks


def test_psis_khat_matches_pyro_psis_diagnostic_on_the_same_weights(lg, make_shifted_guide):
    x = lg.sample(1, seed=8)
    guide = make_shifted_guide(lg, shift=1.5, inflate=0.7)  # heavy-ish tails
    pyro.set_rng_seed(9)
    expected = psis_diagnostic(lg.model, guide, x, num_particles=2000, max_plate_nesting=1)
    pyro.set_rng_seed(9)
    lw, _, _ = vectorized_importance_weights(lg.model, guide, x, num_samples=2000,
                                             max_plate_nesting=1)
    assert float(psis_khat(lw[:, None])[0]) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.2  # a non-trivial tail


def test_streamed_khat_and_ess_equal_the_batch_versions(lg, make_shifted_guide):
    x = lg.sample(6, seed=10)
    guide = make_shifted_guide(lg, shift=1.0, inflate=0.8)
    pyro.set_rng_seed(11)
    curve = iwae_curve(lg.model, guide, x, ks=(1, 400), chunk_size=37)
    # The same 400 x 6 weights, collected from the same chunked stream.
    pyro.set_rng_seed(11)
    full = torch.cat(list(_log_weight_chunks(lg.model, guide, (x,), {}, num_particles=400,
                                             chunk_size=37, plate_name="data", progress=False,
                                             desc="")))
    torch.testing.assert_close(curve.ess, effective_sample_size(full))
    torch.testing.assert_close(curve.khat, psis_khat(full))
    w = np.exp(full.numpy() - full.numpy().max(0))
    np.testing.assert_allclose(effective_sample_size(full).numpy(),
                               w.sum(0) ** 2 / (w**2).sum(0), rtol=1e-10)


def test_standard_error_and_active_units():
    v = torch.tensor([1.0, 2.0, 4.0, 7.0], dtype=torch.float64)
    assert standard_error(v) == pytest.approx(np.std(v.numpy(), ddof=1) / 2)
    means = torch.stack([torch.linspace(-1, 1, 50), 0.01 * torch.linspace(-1, 1, 50),
                         torch.zeros(50)], dim=1)
    torch.testing.assert_close(latent_activity(means), means.var(0))
    assert active_units(means) == 1  # variances 0.35, 3.5e-5, 0
    assert active_units(means, threshold=1e-5) == 2
    with pytest.raises(DataError):
        standard_error(torch.ones(1))
    with pytest.raises(DataError):
        latent_activity(torch.ones(5))


def test_posterior_means_exact_for_encoders_and_monte_carlo_otherwise(lg):
    guide = AmortizedNormal(3, 2, (4,)).double()
    x = lg.sample(5, seed=12)
    torch.testing.assert_close(posterior_means(guide, x), guide.encode(x)[0])
    mc = posterior_means(lg.exact_guide, x, num_samples=20000)
    torch.testing.assert_close(mc, lg.posterior(x).loc, atol=0.03, rtol=0)  # sd/sqrt(2e4)<0.01
    with pytest.raises(ConfigError, match="no sample site 'w'"):
        posterior_means(lg.exact_guide, x, site="w")


def test_khat_needs_enough_particles():
    with pytest.raises(ConfigError, match="num_particles >= 50"):
        psis_khat(torch.randn(20, 3))


def test_khat_is_inf_when_a_few_particles_carry_all_the_weight():
    # Column 0: one particle dominates (all others 1e-87 of it) -- the worst proposal, which
    # Pyro's psis_diagnostic reports as inf; it used to come out as -inf ("perfect").
    # Column 1: every weight equal (the exact posterior as guide): no tail, -inf.
    lw = torch.zeros(100, 2, dtype=torch.float64)
    lw[1:, 0] = -200.0
    khat = psis_khat(lw)
    assert khat[0] == float("inf") and khat[1] == float("-inf")
    with pytest.warns(UserWarning, match="Not enough tail samples"):
        expected = psis_diagnostic(_fixed_weight_model(lw[:, 0]), lambda: None,
                                   num_particles=100)
    assert expected == float("inf")


def _fixed_weight_model(log_weights):
    """A model whose importance weights (guide: nothing) are ``log_weights`` in turn."""
    it = iter(log_weights.tolist())
    return lambda: pyro.factor("w", torch.tensor(next(it)))



def test_khat_of_weights_tied_up_to_rounding_is_minus_inf():
    # The exact posterior as guide gives log weights equal up to a few ulps. The Pareto fit of
    # their ~1e-16 excesses gave a meaningless k-hat (here -2.3) or divided by zero
    # (iwae_curve raised ZeroDivisionError on the linear-Gaussian oracle's exact guide).
    lw = torch.full((500, 1), -4.84, dtype=torch.float64)
    lw[:20] += 8.881784197001252e-16  # 1 and 2 ulps above the rest
    lw[20:40] += 1.7763568394002505e-15
    assert lw.unique().numel() == 3
    assert torch.equal(psis_khat(lw), torch.full((1,), float("-inf"), dtype=torch.float64))
