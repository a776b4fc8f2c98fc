"""Model zoo: Pyro programs for generative models (installed as ``pgm_lab.models``).

* :class:`VAE` -- deep latent Gaussian model with Bernoulli or Gaussian likelihood.
* :class:`LinearGaussian` -- probabilistic PCA with exact evidence and posterior (an oracle).
"""

from .linear_gaussian import LinearGaussian
from .vae import LIKELIHOODS, VAE

__all__ = ["VAE", "LIKELIHOODS", "LinearGaussian"]
