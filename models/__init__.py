"""Model zoo: Pyro programs for generative models (installed as ``pgm_lab.models``).

* :class:`VAE` -- deep latent Gaussian model with Bernoulli or Gaussian likelihood.
* :class:`GAN` -- generative adversarial network with a Bernoulli Pyro generator.
* :class:`LinearGaussian` -- probabilistic PCA with exact evidence and posterior (an oracle).
"""

from .gan import GAN, GENERATOR_LOSSES
from .linear_gaussian import LinearGaussian
from .vae import LIKELIHOODS, VAE

__all__ = ["VAE", "LIKELIHOODS", "LinearGaussian", "GAN", "GENERATOR_LOSSES"]
