"""pgm_lab.infer.ais: AIS against exact log-evidence oracles (linear-Gaussian, Gamma-Poisson)."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.errors import ConfigError, InferenceError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import ais, elbo, iwae, iwae_curve, sigmoid_schedule
from pgm_lab.infer.path import AnnealingPath
from pgm_lab.models import VAE

Z = 3.0  # z-score threshold of the statistical tests (seeded, so deterministic)


pytestmark = pytest.mark.usefixtures("single_thread")


def _mean_and_se(d: torch.Tensor) -> tuple[float, float]:
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def diag_guide(lg, shift: float = 0.3, inflate: float = 1.3):
    """conftest's shifted_guide in closed form (no Cholesky per call): N(post mean + shift,
    (inflate * post sd)^2), diagonal."""
    m_inv = torch.linalg.inv(lg.W.T @ lg.W + lg.sigma**2 * torch.eye(lg.z_dim, dtype=lg.W.dtype))
    sd = (lg.sigma**2 * m_inv.diagonal()).sqrt()

    def guide(x):
        loc = (x - lg.mu) @ lg.W @ m_inv.T
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + shift, inflate * sd).to_event(1))

    return guide


def test_sigmoid_schedule_runs_from_zero_to_one_with_small_steps_at_both_ends():
    b = sigmoid_schedule(100)
    assert b.shape == (101,) and b[0] == 0.0 and b[-1] == 1.0
    steps = b.diff()
    assert bool((steps > 0).all())
    assert float(steps[0]) < float(steps[50]) / 10 and float(steps[-1]) < float(steps[50]) / 10


def test_exact_posterior_base_gives_log_evidence_whatever_the_moves(lg):
    # f_0 = p(z | x): every increment is (beta_t - beta_{t-1}) log p(x), so log w = log p(x).
    x = lg.sample(10, seed=1)
    res = ais(lg.model, lg.exact_guide, x, num_steps=5, num_chains=4, return_result=True)
    torch.testing.assert_close(res.log_px, lg.log_prob(x))
    assert float(res.stderr.max()) < 1e-8
    assert res.log_weights.shape == (4, 10) and res.samples["z"].shape == (4, 10, 2)


def test_ais_from_the_prior_converges_to_exact_log_evidence_as_steps_grow(lg):
    x = lg.sample(200, seed=2)
    truth = lg.log_prob(x)
    few, se_few = _mean_and_se(ais(lg.model, None, x, num_steps=5, init="prior") - truth)
    many, se_many = _mean_and_se(ais(lg.model, None, x, num_steps=300, init="prior") - truth)
    assert few / se_few < -Z  # 5 steps: significantly below log p(x) (a lower bound) ...
    assert abs(many) / se_many < Z  # ... 300 steps: within Monte-Carlo error of it
    assert abs(many) < abs(few) / 5


def test_elbo_below_iwae_below_ais_below_log_evidence(lg):
    x = lg.sample(100, seed=3)
    truth = lg.log_prob(x)
    guide = diag_guide(lg)
    curve = iwae_curve(lg.model, guide, x, ks=(1, 5, 50))
    a = ais(lg.model, guide, x, num_steps=100, num_chains=8, init="guide", seed=1)
    for gap in (curve.bounds[5] - curve.bounds[1], a - curve.bounds[5]):
        m, se = _mean_and_se(gap)  # each per-point gap significantly positive
        assert m / se > Z
    m, se = _mean_and_se(a - curve.bounds[50])  # IWAE-50 is within ~0.05 nats of the truth
    assert m / se > -Z
    m, se = _mean_and_se(a - truth)
    assert abs(m) / se < Z


class GammaPoisson:
    """z_n ~ Gamma(a, b) (rate b), x_n | z_n ~ Poisson(z_n): x_n ~ NegativeBinomial, exact."""

    a, b = 3.0, 0.5

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(torch.tensor(self.a, dtype=torch.float64), self.b))
            pyro.sample("x", dist.Poisson(z), obs=x)

    def log_prob(self, x):
        a, b = self.a, self.b
        return (torch.lgamma(x + a) - math.lgamma(a) - torch.lgamma(x + 1)
                + a * math.log(b / (1 + b)) - x * math.log(1 + b))

    def guide(self, x):  # Gamma(a + x, b + 1) is the exact posterior; a coarser LogNormal
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.LogNormal(torch.log(x + 1.0), 0.6))


@pytest.mark.parametrize("init", ["prior", "guide"])
def test_positive_latent_moves_in_unconstrained_space_with_its_jacobian(init):
    gp = GammaPoisson()
    x = dist.Poisson(dist.Gamma(gp.a, gp.b).sample((200,))).sample().double()
    res = ais(gp.model, gp.guide, x, num_steps=200, num_chains=8, init=init, return_result=True)
    m, se = _mean_and_se(res.log_px - gp.log_prob(x))
    assert abs(m) / se < Z
    assert float(res.samples["z"].min()) > 0


def test_result_stderr_is_the_delta_method_of_the_weights_and_steps_adapt(lg):
    x = lg.sample(30, seed=4)
    res = ais(lg.model, None, x, num_steps=100, num_chains=16, init="prior", step_size=0.01,
              return_result=True)
    w = res.log_weights
    torch.testing.assert_close(res.log_px, torch.logsumexp(w, 0) - math.log(16))
    ratio = (w - res.log_px).exp()
    torch.testing.assert_close(res.stderr, ratio.std(0) / 4.0)
    # From 0.01 the step sizes grow by orders of magnitude toward the 0.65 target.
    assert float(res.step_size.min()) > 0.1
    assert 0.5 < float(res.acceptance.mean()) < 0.9
    fixed = ais(lg.model, None, x, num_steps=100, init="prior", step_size=0.01,
                adapt_step_size=False, return_result=True)
    torch.testing.assert_close(fixed.step_size, torch.full((30,), 0.01, dtype=torch.float64))


def test_chunk_size_bounds_the_points_traced_at_once_and_seed_reproduces(lg):
    seen = []

    def model(x):
        seen.append(x.shape[0])
        lg.model(x)

    x = lg.sample(20, seed=5)
    rng = torch.get_rng_state()
    a = ais(model, None, x, num_steps=10, init="prior", chunk_size=7, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert a.shape == (20,) and max(seen) == 7
    torch.testing.assert_close(ais(model, None, x, num_steps=10, init="prior", chunk_size=7,
                                   seed=3), a)
    assert not torch.equal(ais(model, None, x, num_steps=10, init="prior", chunk_size=7,
                               seed=4), a)


def test_ais_on_a_vae_is_at_least_iwae():
    pyro.set_rng_seed(0)
    vae, guide = VAE(16, 4, (32,)), AmortizedNormal(16, 4, (32,))
    x, _ = vae.simulate(100, seed=1)
    with torch.no_grad():
        bound = iwae(vae.model, guide, x, num_particles=50)
        lower = elbo(vae.model, guide, x)
    a = ais(vae.model, guide, x, num_steps=100, num_chains=8)
    for gap in (a - bound, bound - lower):
        m, se = _mean_and_se(gap)
        assert m / se > -Z  # AIS >= IWAE-50 >= ELBO within Monte-Carlo error
    assert float((a - lower).mean()) / _mean_and_se(a - lower)[1] > Z


def test_a_single_site_guide_is_traced_once_per_chunk_not_at_every_leapfrog_step(
        lg, monkeypatch):
    """The guide's distribution of its only site depends on x alone: AIS reuses it (the
    digits VAE's encoder ran at every leapfrog step: 1.6x the time of a plain PyTorch loop)."""
    calls = []
    inner = diag_guide(lg)

    def guide(x):
        calls.append(x.shape[0])
        inner(x)

    x = lg.sample(30, seed=2)
    counts = []
    for steps in (5, 40):
        calls.clear()
        exact = ais(lg.model, guide, x, num_steps=steps, num_chains=4, chunk_size=10)
        counts.append(len(calls))
    # per chunk of 10 points: the initial draw and the traced distribution (plus the probes
    # of the plate nesting and chunk sizing), however many steps
    assert counts[0] == counts[1] <= 3 * 3 + 2
    # the estimate is the one of a guide traced at every evaluation (same random numbers)
    def retraced(self, z):
        return pyro.poutine.trace(pyro.poutine.condition(self.guide, data=z)).get_trace(
            *self.args, **self.kwargs)

    monkeypatch.setattr(AnnealingPath, "_guide_trace", retraced)
    again = ais(lg.model, guide, x, num_steps=40, num_chains=4, chunk_size=10)
    torch.testing.assert_close(exact, again)


@pytest.mark.parametrize("kwargs, match", [
    ({"init": "posterior"}, "init must be one of"),
    ({"num_steps": 0}, "num_steps must be an int >= 1"),
    ({"num_chains": 1.5}, "num_chains must be an int >= 1"),
    ({"step_size": -1.0}, "step_size must be a positive"),
    ({"target_accept": 1.0}, "target_accept must be in"),
    ({"seed": -1}, "seed must be an int"),
])
def test_bad_settings_are_config_errors(lg, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ais(lg.model, lg.exact_guide, lg.sample(3), **kwargs)


def test_guide_none_needs_init_prior(lg):
    with pytest.raises(ConfigError, match="init='guide' needs a guide.*init='prior'"):
        ais(lg.model, None, lg.sample(3), num_steps=2)


def test_models_ais_cannot_anneal_are_inference_errors(lg):
    x = lg.sample(4)

    def global_latent(x):
        s = pyro.sample("s", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(s[..., None], 1.0).to_event(1), obs=x)

    with pytest.raises(InferenceError, match="'s' is outside plate 'data'"):
        ais(global_latent, None, x, init="prior", num_steps=2)

    def other_site(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))

    with pytest.raises(InferenceError, match="exactly the model's latents.*missing.*'z'"):
        ais(lg.model, other_site, x, num_steps=2)


def test_diverging_trajectories_are_rejected_without_reaching_the_model():
    # A step size of 1e3 sends exp(u) to 0 or inf: such a (chain, point) is frozen at its start
    # and rejected (the LogNormal guide used to raise "expected value within the support").
    gp = GammaPoisson()
    x = torch.tensor([0.0, 3.0, 40.0], dtype=torch.float64)
    res = ais(gp.model, gp.guide, x, num_steps=4, step_size=1e3, adapt_step_size=False,
              return_result=True)
    assert bool(torch.isfinite(res.log_px).all())
    assert float(res.acceptance.max()) < 1e-3


@pytest.mark.parametrize("init", ["prior", "guide"])
def test_gradient_parts_give_the_gradient_at_every_beta(init):
    # Gamma latent: a non-identity transform, so the Jacobian is part of the fixed gradient.
    gp = GammaPoisson()
    x = torch.tensor([0.0, 2.0, 7.0, 30.0], dtype=torch.float64)
    path = AnnealingPath(gp.model, gp.guide, (x,), {}, num_chains=3, init=init)
    state = path.initial_state()
    point, parts = path.point_and_grad_parts(state)
    for beta in (0.0, 0.37, 1.0):
        direct_point, direct = path.point_and_grad(state, beta)
        torch.testing.assert_close(parts.at(beta)["z"], direct["z"])
        torch.testing.assert_close(point.log_density(beta), direct_point.log_density(beta))
    assert float(parts.ratio["z"].abs().min()) > 0  # the likelihood's share is not dropped


def test_a_transition_evaluates_the_model_leapfrog_steps_times(lg):
    """The last leapfrog step's gradient starts the next transition: ``L`` model evaluations
    per transition, not ``L + 1`` (one more at the start of each)."""
    calls = []

    def model(x):
        calls.append(1)
        lg.model(x)

    x = lg.sample(6, seed=6)
    counts = []
    for steps in (5, 9):
        calls.clear()
        ais(model, None, x, num_steps=steps, leapfrog_steps=3, init="prior", num_chains=2)
        counts.append(len(calls))
    assert counts[1] - counts[0] == (9 - 5) * 3


def test_trajectories_with_a_nan_gradient_are_rejected():
    # The factor is 0 everywhere but its gradient is NaN above 2 (where() of a NaN branch),
    # while the likelihood pulls z toward 4: no chain may end up above 2.
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=torch.float64), 0.5))
            pyro.factor("nan_grad", torch.where(z > 2, 0.0 * z, 0.0 * (2 - z).sqrt()))
            pyro.sample("x", dist.Normal(z[..., None], 0.2).to_event(1), obs=x)

    x = torch.full((20, 4), 4.0, dtype=torch.float64)
    res = ais(model, None, x, num_steps=50, num_chains=4, init="prior", return_result=True)
    assert bool(torch.isfinite(res.log_px).all())
    assert float(res.samples["z"].max()) <= 2.0
    assert float(res.samples["z"].max()) > 1.0  # the chains did move toward the likelihood
