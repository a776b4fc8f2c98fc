"""Linear-Gaussian latent variable model (probabilistic PCA) with exact marginal and posterior."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from pgm_lab.errors import ConfigError, DataError

from ._nets import as_rows, check_dims

__all__ = ["LinearGaussian"]


class LinearGaussian:
    r"""Probabilistic PCA / factor model with closed-form evidence and posterior.

    .. math::

        z_n \sim \mathcal N(0, I_Z), \qquad x_n \mid z_n \sim \mathcal N(W z_n + \mu,
        \sigma^2 I_D),

    so that (Tipping & Bishop 1999, "Probabilistic Principal Component Analysis")

    .. math::

        p(x_n) = \mathcal N(x_n; \mu, W W^\top + \sigma^2 I_D), \qquad
        p(z_n \mid x_n) = \mathcal N\big(M^{-1} W^\top (x_n - \mu),\ \sigma^2 M^{-1}\big),
        \quad M = W^\top W + \sigma^2 I_Z.

    It is the oracle for the bound estimators: :meth:`log_prob` is the exact target of every
    ELBO / IWAE-k estimate, and :meth:`exact_guide` makes every importance weight equal to
    :math:`p(x_n)`. :meth:`model` has the same sites as :class:`pgm_lab.models.VAE` (``"z"``,
    ``"x"`` in plate ``"data"``), so the same guides and estimators apply.

    Args:
        W: loading matrix ``[D, Z]``.
        mu: mean ``[D]``.
        sigma: observation noise standard deviation (> 0).

    The dtype of ``W`` is used throughout (pass float64 for exact comparisons).
    """

    def __init__(self, W: torch.Tensor, mu: torch.Tensor, sigma: float) -> None:
        if not isinstance(W, torch.Tensor) or W.dim() != 2 or not W.dtype.is_floating_point:
            raise ConfigError(f"W must be a float tensor [D, Z], got {_describe(W)}")
        d, z = W.shape
        check_dims(D=int(d), Z=int(z))
        mu = torch.as_tensor(mu, dtype=W.dtype)
        if mu.shape != (d,):
            raise ConfigError(f"mu must have shape [{d}] to match W [{d}, {z}], got "
                              f"{tuple(mu.shape)}")
        if not (isinstance(sigma, (int, float)) and sigma > 0):
            raise ConfigError(f"sigma must be a positive float, got {sigma!r}")
        self.W, self.mu, self.sigma = W, mu, float(sigma)
        self.x_dim, self.z_dim = int(d), int(z)

    def model(self, x: torch.Tensor) -> None:
        """The Pyro program ``p(x, z)`` for ``x`` of shape ``[N, D]``."""
        x = as_rows(x, self.x_dim, dtype=self.W.dtype)
        n = x.shape[0]
        with pyro.plate("data", n):
            prior = dist.Normal(self.W.new_zeros(()), 1.0).expand([n, self.z_dim]).to_event(1)
            z = pyro.sample("z", prior).to(self.W.dtype)  # e.g. from a float32 encoder
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def marginal(self) -> dist.MultivariateNormal:
        """:math:`p(x) = \\mathcal N(\\mu, W W^\\top + \\sigma^2 I)` (event shape ``[D]``)."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.x_dim, dtype=self.W.dtype)
        return dist.MultivariateNormal(self.mu, covariance_matrix=cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact :math:`\\log p(x_n)` for each row of ``x [N, D]``; returns ``[N]``."""
        return self.marginal().log_prob(as_rows(x, self.x_dim).to(self.W.dtype))

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact :math:`p(z_n \\mid x_n)`: batch shape ``[N]``, event shape ``[Z]``."""
        x = as_rows(x, self.x_dim).to(self.W.dtype)
        m = self.W.T @ self.W + self.sigma**2 * torch.eye(self.z_dim, dtype=self.W.dtype)
        m_inv = torch.linalg.inv(m)
        loc = (x - self.mu) @ self.W @ m_inv.T
        cov = self.sigma**2 * m_inv
        return dist.MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], -1, -1))

    def exact_guide(self, x: torch.Tensor) -> None:
        """A guide sampling ``"z"`` from the exact posterior (reparameterized)."""
        post = self.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", post)

    def sample(self, n: int, *, seed: int = 0) -> torch.Tensor:
        """Draw ``x [n, D]`` from the model with a generator seeded ``seed``."""
        check_dims(n=n)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen, dtype=self.W.dtype)
        eps = torch.randn(n, self.x_dim, generator=gen, dtype=self.W.dtype)
        return z @ self.W.T + self.mu + self.sigma * eps

    @classmethod
    def fit_ppca(cls, x: torch.Tensor, z_dim: int) -> LinearGaussian:
        r"""Maximum-likelihood probabilistic PCA (Tipping & Bishop 1999, eqs. 7-8).

        With :math:`\lambda_1 \ge \dots \ge \lambda_D` the eigenvalues and :math:`U` the
        eigenvectors of the sample covariance ``S`` (divisor ``N``):
        :math:`\hat\sigma^2 = \frac{1}{D-Z}\sum_{j>Z}\lambda_j`,
        :math:`\hat W = U_Z(\Lambda_Z - \hat\sigma^2 I)^{1/2}`, :math:`\hat\mu = \bar x`.
        """
        x = as_rows(x, int(x.shape[-1]) if isinstance(x, torch.Tensor) else 1)
        n, d = x.shape
        check_dims(z_dim=z_dim)
        if not z_dim < d:
            raise ConfigError(f"z_dim must be < D={d} for PPCA, got {z_dim}")
        if n < 2:
            raise DataError(f"fit_ppca needs at least 2 rows, got {n}")
        mu = x.mean(0)
        cov = (x - mu).T @ (x - mu) / n
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        sigma2 = evals[z_dim:].mean().clamp_min(torch.finfo(x.dtype).tiny)
        W = evecs[:, :z_dim] * (evals[:z_dim] - sigma2).clamp_min(0).sqrt()
        return cls(W, mu, float(sigma2.sqrt()))


def _describe(obj: object) -> str:
    if isinstance(obj, torch.Tensor):
        return f"tensor of shape {tuple(obj.shape)} and dtype {obj.dtype}"
    return type(obj).__name__
