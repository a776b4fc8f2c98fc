"""Diagnostics of importance weights and of the latent code.

* :func:`effective_sample_size` -- Kish's ESS of self-normalized weights, per data point.
* :func:`psis_khat` -- Pareto-smoothed importance sampling tail index per data point.
* :func:`standard_error` -- standard error of a mean over data points.
* :func:`active_units` / :func:`latent_activity` -- Burda et al.'s count of used latent dims.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.ops.stats import fit_generalized_pareto

from ..errors import ConfigError, DataError
from .weights import PARTICLE_PLATE, guess_max_plate_nesting

__all__ = ["effective_sample_size", "psis_khat", "psis_tail_size", "standard_error",
           "latent_activity", "active_units", "posterior_means"]

MIN_PSIS_TAIL = 10  # Pyro's psis_diagnostic refuses fewer tail samples
_TIED = 1e-12  # top log weights closer than this (nats) differ by rounding only: tied


def effective_sample_size(log_weights: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r"""Kish's effective sample size :math:`(\sum_k w_k)^2 / \sum_k w_k^2` along ``dim``.

    Computed in log space: :math:`\exp(2\,\mathrm{lse}(\log w) - \mathrm{lse}(2 \log w))`.
    ``log_weights [K, N]`` -> ``[N]`` with values in ``[1, K]``.
    """
    return torch.exp(2 * torch.logsumexp(log_weights, dim) - torch.logsumexp(2 * log_weights, dim))


def psis_tail_size(num_particles: int) -> int:
    """Tail length :math:`M = \\lceil \\min(0.2 K, 3\\sqrt K) \\rceil` (Vehtari et al. 2015)."""
    return int(math.ceil(min(0.2 * num_particles, 3.0 * math.sqrt(num_particles))))


def psis_khat(log_weights: torch.Tensor) -> torch.Tensor:
    r"""PSIS tail index :math:`\hat k` for each column of ``log_weights [K, N]`` -> ``[N]``.

    Per data point, the :math:`M` largest weights (:func:`psis_tail_size`) minus the
    :math:`(M+1)`-th are fitted by a generalized Pareto distribution (Zhang & Stephens 2009,
    via :func:`pyro.ops.stats.fit_generalized_pareto`), exactly as Pyro's
    :func:`pyro.infer.importance.psis_diagnostic` does for one whole-model weight (Vehtari,
    Simpson, Gelman, Yao & Gabry 2015, "Pareto Smoothed Importance Sampling"; Yao et al.
    2018, "Yes, but Did It Work?"). :math:`\hat k < 0.5`: the guide is a good proposal for
    that point; :math:`\hat k > 0.7`: importance weights are unreliable. A column whose
    mass sits on fewer than ``M + 1`` particles (the rest below ``1e-15`` of the largest)
    gets :math:`+\infty`; a column whose top weights are all tied gets :math:`-\infty`.

    Raises:
        ConfigError: ``K`` too small for a tail of at least 10 weights (``K < 50``).
    """
    if log_weights.dim() == 1:
        log_weights = log_weights[:, None]
    k = log_weights.shape[0]
    m = psis_tail_size(k)
    top = torch.topk(log_weights, min(k, m + 1), dim=0).values
    return khat_from_top(top, k)


def khat_from_top(top: torch.Tensor, num_particles: int) -> torch.Tensor:
    """:func:`psis_khat` from the ``M + 1`` largest log weights per column, in descending order.

    Lets streaming estimators keep only the top of each column instead of all ``K`` weights.
    """
    m = psis_tail_size(num_particles)
    if m < MIN_PSIS_TAIL:
        raise ConfigError(f"PSIS k-hat needs a tail of >= {MIN_PSIS_TAIL} weights, i.e. "
                          f"num_particles >= 50; got num_particles={num_particles}")
    top = top.double()
    top = top - top[0]
    out = torch.empty(top.shape[1], dtype=torch.float64)
    floor = math.log(1e-15)
    for n in range(top.shape[1]):
        col = top[:, n]
        cutoff = max(floor, float(col[m])) if col.shape[0] > m else floor
        tail = col[col > cutoff]
        if tail.numel() < MIN_PSIS_TAIL or -cutoff < _TIED:
            # Too few weights above the cutoff. If the cutoff is the 1e-15 floor, fewer than
            # M + 1 particles carry all the mass: the worst case, +inf (Pyro's
            # psis_diagnostic also returns inf). Otherwise the top weights are tied (e.g.
            # the exact posterior as guide; ties up to rounding made the Pareto fit divide by
            # zero): bounded weights, no tail at all, -inf.
            out[n] = math.inf if cutoff == floor else -math.inf
            continue
        out[n] = fit_generalized_pareto(tail.exp() - math.exp(cutoff))[0]
    return out


def standard_error(values: torch.Tensor) -> float:
    r"""Standard error of the mean of ``values [N]``: :math:`s / \sqrt N` (``s`` with ``N-1``).

    For a test-set mean of per-point bound estimates this covers both the spread over data
    points and the Monte-Carlo noise of each estimate.
    """
    values = values.reshape(-1)
    if values.numel() < 2:
        raise DataError(f"standard_error needs at least 2 values, got {values.numel()}")
    return float(values.std(unbiased=True) / math.sqrt(values.numel()))


def latent_activity(z_means: torch.Tensor) -> torch.Tensor:
    r""":math:`A_u = \mathrm{Cov}_x\big(\mathbb E_{q(z \mid x)}[z_u]\big)` per latent dim.

    ``z_means [N, Z]`` (the posterior means of ``N`` data points) -> ``[Z]`` variances
    (divisor ``N - 1``).
    """
    if z_means.dim() != 2 or z_means.shape[0] < 2:
        raise DataError(f"z_means must have shape [N >= 2, Z], got {tuple(z_means.shape)}")
    return z_means.var(dim=0, unbiased=True)


def active_units(z_means: torch.Tensor, threshold: float = 1e-2) -> int:
    """Number of latent dims with :func:`latent_activity` above ``threshold``.

    Burda, Grosse & Salakhutdinov (2015), section 5.2: a unit is active when
    :math:`A_u > 10^{-2}`.
    """
    return int((latent_activity(z_means) > threshold).sum())


def posterior_means(guide: Callable, *args: Any, site: str = "z", num_samples: int = 100,
                    **kwargs: Any) -> torch.Tensor:
    """:math:`\\mathbb E_q[z \\mid x]` per data point, ``[N, Z]``.

    Exact via ``guide.encode(x)[0]`` when the guide has ``encode`` (e.g.
    :class:`pgm_lab.guides.AmortizedNormal`); otherwise the average of ``num_samples``
    vectorized draws of the guide's site ``site``.
    """
    with torch.no_grad():
        if hasattr(guide, "encode"):
            return guide.encode(args[0])[0]  # x; guides ignore further model arguments
        mpn = guess_max_plate_nesting(guide, guide, args, kwargs)
        vec = pyro.plate(PARTICLE_PLATE, num_samples, dim=-(mpn + 1))(guide)
        with poutine.block():
            tr = poutine.trace(vec).get_trace(*args, **kwargs)
        if site not in tr.nodes:
            raise ConfigError(f"guide has no sample site {site!r}; pass site=<name>")
        return tr.nodes[site]["value"].mean(0)
