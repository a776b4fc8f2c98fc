"""A small linear-Gaussian oracle shared by the infer tests (float64 throughout)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

from pgm_lab.models import LinearGaussian

W = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.0]], dtype=torch.float64)
MU = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
SIGMA = 0.5


def oracle() -> LinearGaussian:
    return LinearGaussian(W, MU, SIGMA)


def shifted_guide(lg: LinearGaussian, shift: float = 0.3, inflate: float = 1.3):
    """A deliberately imperfect diagonal guide: posterior mean + shift, sd * inflate."""

    def guide(x):
        post = lg.posterior(x)
        sd = post.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt()
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(post.loc + shift, inflate * sd).to_event(1))

    return guide


@pytest.fixture
def lg() -> LinearGaussian:
    return oracle()


@pytest.fixture
def make_shifted_guide():
    return shifted_guide
