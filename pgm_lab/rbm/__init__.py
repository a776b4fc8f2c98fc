"""Undirected models: restricted and general Boltzmann machines and other energy models.

``RBM`` (energy, free energy, conditionals, training by CD/PCD), ``BoltzmannMachine``
(visible-visible and hidden-hidden couplings, mean field), ``GaussianBernoulliRBM``
(real-valued data), parallel tempering, the Gibbs sampler and its
:class:`pyro.infer.mcmc.MCMCKernel` (``GibbsKernel``), the ``ContrastiveDivergence`` loss for
:class:`pyro.infer.SVI` / :func:`pgm_lab.train.fit`, PCD in one tight loop
(``persistent_cd``, with centering), log-partition estimates (exact, AIS) and ArviZ
diagnostics.
"""

from .boltzmann import BoltzmannMachine
from .cd import ContrastiveDivergence
from .energy import EnergyDistribution, EnergyModel
from .gaussian import GaussianBernoulliRBM
from .gibbs import GibbsKernel, GibbsResult, gibbs, gibbs_step
from .partition import AISResult, ais, ais_schedule, exact_log_partition, log_partition
from .pcd import centered_parameters, persistent_cd
from .rbm import RBM
from .tempering import ParallelTempering, PTResult, parallel_tempering, swap_log_acceptance

__all__ = [
    "RBM",
    "BoltzmannMachine",
    "GaussianBernoulliRBM",
    "GibbsKernel",
    "ContrastiveDivergence",
    "gibbs",
    "gibbs_step",
    "GibbsResult",
    "EnergyModel",
    "EnergyDistribution",
    "log_partition",
    "exact_log_partition",
    "ais",
    "ais_schedule",
    "AISResult",
    "persistent_cd",
    "centered_parameters",
    "ParallelTempering",
    "PTResult",
    "parallel_tempering",
    "swap_log_acceptance",
]
