import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.infer.importance import vectorized_importance_weights

from pgm_lab.errors import ConfigError, InferenceError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import IWAE, iwae
from pgm_lab.models import VAE
from pgm_lab.train import scale_plate


def _vae_pair():
    torch.manual_seed(1)
    return VAE(12, 3, (16,)), AmortizedNormal(12, 3, (16,))


def _loss_and_grads(loss, model, guide, x, seed):
    for _, p in pyro.get_param_store().named_parameters():  # the unconstrained leaves
        p.grad = None
    pyro.set_rng_seed(seed)
    with pyro.poutine.trace(param_only=True) as params:
        value = loss.loss_and_grads(model, guide, x)
    grads = {name: site["value"].unconstrained().grad.clone()
             for name, site in params.trace.nodes.items()}
    return value, grads


@pytest.mark.parametrize("estimator", ["standard", "stl", "dreg"])
def test_loss_and_grads_on_device_is_the_loss_as_a_detached_tensor(estimator):
    vae, guide = _vae_pair()
    x = torch.bernoulli(torch.full((9, 12), 0.3))
    ref, ref_grads = _loss_and_grads(IWAE(4, estimator), vae.model, guide, x, seed=3)
    for _, p in pyro.get_param_store().named_parameters():
        p.grad = None
    pyro.set_rng_seed(3)
    value = IWAE(4, estimator).loss_and_grads_on_device(vae.model, guide, x)
    assert isinstance(ref, float) and value.shape == () and not value.requires_grad
    assert value.item() == ref
    grads = {name: p.grad for name, p in pyro.get_param_store().named_parameters()}
    torch.testing.assert_close(grads, ref_grads)


@pytest.mark.parametrize("estimator", ["standard", "stl", "dreg"])
def test_one_particle_equals_trace_elbo(estimator):
    vae, guide = _vae_pair()
    x = torch.bernoulli(torch.full((9, 12), 0.3))
    ref, ref_grads = _loss_and_grads(Trace_ELBO(), vae.model, guide, x, seed=3)
    ours, grads = _loss_and_grads(IWAE(1, estimator), vae.model, guide, x, seed=3)
    assert ours == pytest.approx(ref, rel=1e-6)
    if estimator == "standard":  # STL / DReG change guide gradients (by design)
        torch.testing.assert_close(grads, ref_grads)
    else:
        decoder = {k: v for k, v in grads.items() if k.startswith("decoder")}
        torch.testing.assert_close(decoder, {k: ref_grads[k] for k in decoder})


def test_loss_is_minus_the_sum_of_per_point_iwae_bounds():
    vae, guide = _vae_pair()
    x = torch.bernoulli(torch.full((7, 12), 0.5))
    pyro.set_rng_seed(4)
    loss = IWAE(20).loss(vae.model, guide, x)
    pyro.set_rng_seed(4)
    per_point = iwae(vae.model, guide, x, num_particles=20, chunk_size=20)
    assert loss == pytest.approx(-float(per_point.sum()), rel=1e-6)


def test_plate_scale_is_applied_outside_the_logsumexp():
    vae, guide = _vae_pair()
    x = torch.bernoulli(torch.full((6, 12), 0.5))
    pyro.set_rng_seed(5)
    plain = IWAE(10).loss(vae.model, guide, x)
    pyro.set_rng_seed(5)
    scaled = IWAE(10).loss(scale_plate(vae.model, "data", 7.5), scale_plate(guide, "data", 7.5),
                           x)
    assert scaled == pytest.approx(7.5 * plain, rel=1e-6)


def _lg_model_with_param(lg):
    """The linear-Gaussian model with its mean as a learnable (model) parameter "mu"."""

    def model(x):
        mu = pyro.param("mu", lg.mu.clone())
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(torch.zeros(x.shape[0], 2, dtype=torch.float64), 1.0)
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", dist.Normal(z @ lg.W.T + mu, lg.sigma).to_event(1), obs=x)

    return model


def _linear_guide(lg, shift=0.3, inflate=1.3):
    """q(z | x) = N(A (x - mu) + shift, (inflate * posterior sd)^2): cheap, imperfect."""
    m = lg.W.T @ lg.W + lg.sigma**2 * torch.eye(2, dtype=torch.float64)
    gain = torch.linalg.inv(m) @ lg.W.T
    sd = (lg.sigma**2 * torch.linalg.inv(m)).diagonal().sqrt()

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal((x - lg.mu) @ gain.T + shift, inflate * sd).to_event(1))

    return guide


def test_minibatch_objective_is_unbiased_for_the_full_data_objective(lg):
    # E_batch E_z[(N/B) sum_{n in batch} IWAE_5,n] = E_z[sum_n IWAE_5,n]: compare the means of
    # R random-minibatch estimates and R full-data estimates within Monte-Carlo error.
    x = lg.sample(12, seed=7)
    guide = _linear_guide(lg)
    reps = 300
    loss = IWAE(5)
    gen = torch.Generator().manual_seed(0)
    full, mini = [], []
    for _ in range(reps):
        full.append(loss.loss(lg.model, guide, x))
        idx = torch.randperm(12, generator=gen)[:3]
        mini.append(loss.loss(scale_plate(lg.model, "data", 4.0), scale_plate(guide, "data", 4.0),
                              x[idx]))
    full, mini = torch.tensor(full), torch.tensor(mini)
    se = math.sqrt((full.var() + mini.var()) / reps)
    assert abs(float(full.mean() - mini.mean())) / se < 3.0
    # Power check: the same comparison detects the bias of the N/B scale applied inside the
    # logsumexp, as Pyro's RenyiELBO(alpha=0) does (pyro issues #2220, #3104).
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True,
                                 max_plate_nesting=1)
    full_r, mini_r = [], []
    for _ in range(reps):
        full_r.append(renyi.loss(lg.model, guide, x))
        idx = torch.randperm(12, generator=gen)[:3]
        mini_r.append(renyi.loss(scale_plate(lg.model, "data", 4.0),
                                 scale_plate(guide, "data", 4.0), x[idx]))
    full_r, mini_r = torch.tensor(full_r), torch.tensor(mini_r)
    se_r = math.sqrt((full_r.var() + mini_r.var()) / reps)
    assert abs(float(full_r.mean() - mini_r.mean())) / se_r > 5.0


def _per_replicate_guide(loc0, log_scale0, r):
    """Non-amortized guide with one (loc, scale) per replicate row: row r's gradient is the
    r-th independent single-point gradient estimate."""

    def guide(x):
        loc = pyro.param("loc", loc0.expand(r, 2).clone())
        log_scale = pyro.param("log_scale", log_scale0.expand(r, 2).clone())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return guide


def _guide_grads(lg, estimator, k, r, seed):
    x0 = lg.sample(1, seed=11)
    post = lg.posterior(x0)
    sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()[0]
    guide = _per_replicate_guide(post.loc[0] + 0.4, (1.4 * sd).log(), r)
    pyro.clear_param_store()
    value, grads = _loss_and_grads(IWAE(k, estimator), _lg_model_with_param(lg), guide,
                                   x0.expand(r, 3), seed)
    return torch.cat([grads["loc"], grads["log_scale"]], dim=1), grads["mu"]


def _z_scores(a, b):
    se = (a.var(0) / a.shape[0] + b.var(0) / b.shape[0]).sqrt()
    return (a.mean(0) - b.mean(0)) / se


@pytest.mark.parametrize(("estimator", "k"), [("dreg", 5), ("dreg", 50), ("stl", 1)])
def test_reparameterized_estimators_are_unbiased_where_theory_says(lg, estimator, k):
    ref, _ = _guide_grads(lg, "standard", k, 4000, seed=1)
    ours, _ = _guide_grads(lg, estimator, k, 4000, seed=2)
    z = _z_scores(ours, ref)
    assert float(z.abs().max()) < 3.5, z  # 4 coordinates


def test_stl_is_biased_for_many_particles(lg):
    ref, _ = _guide_grads(lg, "standard", 50, 4000, seed=1)
    stl, _ = _guide_grads(lg, "stl", 50, 4000, seed=2)
    assert float(_z_scores(stl, ref).abs().max()) > 5.0


def test_dreg_model_gradient_equals_standard_with_same_draws(lg):
    _, mu_std = _guide_grads(lg, "standard", 7, 50, seed=3)
    _, mu_dreg = _guide_grads(lg, "dreg", 7, 50, seed=3)
    torch.testing.assert_close(mu_dreg, mu_std)


def test_dreg_guide_gradient_has_higher_signal_to_noise_at_50_particles(lg):
    # Rainforth et al. (2018), "Tighter Variational Bounds are Not Necessarily Better": the
    # standard IWAE guide gradient's SNR decays like 1/sqrt(K); DReG's does not.
    std, _ = _guide_grads(lg, "standard", 50, 2000, seed=4)
    dreg, _ = _guide_grads(lg, "dreg", 50, 2000, seed=5)
    snr_std = std.mean(0).abs() / std.std(0)
    snr_dreg = dreg.mean(0).abs() / dreg.std(0)
    assert bool((snr_dreg > 2 * snr_std).all()), (snr_std, snr_dreg)


def test_invalid_arguments_and_unsupported_guides(lg):
    with pytest.raises(ConfigError, match="num_particles"):
        IWAE(0)
    with pytest.raises(ConfigError, match="estimator"):
        IWAE(5, estimator="vimco")

    def discrete_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(x.shape[0], 2, dtype=torch.float64))
                        .to_event(1))

    with pytest.raises(InferenceError, match="not reparameterizable"):
        IWAE(3).loss(lg.model, discrete_guide, lg.sample(2))

    def tensor_scaled(x):
        with pyro.poutine.scale(scale=torch.arange(1.0, x.shape[0] + 1)):
            lg.model(x)

    with pytest.raises(InferenceError, match="tensor scale"):
        IWAE(3).loss(tensor_scaled, lg.exact_guide, lg.sample(2))


def test_dreg_amortized_encoder_gradient_has_higher_signal_to_noise(lg):
    # The same comparison for the inference network itself: AmortizedNormal's weights, one
    # backward pass per independent replicate (single data point, K = 50). As in Rainforth et
    # al., the guide is near the posterior (where the standard gradient's signal vanishes):
    # a linear encoder set to the posterior mean map + 0.4 and 1.4 x the posterior sd.
    x = lg.sample(1, seed=12)
    guide = AmortizedNormal(3, 2, ()).double()
    post = lg.posterior(x)
    gain = torch.linalg.solve(lg.W.T @ lg.W + lg.sigma**2 * torch.eye(2, dtype=torch.float64),
                              lg.W.T)
    sd = post.covariance_matrix[0].diagonal().sqrt()
    with torch.no_grad():
        layer = guide.encoder[0]
        layer.weight.zero_()
        layer.weight[:2] = gain
        layer.bias[:2] = 0.4 - gain @ lg.mu
        layer.bias[2:] = torch.log(torch.expm1(1.4 * sd))  # softplus^-1
    torch.testing.assert_close(guide.encode(x)[0], post.loc + 0.4)
    model = _lg_model_with_param(lg)

    def grads(estimator, seed, reps=100):
        pyro.set_rng_seed(seed)
        out = []
        for _ in range(reps):
            guide.zero_grad()
            IWAE(50, estimator).differentiable_loss(model, guide, x).backward()
            out.append(torch.cat([p.grad.reshape(-1) for p in guide.parameters()]))
        return torch.stack(out)

    pyro.clear_param_store()
    std, dreg = grads("standard", 6), grads("dreg", 7)
    snr_std = std.mean(0).abs() / std.std(0)
    snr_dreg = dreg.mean(0).abs() / dreg.std(0)
    assert float(snr_dreg.median()) > 2 * float(snr_std.median())


def _global_and_local_model(x):
    w = pyro.param("w", torch.tensor(0.7))
    g = pyro.sample("g", dist.Normal(0.0, 1.0))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(g, 1.0))
        pyro.sample("x", dist.Normal(w * z, 0.5), obs=x)


def _global_and_local_guide(x):
    g_loc = pyro.param("g_loc", torch.tensor(0.2))
    z_scale = pyro.param("z_scale", torch.tensor(0.8), constraint=dist.constraints.positive)
    pyro.sample("g", dist.Normal(g_loc, 0.3))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(0.5 * x, z_scale))


@pytest.mark.parametrize("scale", [1.0, 4.0])
def test_one_particle_equals_trace_elbo_with_global_site_and_plate_scale(scale):
    """The K = 1 shortcuts (no logsumexp, no unit scale, no empty global term) keep the
    value and every gradient of Trace_ELBO, with a global latent and a scaled data plate."""
    x = torch.tensor([0.3, -1.2, 2.0, 0.4])
    model = scale_plate(_global_and_local_model, "data", scale)
    guide = scale_plate(_global_and_local_guide, "data", scale)
    pyro.set_rng_seed(0)
    _loss_and_grads(Trace_ELBO(), model, guide, x, seed=0)  # creates the params
    ref, ref_grads = _loss_and_grads(Trace_ELBO(), model, guide, x, seed=7)
    ours, grads = _loss_and_grads(IWAE(1), model, guide, x, seed=7)
    assert ours == pytest.approx(ref, rel=1e-6)
    assert grads.keys() == {"w", "g_loc", "z_scale"}
    torch.testing.assert_close(grads, ref_grads)


def test_one_particle_dreg_equals_stl():
    """With K = 1 the self-normalized weights are 1: DReG reduces to STL exactly."""
    vae, guide = _vae_pair()
    x = torch.bernoulli(torch.full((9, 12), 0.3))
    stl, stl_grads = _loss_and_grads(IWAE(1, "stl"), vae.model, guide, x, seed=3)
    dreg, dreg_grads = _loss_and_grads(IWAE(1, "dreg"), vae.model, guide, x, seed=3)
    assert dreg == stl
    torch.testing.assert_close(dreg_grads, stl_grads, rtol=0, atol=0)


def test_guide_sites_missing_from_the_model_and_models_without_the_data_plate_raise():
    x = torch.bernoulli(torch.full((5, 4), 0.5))
    vae = VAE(4, 2, (8,))
    # A guide for site "w" used to enter the weight with its log q but no log p (and the
    # model's "z" came from the prior): a silently wrong bound.
    bad_guide = AmortizedNormal(4, 2, (8,), site="w")
    with pytest.raises(InferenceError, match="guide site 'w' is not a site of the model"):
        IWAE(num_particles=5).loss(vae.model, bad_guide, x)
    with pytest.raises(InferenceError, match="guide site 'w'"):
        iwae(vae.model, bad_guide, x, num_particles=5)
    # A model whose plate is not named "data" used to train as a plain ELBO under IWAE(K)
    # (the logsumexp ran over constants); now it is refused, and plate_name fixes it.
    vae_obs = VAE(4, 2, (8,), plate_name="obs")
    guide_obs = AmortizedNormal(4, 2, (8,), plate_name="obs")
    with pytest.raises(InferenceError, match="no sample site lies in a plate named 'data'"):
        IWAE(num_particles=5).loss(vae_obs.model, guide_obs, x)
    # One row: Pyro's whole-batch importance weights are the per-point ones.
    pyro.set_rng_seed(3)
    ours = IWAE(num_particles=5, plate_name="obs").loss(vae_obs.model, guide_obs, x[:1])
    pyro.set_rng_seed(3)
    with torch.no_grad():
        lw, _, _ = vectorized_importance_weights(vae_obs.model, guide_obs, x[:1],
                                                 num_samples=5, max_plate_nesting=1)
    assert ours == pytest.approx(-float(torch.logsumexp(lw, 0) - math.log(5)), rel=1e-6)


def test_global_latents_with_many_particles_are_refused():
    # One global draw per particle made the per-point logsumexp average p(x_n | g_k) over
    # different g_k: here IWAE(5000) gave -10.7 nats while log p(x) = -899.9 exactly.
    def model(x):
        g = pyro.sample("g", dist.Normal(0.0, 1.0))
        with pyro.plate("data", 2):
            pyro.sample("x", dist.Normal(g, 0.1), obs=x)

    def guide(x):
        pyro.sample("g", dist.Normal(0.0, 1.0))

    x = torch.tensor([3.0, -3.0])
    with pytest.raises(InferenceError, match=r"sites \['g'\] lie outside plate 'data'"):
        IWAE(50).loss(model, guide, x)
    # K = 1 stays Trace_ELBO, a valid bound.
    pyro.set_rng_seed(1)
    ours = IWAE(1).loss(model, guide, x)
    pyro.set_rng_seed(1)
    assert ours == pytest.approx(Trace_ELBO().loss(model, guide, x), rel=1e-6)


def test_observations_outside_the_data_plate_that_depend_on_latents_are_refused():
    # x depends on both local z's. As K grows each per-point logsumexp tends to 0 and the
    # objective to E_q log p(x | z): +1.13 nats for q = N(0, 0.05^2) per z and x = 0, above
    # the exact log p(x) = log N(0; 0, 2.01) = -1.27. Not a bound: refused.
    def model(x):
        with pyro.plate("data", 2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 0.1), obs=x)

    def guide(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Normal(0.0, 0.05))

    x = torch.zeros(1)
    with pytest.raises(InferenceError, match=r"sites \['x'\] lie outside plate 'data'"):
        IWAE(50).loss(model, guide, x)
    # An observation outside the plate that does not depend on the particle is fine.

    def model_with_constant_global_obs(x):
        pyro.sample("c", dist.Normal(0.0, 1.0), obs=x)
        with pyro.plate("data", 2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("y", dist.Normal(z, 0.1), obs=torch.zeros(2))

    assert math.isfinite(IWAE(50).loss(model_with_constant_global_obs, guide, x))


def test_batch_dims_not_declared_by_a_plate_are_refused():
    # z.sum(-1, keepdim=True) then .to_event(1) leaves the particle dim at -1 of a site
    # outside the data plate: it used to be summed over particles, the "bound" growing
    # with K (+61 nats at K = 50, +1367 at K = 1000 for log p(x) = -1.27).
    def model(x):
        with pyro.plate("data", 2):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z.sum(-1, keepdim=True), 0.1).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", 2):
            pyro.sample("z", dist.Normal(0.0, 0.05))

    shape_error = r"site 'x' has log-density shape \(50, 50\): dim -1"
    with pytest.raises(InferenceError, match=shape_error):
        IWAE(50).loss(model, guide, torch.zeros(1))
    with pytest.raises(InferenceError, match="not declared by an enclosing plate"):
        iwae(model, guide, torch.zeros(1), num_particles=50)


# ---- path derivatives with a hierarchical guide q(z1 | x) q(z2 | z1) ---------------------------

_X0 = 1.5  # every replicate observes the same point
_TWO_LEVEL_INIT = (0.2, math.log(0.9), 0.5, 0.4, math.log(0.6))  # a1, log_s1, c, a2, log_s2


def _two_level_model(x):
    """z1 ~ N(0, 1), z2 | z1 ~ N(z1, 1), x | z2 ~ N(z2, 0.5^2), scalar sites."""
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Normal(torch.zeros_like(x), 1.0))
        z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
        pyro.sample("x", dist.Normal(z2, 0.5), obs=x)


def _two_level_guide(x):
    """q(z1) = N(a1, s1^2), q(z2 | z1) = N(c z1 + a2, s2^2), one parameter set per replicate
    row (so row r's gradient is the r-th independent single-point estimate)."""
    r = x.shape[0]
    a1, log_s1, c, a2, log_s2 = (
        pyro.param(name, torch.full((r,), v, dtype=torch.float64))
        for name, v in zip(("a1", "log_s1", "c", "a2", "log_s2"), _TWO_LEVEL_INIT))
    with pyro.plate("data", r):
        z1 = pyro.sample("z1", dist.Normal(a1, log_s1.exp()))
        pyro.sample("z2", dist.Normal(c * z1 + a2, log_s2.exp()))


def _two_level_grads(estimator, k, r, seed):
    pyro.clear_param_store()
    _, grads = _loss_and_grads(IWAE(k, estimator), _two_level_model, _two_level_guide,
                               torch.full((r,), _X0, dtype=torch.float64), seed)
    return torch.stack([grads[n] for n in ("a1", "log_s1", "c", "a2", "log_s2")], dim=1)


def _plain_iwae_grads(k, r, seed):
    """Oracle: autograd of the IWAE bound written out in torch (no Pyro, no estimator)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.full((r,), v, dtype=torch.float64, requires_grad=True)
              for v in _TWO_LEVEL_INIT]
    a1, log_s1, c, a2, log_s2 = params
    e1, e2 = torch.randn(2, k, r, generator=gen, dtype=torch.float64)
    z1 = a1 + log_s1.exp() * e1
    loc2 = c * z1 + a2
    z2 = loc2 + log_s2.exp() * e2
    normal = torch.distributions.Normal
    log_w = (normal(0.0, 1.0).log_prob(z1) + normal(z1, 1.0).log_prob(z2)
             + normal(z2, 0.5).log_prob(torch.tensor(_X0, dtype=torch.float64))
             - normal(a1, log_s1.exp()).log_prob(z1) - normal(loc2, log_s2.exp()).log_prob(z2))
    bound = (torch.logsumexp(log_w, 0) - math.log(k)).sum()
    return -torch.stack(torch.autograd.grad(bound, params), dim=1)  # of the loss -bound


@pytest.mark.parametrize(("estimator", "k"), [("dreg", 5), ("dreg", 20), ("stl", 1)])
def test_path_estimators_are_unbiased_for_a_guide_with_dependent_sites(estimator, k):
    # Both path estimators used to detach the whole of q(z2 | z1) (dropping d log q(z2 | z1)
    # / d z1 through its mean c z1 + a2), and DReG's weight hooks scaled the z1 path twice.
    ours = _two_level_grads(estimator, k, 4000, seed=2)
    ref = _plain_iwae_grads(k, 4000, seed=1)
    z = _z_scores(ours, ref)
    assert float(z.abs().max()) < 3.5, z  # 5 coordinates


def test_dependent_site_path_estimators_keep_the_value_and_model_gradient():
    # Same draws as the standard estimator: the same loss; the model gradient (here of the
    # observation scale) is unchanged because the path term only reaches the guide.
    def model(x):
        sigma = pyro.param("sigma", torch.tensor(0.5, dtype=torch.float64),
                           constraint=dist.constraints.positive)
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Normal(torch.zeros_like(x), 1.0))
            z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
            pyro.sample("x", dist.Normal(z2, sigma), obs=x)

    x = torch.linspace(-1.0, 2.0, 6, dtype=torch.float64)
    std, std_grads = _loss_and_grads(IWAE(7), model, _two_level_guide, x, seed=3)
    dreg, dreg_grads = _loss_and_grads(IWAE(7, "dreg"), model, _two_level_guide, x, seed=3)
    assert dreg == pytest.approx(std, rel=1e-12)
    torch.testing.assert_close(dreg_grads["sigma"], std_grads["sigma"])
