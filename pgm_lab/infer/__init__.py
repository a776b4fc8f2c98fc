"""Importance-weighted objectives and per-data-point bound estimators.

* :class:`IWAE` -- the IWAE bound as a :class:`pyro.infer.ELBO` with ``"standard"``,
  ``"dreg"`` and ``"stl"`` gradient estimators and per-data-point logsumexp.
* :func:`elbo`, :func:`iwae`, :func:`iwae_curve` -- per-data-point ELBO / IWAE-k values, streamed
  over chunks of particles.
* :func:`ais` -- annealed importance sampling estimates of :math:`\\log p(x_n)` (HMC
  transitions, any Pyro model); :func:`bdmc` -- its sandwich with reverse AIS on data from
  :func:`simulate`; :func:`bound_report` -- all of them side by side for several models.
* Diagnostics: :func:`effective_sample_size`, :func:`psis_khat`, :func:`standard_error`,
  :func:`active_units`, :func:`latent_activity`, :func:`posterior_means`.
"""

from .ais import AISEstimate, ais, sigmoid_schedule
from .bdmc import BDMCResult, bdmc
from .bounds import BoundEstimates, elbo, iwae, iwae_curve
from .diagnostics import (
    active_units,
    effective_sample_size,
    latent_activity,
    posterior_means,
    psis_khat,
    standard_error,
)
from .objective import ESTIMATORS, IWAE
from .report import BoundReport, ModelBounds, bound_report
from .simulate import simulate

__all__ = [
    "IWAE",
    "ESTIMATORS",
    "elbo",
    "iwae",
    "iwae_curve",
    "BoundEstimates",
    "ais",
    "AISEstimate",
    "sigmoid_schedule",
    "bdmc",
    "BDMCResult",
    "simulate",
    "bound_report",
    "BoundReport",
    "ModelBounds",
    "effective_sample_size",
    "psis_khat",
    "standard_error",
    "active_units",
    "latent_activity",
    "posterior_means",
]
