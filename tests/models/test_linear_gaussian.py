import numpy as np
import pyro
import pytest
import torch
from sklearn.decomposition import PCA

from pgm_lab.errors import ConfigError, DataError
from pgm_lab.models import LinearGaussian

W = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0], [0.2, 0.1]], dtype=torch.float64)
MU = torch.tensor([0.1, -0.2, 0.3, 1.0], dtype=torch.float64)


def test_log_prob_matches_sklearn_probabilistic_pca():
    x = LinearGaussian(W, MU, 0.4).sample(500, seed=0)
    pca = PCA(n_components=2).fit(x.numpy())
    loadings = pca.components_.T * np.sqrt(pca.explained_variance_ - pca.noise_variance_)
    lg = LinearGaussian(torch.from_numpy(loadings), torch.from_numpy(pca.mean_),
                        float(np.sqrt(pca.noise_variance_)))
    torch.testing.assert_close(lg.log_prob(x), torch.from_numpy(pca.score_samples(x.numpy())))


def test_fit_ppca_is_the_maximum_likelihood_solution():
    x = LinearGaussian(W, MU, 0.4).sample(400, seed=1)
    fitted = LinearGaussian.fit_ppca(x, 2)
    pca = PCA(n_components=2).fit(x.numpy())
    n = x.shape[0]  # sklearn divides the covariance by N - 1, the MLE by N
    assert fitted.sigma**2 == pytest.approx(pca.noise_variance_ * (n - 1) / n, rel=1e-10)
    torch.testing.assert_close(fitted.W @ fitted.W.T,
                               torch.from_numpy(pca.get_covariance() * (n - 1) / n)
                               - fitted.sigma**2 * torch.eye(4, dtype=torch.float64))
    # Perturbing the MLE never increases the likelihood.
    best = fitted.log_prob(x).sum()
    for scale in (0.9, 1.1):
        assert LinearGaussian(fitted.W * scale, fitted.mu, fitted.sigma).log_prob(x).sum() < best
        assert LinearGaussian(fitted.W, fitted.mu, fitted.sigma * scale).log_prob(x).sum() < best


def test_posterior_matches_gaussian_conditioning():
    lg = LinearGaussian(W, MU, 0.4)
    x = lg.sample(7, seed=2)
    cov_x = W @ W.T + 0.16 * torch.eye(4, dtype=torch.float64)
    gain = W.T @ torch.linalg.inv(cov_x)  # Cov(z, x) Cov(x)^-1
    post = lg.posterior(x)
    torch.testing.assert_close(post.loc, (x - MU) @ gain.T)
    torch.testing.assert_close(post.covariance_matrix[0], torch.eye(2, dtype=torch.float64)
                               - gain @ W)


def test_model_joint_density_integrates_to_marginal():
    # log p(x) = log p(x, z) - log p(z | x) for any z: checks model() against log_prob().
    lg = LinearGaussian(W, MU, 0.4)
    x = lg.sample(5, seed=3)
    tr = pyro.poutine.trace(lg.exact_guide).get_trace(x)
    mt = pyro.poutine.trace(pyro.poutine.replay(lg.model, trace=tr)).get_trace(x)
    mt.compute_log_prob()
    joint = mt.nodes["z"]["log_prob"] + mt.nodes["x"]["log_prob"]
    log_post = lg.posterior(x).log_prob(tr.nodes["z"]["value"])
    torch.testing.assert_close(joint - log_post, lg.log_prob(x))


def test_invalid_arguments():
    with pytest.raises(ConfigError, match="W must be"):
        LinearGaussian(torch.ones(3), MU, 1.0)
    with pytest.raises(ConfigError, match="mu must have shape"):
        LinearGaussian(W, torch.zeros(3), 1.0)
    with pytest.raises(ConfigError, match="sigma"):
        LinearGaussian(W, MU, 0.0)
    with pytest.raises(ConfigError, match="z_dim must be < D"):
        LinearGaussian.fit_ppca(torch.randn(10, 4, dtype=torch.float64), 4)
    with pytest.raises(DataError, match=r"shape \[N, 4\]"):
        LinearGaussian(W, MU, 1.0).log_prob(torch.zeros(3, 5))


def test_float32_encoders_and_empty_batches():
    # A float32 AmortizedNormal on the float64 oracle failed in z @ W.T (dtype mismatch);
    # an empty batch was a ZeroDivisionError inside pyro.plate.
    from pgm_lab.guides import AmortizedNormal
    from pgm_lab.infer import iwae, posterior_means

    lg = LinearGaussian(W, MU, 0.4)
    x = lg.sample(3, seed=4).float()
    guide = AmortizedNormal(4, 2, (5,))
    out = iwae(lg.model, guide, x, num_particles=4)
    assert out.shape == (3,) and bool(torch.isfinite(out).all())
    torch.testing.assert_close(posterior_means(guide, x, "extra model arg"), guide.encode(x)[0])
    with pytest.raises(DataError, match=r"shape \[N, 4\] with N >= 1, got \(0, 4\)"):
        iwae(lg.model, guide, x[:0], num_particles=4)
