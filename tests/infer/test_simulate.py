"""pgm_lab.infer.simulate: draws from the joint of a Pyro model with its observation unobserved."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.errors import InferenceError
from pgm_lab.infer import simulate

Z = 3.0


def test_simulated_pairs_follow_the_linear_gaussian_joint(lg):
    # E[log p(x)] = -H[p(x)] and E[log p(x | z)] = -H[N(0, sigma^2 I)], within standard errors.
    placeholder = torch.zeros(4000, 3, dtype=torch.float64)
    x, latents = simulate(lg.model, placeholder, seed=1)
    assert set(latents) == {"z"} and latents["z"].shape == (4000, 2)
    for lp, entropy in (
            (lg.log_prob(x), lg.marginal().entropy()),
            (dist.Normal(latents["z"] @ lg.W.T + lg.mu, lg.sigma).log_prob(x).sum(-1),
             3 * 0.5 * math.log(2 * math.pi * math.e * lg.sigma**2))):
        se = float(lp.std() / math.sqrt(lp.numel()))
        assert abs(float(lp.mean()) + float(entropy)) / se < Z
    assert not torch.equal(x, placeholder)


def test_seed_reproduces_and_num_samples_adds_a_leading_dim(lg):
    placeholder = torch.zeros(5, 3, dtype=torch.float64)
    rng = torch.get_rng_state()
    a, _ = simulate(lg.model, placeholder, seed=2)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(simulate(lg.model, placeholder, seed=2)[0], a)
    x, latents = simulate(lg.model, placeholder, num_samples=7, seed=2)
    assert x.shape == (7, 5, 3) and latents["z"].shape == (7, 5, 2)


def test_unknown_observation_site_is_an_inference_error(lg):
    with pytest.raises(InferenceError, match="obs_site 'y' is not a sample site.*'x', 'z'"):
        simulate(lg.model, torch.zeros(2, 3), obs_site="y")


def test_discrete_latents_are_returned_too():
    def mixture(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(10.0 * c, 1.0), obs=x)

    x, latents = simulate(mixture, torch.zeros(2000), seed=0)
    c = latents["c"]
    assert abs(float(c.mean()) - 0.3) / math.sqrt(0.3 * 0.7 / 2000) < Z
    assert bool(((x > 5) == (c > 0.5)).float().mean() > 0.99)
