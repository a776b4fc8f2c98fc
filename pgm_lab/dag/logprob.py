"""Log-probabilities of discrete conditionals without clamping at machine epsilon.

``torch.distributions`` evaluates ``Categorical(probs=p).log_prob`` and
``Bernoulli(probs=p).log_prob`` through logits derived from probabilities clamped to
:math:`[\\epsilon, 1 - \\epsilon]` (``probs_to_logits``), so :math:`p = 10^{-300}` scores
:math:`\\log \\epsilon = -36.04` instead of :math:`-690.78`, and :math:`p = 0` scores
:math:`-36.04` instead of :math:`-\\infty`. :func:`exact_log_prob` takes the logarithm of the
probabilities themselves when a distribution was built from them:

.. math::

    \\log \\mathrm{Cat}(v; p) = \\log p_v, \\qquad
    \\log \\mathrm{Bern}(v; p) = v \\log p + (1 - v) \\log(1 - p) \\quad (v \\in \\{0, 1\\}).
"""

from __future__ import annotations

import torch
from pyro.distributions.util import sum_rightmost
from torch.distributions import Bernoulli, Categorical, Distribution, Independent
from torch.distributions.utils import broadcast_all

__all__ = ["exact_log_prob"]


def exact_log_prob(d: Distribution, value: torch.Tensor) -> torch.Tensor:
    """``d.log_prob(value)``, exact for ``Categorical`` / ``Bernoulli`` built from ``probs``.

    Args:
        d: any torch / Pyro distribution; ``Independent`` wrappers (``.to_event``) are
            unwrapped. Distributions built from ``logits``, and all other families, are
            evaluated by their own ``log_prob``.
        value: a value of ``d``, broadcastable against its batch shape.

    Returns:
        tensor of shape ``broadcast(value.shape[:-event_dim], d.batch_shape)``, in the
        probabilities' dtype; ``-inf`` where the probability is zero.
    """
    if isinstance(d, Independent):
        return sum_rightmost(exact_log_prob(d.base_dist, value), d.reinterpreted_batch_ndims)
    built_from_probs = d.__dict__.get("probs") is getattr(d, "_param", None)
    if not built_from_probs or not isinstance(d, (Categorical, Bernoulli)):
        return d.log_prob(value)
    if d._validate_args:
        d._validate_sample(value)
    if isinstance(d, Bernoulli):
        probs, value = broadcast_all(d.probs, value)
        return torch.where(value == 1, probs.log(), (-probs).log1p())
    value = value.long().unsqueeze(-1)
    value, log_pmf = torch.broadcast_tensors(value, d.probs.log())  # probs are normalized
    return log_pmf.gather(-1, value[..., :1]).squeeze(-1)
