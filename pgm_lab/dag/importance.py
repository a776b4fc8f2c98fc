"""Importance-sampling estimates of the log evidence of a DAG (any node types), and of
discrete posteriors given any evidence (:func:`importance_posterior`).

With proposals :math:`z_k \\sim q`, the estimator and its delta-method standard error are

.. math::

    \\hat p(e) = \\frac{1}{K} \\sum_{k=1}^K w_k, \\quad
    w_k = \\frac{p(z_k, e)}{q(z_k)}, \\quad
    \\mathrm{se}(\\log \\hat p(e)) \\approx \\frac{\\mathrm{sd}(w)}{\\sqrt{K}\\,\\bar w},
    \\quad \\mathrm{ESS} = \\frac{(\\sum_k w_k)^2}{\\sum_k w_k^2}.

With the prior as proposal (likelihood weighting) the latent nodes are drawn by vectorized
ancestral sampling with observed nodes clamped, and
:math:`w_k = \\prod_{i \\in e} p(e_i \\mid \\mathrm{pa}(e_i))`. With a user guide, the guide
and the conditioned model run once inside a vectorized ``pyro.plate("particles", K)`` and
the weights come from their traces.

The weights are formed in log space end to end: discrete conditionals built from ``probs``
are scored by :func:`~pgm_lab.dag.logprob.exact_log_prob` (torch's ``log_prob`` clamps
probabilities at machine epsilon, so ``p(e) = 1e-300`` would score ``-36.04``), and the
average is a log-sum-exp. Evidence that no particle can produce (every weight zero, e.g.
evidence of probability zero) is an error, not a number.

References:
    R. Fung and K.-C. Chang, "Weighing and integrating evidence for stochastic simulation in
    Bayesian networks", UAI 1989. A. Kong, "A note on importance sampling using standardized
    weights", 1992 (effective sample size).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask

from ..errors import ConfigError, DAGError, InferenceError
from .logprob import exact_log_prob
from .util import forked_rng, positive_int

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["ImportanceResult", "PosteriorEstimate", "importance_log_evidence",
           "importance_posterior"]


class ImportanceResult(NamedTuple):
    """Result of :func:`importance_log_evidence`; fields have shape ``[*batch]``.

    Attributes:
        log_evidence: the estimate :math:`\\log \\hat p(e)` (float64).
        stderr: delta-method standard error of ``log_evidence``.
        ess: effective sample size of the normalized weights.
        log_weights: ``[K, *batch]`` log importance weights.
    """

    log_evidence: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    log_weights: torch.Tensor


def summarize(log_w: torch.Tensor) -> ImportanceResult:
    """Estimate, standard error and ESS from log weights ``[K, *batch]``.

    Raises:
        InferenceError: for an evidence row whose ``K`` weights are all zero (impossible
            evidence, or a proposal that never produces it), or a NaN / infinite weight.
    """
    k = log_w.shape[0]
    best = log_w.max(0).values
    if bool((log_w.isnan() | (log_w == math.inf)).any()):
        raise InferenceError("expected finite log importance weights, got NaN or +inf (a "
                             "guide that proposes values where its density is zero or "
                             "undefined?); try a guide whose support covers the model's")
    if bool((best == -math.inf).any()):
        rows = torch.nonzero((best == -math.inf).reshape(-1)).reshape(-1)[:5].tolist()
        where = f" (evidence rows {rows})" if best.dim() else ""
        raise InferenceError(
            f"expected evidence that some particle produces, got all {k} importance weights "
            f"zero{where}: the evidence has probability zero under the network, or the "
            "proposal never produces it; try log_evidence(evidence) for the exact value of a "
            "discrete network, or a guide proposing states where the evidence is possible")
    m = log_w.max(0, keepdim=True).values
    w = (log_w - m).exp()
    mean = w.mean(0)
    est = mean.log() + m.squeeze(0)
    sd = w.std(0) if k > 1 else torch.full_like(mean, math.inf)
    stderr = sd / (math.sqrt(k) * mean)
    ess = w.sum(0) ** 2 / (w**2).sum(0)
    return ImportanceResult(est, stderr, ess, log_w)


def _observed(cond: DAG, example: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """The observed values of ``cond`` and their common batch size ``B`` (``None``: every
    value is a scalar); DAGError without evidence (suggesting ``example``) or with evidence
    tensors of different lengths."""
    if not cond._evidence:
        raise DAGError("importance sampling needs evidence: expected at least one observed "
                       f"node, got none; try {example}")
    obs = {k: cond._to_value(k, v) for k, v in cond._evidence.items()}
    sizes = cond._batch_sizes(obs)
    if len(sizes) > 1:
        raise DAGError(f"expected one batch size B for all evidence tensors, got lengths "
                       f"{sorted(sizes)}; try tensors [B] of equal length")
    return obs, (sizes.pop() if sizes else None)


def importance_log_evidence(dag: DAG, evidence: Mapping[str, Any] | None = None, *,
                            num_samples: int = 1000, guide: Callable | None = None,
                            seed: int | None = None) -> ImportanceResult:
    """Importance-sampling estimate of :math:`\\log p(e)` with its error.

    Args:
        dag: any DAG (discrete, continuous or mixed).
        evidence: ``name -> value`` merged with ``dag.evidence``; a tensor ``[B, ...]`` gives
            ``B`` independent estimates in one vectorized pass.
        num_samples: ``K`` particles per evidence row.
        guide: ``None`` for the prior proposal (likelihood weighting), or a Pyro callable
            called with no arguments that samples every unobserved node by name (inside
            ``pyro.plate("data", B)`` for batched evidence).
        seed: seeds a forked torch RNG.

    Returns:
        :class:`ImportanceResult` with fields of shape ``[]`` or ``[B]``.
    """
    num_samples = positive_int(num_samples, "num_samples", ConfigError)
    cond = dag.condition(evidence or {})
    obs, b = _observed(cond, "log_evidence({'node': value}, method='importance')")
    with forked_rng(seed):
        if guide is None:
            shape = (num_samples,) if b is None else (num_samples, b)
            with torch.no_grad():
                _, log_w = cond._ancestral(shape, obs)
        else:
            log_w = _guided_log_weights(cond, guide, num_samples)
            log_w = log_w.reshape(num_samples, -1)
            log_w = log_w[:, 0] if b is None else log_w
    return summarize(log_w.detach().to(torch.float64))


def _guided_log_weights(cond: DAG, guide: Callable, k: int) -> torch.Tensor:
    # Pyro's vectorized_importance_weights sums over the data plate; we need one weight per
    # evidence row, so we trace both programs in a particle plate and sum per row ourselves.
    with torch.no_grad(), pyro.plate("particles", k, dim=-2):
        guide_tr = poutine.trace(guide).get_trace()
        model_tr = poutine.trace(poutine.replay(cond.model, trace=guide_tr)).get_trace()
    missing = [n for n in cond.nodes if n not in cond._evidence
               and n not in guide_tr.nodes]
    if missing:
        raise DAGError(f"the guide must sample every unobserved node; it does not sample "
                       f"{missing}")
    total = torch.zeros(k, 1, dtype=torch.float64)
    for tr, sign in ((model_tr, 1.0), (guide_tr, -1.0)):
        for site in tr.nodes.values():
            if site["type"] == "sample":
                lp = exact_log_prob(site["fn"], site["value"])
                lp = scale_and_mask(lp, site["scale"], site["mask"])
                total = total + sign * lp.to(torch.float64)
    return total


class PosteriorEstimate(NamedTuple):
    """Result of :func:`importance_posterior`; ``probs`` and ``stderr`` are
    ``[*batch, card]``, ``ess`` is ``[*batch]``."""

    probs: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor


def importance_posterior(dag: DAG, query: str, evidence: Mapping[str, Any] | None = None, *,
                         num_samples: int = 10_000, seed: int | None = None
                         ) -> PosteriorEstimate:
    """Posterior of a discrete node given any evidence (continuous included) by likelihood
    weighting, self-normalized:

    .. math:: \\hat p(q = c \\mid e) = \\frac{\\sum_k w_k\\, [q_k = c]}{\\sum_k w_k}, \\quad
        \\mathrm{se}^2 \\approx \\frac{\\sum_k w_k^2 ([q_k = c] - \\hat p)^2}{(\\sum_k w_k)^2}

    (the delta method for a ratio whose numerator and denominator share the particles).
    Unlike ``exp(log p(q, e) - log p(e))`` from two independent estimates, it is a
    probability vector by construction.

    Args:
        dag: any DAG whose ``query`` node is discrete.
        query: one node name.
        evidence: ``name -> value`` merged with ``dag.evidence``; tensors ``[B, ...]`` give
            ``B`` rows in one vectorized pass.
        num_samples: ``K`` particles per row; seed: seeds a forked torch RNG.

    Raises:
        DAGError: ``query`` unknown, not discrete, or observed; no evidence.
        InferenceError: every weight of a row is zero.

    Reference:
        R. Fung and K.-C. Chang, UAI 1989; A. B. Owen, *Monte Carlo theory, methods and
        examples*, 2013, ch. 9 (self-normalized importance sampling).
    """
    if not isinstance(query, str):
        raise DAGError(f"expected one query node name, got {query!r}; try "
                       "posterior('a', evidence, method='importance')")
    card = len(dag.states(query))  # DAGError if unknown or not discrete
    cond = dag.condition(evidence or {})
    if query in cond._evidence:
        raise DAGError(f"expected an unobserved query node, got observed {query!r}")
    obs, b = _observed(cond, "posterior('a', {'b': 0.3}, method='importance')")
    num_samples = positive_int(num_samples, "num_samples", ConfigError)
    shape = (num_samples,) if b is None else (num_samples, b)
    with forked_rng(seed), torch.no_grad():
        values, log_w = cond._ancestral(shape, obs)
    summarize(log_w)  # raises for rows without a nonzero weight
    w = (log_w - log_w.max(0, keepdim=True).values).exp()  # [K, *batch]
    hot = torch.nn.functional.one_hot(values[query].long(), card).to(torch.float64)
    total = w.sum(0)
    probs = (w.unsqueeze(-1) * hot).sum(0) / total.unsqueeze(-1)
    var = (w.unsqueeze(-1) ** 2 * (hot - probs) ** 2).sum(0) / total.unsqueeze(-1) ** 2
    return PosteriorEstimate(probs, var.sqrt(), total**2 / (w**2).sum(0))
