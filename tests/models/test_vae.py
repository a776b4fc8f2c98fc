import pyro
import pytest
import torch
import torch.nn.functional as F

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.guides import AmortizedNormal
from pgm_lab.infer import IWAE, iwae_curve
from pgm_lab.models import VAE
from pgm_lab.train import fit


def _traces(vae, guide, x):
    gt = pyro.poutine.trace(guide).get_trace(x)
    mt = pyro.poutine.trace(pyro.poutine.replay(vae.model, trace=gt)).get_trace(x)
    mt.compute_log_prob()
    return mt, gt


def test_bernoulli_model_sites_shapes_and_log_likelihood():
    vae = VAE(x_dim=12, z_dim=3, hidden_dims=(16, 8))
    guide = AmortizedNormal(12, 3, (16,))
    x = torch.bernoulli(torch.full((5, 12), 0.4))
    mt, _ = _traces(vae, guide, x)
    z = mt.nodes["z"]["value"]
    assert z.shape == (5, 3)
    for name in ("z", "x"):
        assert [f.name for f in mt.nodes[name]["cond_indep_stack"]] == ["data"]
        assert mt.nodes[name]["log_prob"].shape == (5,)
    expected = -F.binary_cross_entropy_with_logits(vae.decoder(z), x, reduction="none").sum(-1)
    torch.testing.assert_close(mt.nodes["x"]["log_prob"], expected)
    torch.testing.assert_close(mt.nodes["z"]["log_prob"],
                               torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))
    assert {"decoder.0.weight", "decoder.4.bias"} <= set(pyro.get_param_store().keys())


@pytest.mark.parametrize("learn", [False, True])
def test_gaussian_likelihood_with_fixed_or_learned_sigma(learn):
    vae = VAE(6, 2, (8,), likelihood="gaussian", sigma=0.3, learn_sigma=learn)
    guide = AmortizedNormal(6, 2, (8,))
    x = torch.randn(4, 6)
    mt, _ = _traces(vae, guide, x)
    z = mt.nodes["z"]["value"]
    expected = torch.distributions.Normal(vae.decoder(z), 0.3).log_prob(x).sum(-1)
    torch.testing.assert_close(mt.nodes["x"]["log_prob"], expected)
    assert ("sigma" in pyro.get_param_store().keys()) == learn


def test_sample_and_reconstruct():
    vae = VAE(16, 2, (8,))
    guide = AmortizedNormal(16, 2, (8,))
    means = vae.sample(6, seed=1)
    assert means.shape == (6, 16) and bool(((means > 0) & (means < 1)).all())
    torch.testing.assert_close(vae.sample(6, seed=1), means)
    draws = vae.sample(6, mean=False, seed=1)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    x = torch.bernoulli(torch.full((3, 16), 0.5))
    rec = vae.reconstruct(x, guide)
    torch.testing.assert_close(rec, torch.sigmoid(vae.decoder(guide.encode(x)[0])))
    assert vae.reconstruct(x, lambda x: guide(x)).shape == (3, 16)  # guide without encode()


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="likelihood"):
        VAE(4, 2, likelihood="poisson")
    with pytest.raises(ConfigError, match="z_dim"):
        VAE(4, 0)
    with pytest.raises(ConfigError, match="hidden_dims"):
        VAE(4, 2, hidden_dims=8)
    with pytest.raises(ConfigError, match="activation"):
        VAE(4, 2, activation="gelu2")
    with pytest.raises(ConfigError, match="sigma"):
        VAE(4, 2, likelihood="gaussian", sigma=-1.0)
    with pytest.raises(DataError, match=r"shape \[N, 4\]"):
        VAE(4, 2).model(torch.zeros(3, 5))


def test_non_binary_data_for_bernoulli_is_a_clear_error():
    # Through Trace_ELBO (fit's default loss) this was Pyro's plain ValueError ("Error while
    # computing log_prob at site 'x'") wrapping the check: now the model checks x itself.
    vae, guide = VAE(4, 2, (3,)), AmortizedNormal(4, 2, (3,))
    x = torch.zeros(2, 4)
    x[1, 2], x[0, 3] = 0.37, 2.0
    message = r"expected binary x \(0/1\).*got 2 of 8 entries.*x\[0, 3\] = 2"
    for loss in (pyro.infer.Trace_ELBO(), IWAE(2), IWAE(2, "dreg")):
        with pytest.raises(DataError, match=message):
            loss.loss(vae.model, guide, x)
    with pytest.raises(DataError, match=message):
        fit(vae.model, guide, x, epochs=1, batch_size=2, progress=False)
    with pytest.raises(DataError, match="expected binary x"):  # direct use of the likelihood
        vae.likelihood_dist(torch.zeros(2, 2)).log_prob(x)


def test_guide_with_another_z_dim_is_a_config_error_naming_both_sizes():
    # The decoder's matmul used to fail: "mat1 and mat2 shapes cannot be multiplied (2x3 and
    # 2x3)" from inside torch, after the guide had run.
    vae, guide = VAE(4, 2, (3,)), AmortizedNormal(4, 3, (3,))
    x = torch.bernoulli(torch.full((5, 4), 0.5))
    message = r"latent site 'z' of size z_dim=2.*got shape \(5, 3\).*z_dim=2"
    for loss in (pyro.infer.Trace_ELBO(), IWAE(4), IWAE(4, "dreg")):
        with pytest.raises(ConfigError, match=message):
            loss.loss(vae.model, guide, x)
    with pytest.raises(ConfigError, match=message):
        fit(vae.model, guide, x, epochs=1, batch_size=5, progress=False)
    with pytest.raises(DataError, match=r"expected z of shape \[\.\.\., 2\].*got \(5, 3\)"):
        vae.reconstruct(x, guide)


def test_works_with_pyro_mean_field_elbo_and_matches_our_estimator():
    # Analytic-KL ELBO from Pyro on the same pair: its expectation equals our per-point ELBO.
    vae, guide = VAE(10, 2, (8,)), AmortizedNormal(10, 2, (8,))
    x = torch.bernoulli(torch.full((6, 10), 0.4))
    mf = pyro.infer.TraceMeanField_ELBO(num_particles=4000, vectorize_particles=True)
    curve = iwae_curve(vae.model, guide, x, ks=(1, 4000))  # k=1: 4000 one-draw ELBOs per point
    ours = float(curve.bounds[1].sum())
    se = float((curve.stderr[1] ** 2).sum().sqrt())  # MC standard error of our sum
    # The analytic KL only removes variance, so sqrt(2) * se bounds the sd of the difference.
    assert abs(-mf.loss(vae.model, guide, x) - ours) / (2**0.5 * se) < 4.0


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_nan_or_inf_data_is_a_clear_error(likelihood):
    # NaN used to reach the guide's Normal (a Pyro support error about z) or the Bernoulli
    # check ("needs binary x"), neither naming the missing values.
    vae, guide = VAE(4, 2, (3,), likelihood), AmortizedNormal(4, 2, (3,))
    x = torch.zeros(3, 4)
    x[1, 2] = float("nan")
    with pytest.raises(DataError, match=r"x must be finite, got nan at x\[1, 2\]"):
        IWAE(2).loss(vae.model, guide, x)
    with pytest.raises(DataError, match="must be finite"):
        vae.model(x)
    x[1, 2] = float("inf")
    with pytest.raises(DataError, match=r"got inf at x\[1, 2\]"):
        guide.encode(x)
    with pytest.raises(DataError, match="must be finite"):
        iwae_curve(vae.model, guide, x, ks=(1, 2))
    x[1, 2] = 3e38  # finite values whose sum overflows are still accepted
    x[0, 0] = 3e38
    assert vae.reconstruct(x, guide).shape == (3, 4)


def test_sample_without_seed_follows_the_global_rng():
    # seed=None used to draw from a freshly OS-seeded generator: pyro.set_rng_seed did not
    # make VAE.sample reproducible.
    vae = VAE(16, 2, (8,))
    draws = []
    for _ in range(2):
        pyro.set_rng_seed(5)
        draws.append(vae.sample(4, mean=False))
    torch.testing.assert_close(draws[0], draws[1])
    assert not torch.equal(vae.sample(4), vae.sample(4))  # and successive calls still differ


def test_sigma_options_of_a_bernoulli_vae_and_guides_without_the_site_are_refused():
    # learn_sigma=True / sigma=0.3 with the Bernoulli likelihood used to be ignored silently.
    with pytest.raises(ConfigError, match="belong to the Gaussian likelihood"):
        VAE(4, 2, learn_sigma=True)
    with pytest.raises(ConfigError, match="belong to the Gaussian likelihood"):
        VAE(4, 2, sigma=0.3)
    # reconstruct with an encode()-less guide lacking the latent site was a bare KeyError.
    vae, guide = VAE(4, 2, (3,)), AmortizedNormal(4, 2, (3,), site="w")
    with pytest.raises(ConfigError, match="no sample site 'z'.*'w'"):
        vae.reconstruct(torch.zeros(2, 4), lambda x: guide(x))


def test_float64_data_work_with_float32_networks():
    # NumPy's default float64 used to fail inside the encoder's matmul ("mat1 and mat2 must
    # have the same dtype"); x is now cast to the networks' dtype.
    vae, guide = VAE(4, 2, (3,)), AmortizedNormal(4, 2, (3,))
    x = torch.bernoulli(torch.full((5, 4), 0.5))
    pyro.set_rng_seed(2)
    ref = IWAE(3).loss(vae.model, guide, x)
    pyro.set_rng_seed(2)
    assert IWAE(3).loss(vae.model, guide, x.double()) == pytest.approx(ref, rel=1e-6)
    torch.testing.assert_close(vae.reconstruct(x.double(), guide), vae.reconstruct(x, guide))
    assert guide.encode(x.long())[0].dtype == torch.float32


def test_simulate_returns_data_and_the_latents_that_generated_them():
    vae = VAE(6, 2, (5,))
    x, latents = vae.simulate(50, seed=3)
    assert x.shape == (50, 6) and set(latents) == {"z"} and latents["z"].shape == (50, 2)
    assert bool(((x == 0) | (x == 1)).all())
    torch.testing.assert_close(vae.simulate(50, seed=3)[0], x)
    # sample(mean=False) is the data half of simulate, draw for draw.
    torch.testing.assert_close(vae.sample(50, mean=False, seed=3), x)
    # x | z follows the decoder: per-pixel frequencies at the simulated codes.
    p = vae.decode(latents["z"])
    resid = (x - p).sum() / (p * (1 - p)).sum().sqrt()
    assert abs(float(resid)) < 3.0
    gauss = VAE(6, 2, (5,), likelihood="gaussian", sigma=0.5)
    xg, lz = gauss.simulate(4000, seed=1)
    sd = float((xg - gauss.decode(lz["z"])).std())
    assert abs(sd - 0.5) < 3 * 0.5 / (2 * 6 * 4000) ** 0.5
