"""pgm_lab.models.GAN: the lecture's gradients in closed form, AIS on the generator, training."""

import math

import pytest
import torch

from pgm_lab.errors import ConfigError, TrainingError
from pgm_lab.infer import ais
from pgm_lab.models import GAN


def _linear_gan(x_dim=5, z_dim=3):
    """Linear generator logits A z + a (pixel means sigmoid of them), logistic D(x)."""
    torch.manual_seed(1)
    return GAN(x_dim, z_dim, hidden_dims=()).double()


def _closed_form(gan, x, z):
    r"""The lecture's gradients of V = (1/n) sum [log D(x_i) + log(1 - D(G(z_i)))] for
    D(x) = sigmoid(w.x + b), G(z) = sigmoid(u), u = A z + a:

    dV/dw = mean[(1 - D(x_i)) x_i] - mean[D(g_i) g_i],  dV/db = mean[1 - D(x_i)] - mean[D(g_i)],
    dV/dA = -mean[D(g_i) (w * g_i * (1 - g_i)) z_i^T],  dV/da = -mean[D(g_i) w * g_i (1 - g_i)]
    and the non-saturating loss -mean log D(G(z)) has dA = -mean[(1 - D(g_i)) (w g'(u_i)) z_i^T].
    """
    lin_g, lin_d = gan.generator[0], gan.discriminator[0]
    A, a, w, b = lin_g.weight, lin_g.bias, lin_d.weight[0], lin_d.bias[0]
    with torch.no_grad():
        g = torch.sigmoid(z @ A.T + a)
        d_real, d_fake = torch.sigmoid(x @ w + b), torch.sigmoid(g @ w + b)
        back = w * g * (1 - g)  # [m, D]: d t_i / d u_i
        return {
            "w": ((1 - d_real)[:, None] * x).mean(0) - (d_fake[:, None] * g).mean(0),
            "b": (1 - d_real).mean() - d_fake.mean(),
            "A": -((d_fake[:, None] * back).T @ z) / len(z),
            "a": -(d_fake[:, None] * back).mean(0),
            "A_ns": -(((1 - d_fake)[:, None] * back).T @ z) / len(z),
            "a_ns": -((1 - d_fake)[:, None] * back).mean(0),
        }


def test_value_gradients_equal_the_closed_form():
    gan = _linear_gan()
    x = torch.rand(7, 5, dtype=torch.float64)
    z = torch.randn(9, 3, dtype=torch.float64)
    want = _closed_form(gan, x, z)
    lin_g, lin_d = gan.generator[0], gan.discriminator[0]
    gw, gb, gA, ga = torch.autograd.grad(gan.value(x, z),
                                         [lin_d.weight, lin_d.bias, lin_g.weight, lin_g.bias])
    torch.testing.assert_close(gw[0], want["w"])
    torch.testing.assert_close(gb[0], want["b"])
    torch.testing.assert_close(gA, want["A"])
    torch.testing.assert_close(ga, want["a"])


def test_generator_losses_closed_form():
    gan = _linear_gan()
    z = torch.randn(9, 3, dtype=torch.float64)
    want = _closed_form(gan, torch.rand(2, 5, dtype=torch.float64), z)
    lin_g = gan.generator[0]
    # saturating loss mean log(1 - D(G(z))) = the fake term of V: same generator gradient as V
    gA, ga = torch.autograd.grad(gan.generator_loss(z, "saturating"),
                                 [lin_g.weight, lin_g.bias])
    torch.testing.assert_close(gA, want["A"])
    torch.testing.assert_close(ga, want["a"])
    gA, ga = torch.autograd.grad(gan.generator_loss(z, "non-saturating"),
                                 [lin_g.weight, lin_g.bias])
    torch.testing.assert_close(gA, want["A_ns"])
    torch.testing.assert_close(ga, want["a_ns"])
    with pytest.raises(ConfigError, match="loss must be one of"):
        gan.generator_loss(z, "wasserstein")


def test_ais_on_the_generator_matches_quadrature():
    """z_dim = 1: log p(x) = log int N(z) prod_d Bern(x_d | sigmoid(G(z)_d)) dz on a grid."""
    torch.manual_seed(0)
    gan = GAN(6, 1, hidden_dims=(4,), activation="tanh").double()
    for p in gan.generator.parameters():
        p.data.mul_(3.0)
    x = torch.bernoulli(torch.full((4, 6), 0.5, dtype=torch.float64))
    grid = torch.linspace(-9, 9, 20001, dtype=torch.float64)
    with torch.no_grad():
        logits = gan.generator(grid[:, None])  # [G, D]
        ll = -torch.nn.functional.binary_cross_entropy_with_logits(
            logits[:, None, :].expand(-1, 4, -1), x.expand(len(grid), -1, -1),
            reduction="none").sum(-1)  # [G, N]
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(grid)[:, None]
        exact = torch.logsumexp(ll + prior, 0) + math.log(grid[1] - grid[0])
    res = ais(gan.model, None, x, init="prior", num_steps=200, num_chains=32, seed=0,
              return_result=True)
    assert (res.log_px - exact).abs().max() < 4 * res.stderr.max() + 0.02


def test_fit_is_seeded_and_resumes(tmp_path):
    data = torch.rand(40, 6)

    def trained(epochs, **kw):
        torch.manual_seed(3)
        gan = GAN(6, 2, hidden_dims=(8,))
        gan.fit(data, epochs=epochs, batch_size=16, lr=1e-3, seed=5, progress=False, **kw)
        return gan

    full = trained(4)
    again = trained(4)
    for p, q in zip(full.parameters(), again.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    ck = tmp_path / "gan.pt"
    trained(2, checkpoint=ck)
    resumed = trained(4, checkpoint=ck, resume=True)
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


def test_fit_saturating_switch_changes_training():
    data = torch.rand(40, 6)
    params = {}
    for loss in ("saturating", "non-saturating"):
        torch.manual_seed(3)
        gan = GAN(6, 2, hidden_dims=(8,))
        history = gan.fit(data, epochs=2, batch_size=16, lr=1e-3, loss=loss, progress=False)
        assert len(history.loss) == 2
        params[loss] = gan.generator[0].weight.detach().clone()
    assert not torch.equal(params["saturating"], params["non-saturating"])


def test_fit_errors():
    gan = GAN(6, 2, hidden_dims=(8,))
    with pytest.raises(ConfigError, match="loss must be one of"):
        gan.fit(torch.rand(10, 6), loss="minimax")
    with pytest.raises(ConfigError, match="resume=True needs checkpoint"):
        gan.fit(torch.rand(10, 6), resume=True)
    with torch.no_grad():
        gan.generator[0].weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="epoch 1, step 1"):
        gan.fit(torch.rand(10, 6), progress=False)
