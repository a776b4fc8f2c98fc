import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

from pgm_lab.errors import ConfigError, InferenceError
from pgm_lab.infer import elbo, iwae, iwae_curve
from pgm_lab.infer.bounds import _GroupedBound

Z = 3.0  # z-score threshold of the statistical tests (seeded, so deterministic)


def _se(v: torch.Tensor) -> float:
    return float(v.std() / math.sqrt(v.numel()))


@pytest.mark.parametrize("k", [1, 5, 50])
def test_exact_posterior_guide_gives_log_evidence_with_zero_variance(lg, k):
    x = lg.sample(20, seed=1)
    truth = lg.log_prob(x)
    torch.testing.assert_close(iwae(lg.model, lg.exact_guide, x, num_particles=k), truth)
    torch.testing.assert_close(elbo(lg.model, lg.exact_guide, x, num_particles=k), truth)
    curve = iwae_curve(lg.model, lg.exact_guide, x, ks=(1, k, 100))
    for b in curve.bounds.values():
        torch.testing.assert_close(b, truth)
    for se in curve.stderr.values():  # spread of the independent groups: exactly zero
        assert float(se.max()) < 1e-10
    torch.testing.assert_close(curve.ess, torch.full_like(truth, 100.0))


def test_bounds_are_ordered_and_converge_to_log_evidence(lg, make_shifted_guide):
    # E[ELBO] <= E[IWAE_5] <= E[IWAE_50] <= E[IWAE_5000] <= log p(x), each gap significant
    # except the last, which must be within Monte-Carlo error of zero.
    x = lg.sample(40, seed=2)
    truth = lg.log_prob(x)
    curve = iwae_curve(lg.model, make_shifted_guide(lg), x, ks=(1, 5, 50, 5000), chunk_size=700)
    ks = sorted(curve.bounds)
    for a, b in zip(ks[:-1], ks[1:]):
        gap = curve.bounds[b] - curve.bounds[a]  # per point, paired on the same particles
        assert float(gap.mean()) / _se(gap) > Z, (a, b)
    # The upper end: IWAE_5000 (one group per point) against exact log p(x).
    d = curve.bounds[5000] - truth
    assert abs(float(d.mean())) / _se(d) < Z
    assert float(curve.bounds[1].mean()) < float(truth.mean())


def test_iwae_5000_is_within_three_standard_errors_of_log_evidence(lg, make_shifted_guide):
    x = lg.sample(200, seed=3)
    d = iwae(lg.model, make_shifted_guide(lg), x, num_particles=5000) - lg.log_prob(x)
    se = _se(d)
    assert se < 0.01  # the test is sharp: one standard error is below 0.01 nats
    assert abs(float(d.mean())) / se < Z


def test_elbo_matches_closed_form_log_evidence_minus_kl(lg, make_shifted_guide):
    x = lg.sample(30, seed=4)
    guide = make_shifted_guide(lg)
    post = lg.posterior(x)
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
    q = dist.MultivariateNormal(post.loc + 0.3, scale_tril=torch.diag_embed(1.3 * sd))
    exact = lg.log_prob(x) - kl_divergence(q, post)
    curve = iwae_curve(lg.model, guide, x, ks=(1, 2000))
    z = (curve.bounds[1] - exact) / curve.stderr[1]  # per point, 2000 independent draws each
    assert float(z.abs().max()) < 4.0  # 30 points: Bonferroni-sized threshold
    assert abs(float(z.mean()) * math.sqrt(z.numel())) < Z


def test_grouped_bound_streams_exactly_like_a_direct_reshape():
    lw = torch.randn(60, 4, dtype=torch.float64) * 3
    for k in (1, 4, 7, 60):
        acc = _GroupedBound(k)
        for chunk in torch.split(lw, 9):  # chunk boundaries straddle the groups
            acc.update(chunk)
        g = 60 // k
        direct = torch.logsumexp(lw[: g * k].reshape(g, k, 4), 1) - math.log(k)
        torch.testing.assert_close(acc.mean(), direct.mean(0))
        assert acc.groups == g
        if g > 1:
            torch.testing.assert_close(acc.stderr(), direct.std(0) / math.sqrt(g))


def test_chunk_size_does_not_change_exact_values(lg):
    x = lg.sample(5, seed=5)
    a = iwae(lg.model, lg.exact_guide, x, num_particles=23, chunk_size=4)
    torch.testing.assert_close(a, lg.log_prob(x))


def test_batch_size_slices_the_data(lg, make_shifted_guide):
    x = lg.sample(10, seed=6)
    curve = iwae_curve(lg.model, lg.exact_guide, x, ks=(1, 50), batch_size=3)
    torch.testing.assert_close(curve.bounds[50], lg.log_prob(x))
    assert curve.khat.shape == (10,) and curve.stderr[1].shape == (10,)
    out = elbo(lg.model, make_shifted_guide(lg), x, num_particles=2, batch_size=4)
    assert out.shape == (10,) and bool(torch.isfinite(out).all())


def test_global_sites_and_bad_arguments_raise(lg):
    def model(x):
        w = pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x[:, 0])

    def guide(x):
        pyro.sample("w", dist.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0))

    x = lg.sample(4)
    with pytest.raises(InferenceError, match="'w'"):
        iwae(model, guide, x, num_particles=3)
    with pytest.raises(ConfigError, match="num_particles"):
        iwae(lg.model, lg.exact_guide, x, num_particles=0)
    with pytest.raises(ConfigError, match="chunk_size"):
        elbo(lg.model, lg.exact_guide, x, chunk_size=-1)
    with pytest.raises(ConfigError, match="ks"):
        iwae_curve(lg.model, lg.exact_guide, x, ks=5)
    with pytest.raises(ConfigError, match="batch_size"):
        iwae(lg.model, lg.exact_guide, x, num_particles=2, batch_size=0)


def test_non_reparameterized_guide_raises(lg):
    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", _NoRsample(torch.zeros(x.shape[0], 2, dtype=torch.float64)))

    with pytest.raises(InferenceError, match="not reparameterizable"):
        iwae(lg.model, guide, lg.sample(3), num_particles=2)


class _NoRsample(dist.TorchDistribution):
    """Independent N(loc, 1) with ``has_rsample = False`` (like a score-function-only guide)."""

    arg_constraints = {}
    has_rsample = False

    def __init__(self, loc):
        self.loc = loc
        super().__init__(loc.shape[:-1], loc.shape[-1:])

    def expand(self, batch_shape, _instance=None):
        return _NoRsample(self.loc.expand(*batch_shape, self.loc.shape[-1]))

    def sample(self, sample_shape=()):
        return torch.normal(self.loc.expand(torch.Size(sample_shape) + self.loc.shape), 1.0)

    def log_prob(self, value):
        return dist.Normal(self.loc, 1.0).log_prob(value).sum(-1)


def test_nan_log_weights_raise(lg):
    def nan_guide(x):
        with pyro.plate("data", x.shape[0]):
            loc = torch.full((x.shape[0], 2), float("nan"), dtype=torch.float64)
            pyro.sample("z", dist.Normal(loc, 1.0, validate_args=False).to_event(1))

    # With Pyro's validation on, the model's Normal already rejects NaN; without it, we do.
    with pyro.validation_enabled(False), pytest.raises(InferenceError, match="NaN"):
        iwae(lg.model, nan_guide, lg.sample(3), num_particles=4)


def test_model_latents_missing_from_the_guide_are_proposed_from_their_prior(lg):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("u", dist.Normal(torch.zeros(x.shape[0], dtype=torch.float64), 1.0))
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=torch.float64),
                                             1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + lg.mu, lg.sigma).to_event(1), obs=x)

    x = lg.sample(4, seed=13)
    torch.testing.assert_close(iwae(model, lg.exact_guide, x, num_particles=7), lg.log_prob(x))
