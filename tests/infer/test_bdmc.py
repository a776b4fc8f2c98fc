"""pgm_lab.infer.bdmc: the sandwich lower <= log p(x) <= upper on simulated data."""

import math

import pyro
import pytest
import torch

from pgm_lab.errors import DataError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import bdmc, simulate
from pgm_lab.models import VAE

Z = 3.0


pytestmark = pytest.mark.usefixtures("single_thread")


def _mean_and_se(d: torch.Tensor) -> tuple[float, float]:
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def test_interval_contains_the_exact_log_evidence_and_shrinks_with_more_steps(lg):
    x, latents = simulate(lg.model, torch.zeros(200, 3, dtype=torch.float64), seed=1)
    truth = lg.log_prob(x)
    coarse = bdmc(lg.model, None, x, latents=latents, init="prior", num_steps=10, seed=2)
    fine = bdmc(lg.model, None, x, latents=latents, init="prior", num_steps=200, seed=2)
    for res in (coarse, fine):
        m, se = _mean_and_se(res.lower - truth)
        assert m / se < Z  # E[lower] <= log p(x)
        m, se = _mean_and_se(res.upper - truth)
        assert m / se > -Z  # E[upper] >= log p(x)
    m, se = _mean_and_se(coarse.gap)
    assert m / se > Z  # 10 steps: a significant gap ...
    m, se = _mean_and_se(coarse.gap - fine.gap)
    assert m / se > Z  # ... that 200 steps shrink
    assert float(fine.gap.mean()) < float(coarse.gap.mean()) / 5
    assert fine.forward.log_weights.shape == (16, 200)
    torch.testing.assert_close(fine.upper, -fine.reverse.log_px)


def test_vae_sandwich_is_ordered_within_error():
    pyro.set_rng_seed(0)
    vae, guide = VAE(16, 4, (32,)), AmortizedNormal(16, 4, (32,))
    x, latents = vae.simulate(60, seed=1)
    res = bdmc(vae.model, guide, x, latents=latents, num_steps=50, num_chains=8)
    m, se = _mean_and_se(res.gap)
    assert m / se > -Z
    assert res.lower.shape == res.upper.shape == (60,)


def test_latents_must_match_the_model_sites_and_points(lg):
    x, latents = simulate(lg.model, torch.zeros(6, 3, dtype=torch.float64), seed=0)
    with pytest.raises(DataError, match=r"every latent site of the model \['z'\].*\['w'\]"):
        bdmc(lg.model, None, x, latents={"w": latents["z"]}, init="prior", num_steps=2)
    with pytest.raises(DataError, match="one row per data point"):
        bdmc(lg.model, None, x, latents={"z": latents["z"][:5]}, init="prior", num_steps=2)
    with pytest.raises(DataError, match=r"latents\['z'\] must have shape \(6, 2\)"):
        bdmc(lg.model, None, x, latents={"z": latents["z"][:, :1]}, init="prior", num_steps=2)
