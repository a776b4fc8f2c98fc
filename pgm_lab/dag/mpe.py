"""Maximum a posteriori assignments of discrete DAGs: MPE and marginal MAP.

*Most probable explanation* (MPE): the joint state of every unobserved node with the largest
probability given the evidence,

.. math:: x^* = \\arg\\max_x p(x, e) = \\arg\\max_x \\sum_i \\log T_i[x_{\\mathrm{pa}(i)}, x_i],

by max-product variable elimination: the contraction of :mod:`pgm_lab.dag.exact` (same
path) in the (max, +) semiring of :mod:`pgm_lab.dag.maxplus`, on log tables. The argmax is
decoded from the gradient of the maximum with respect to zero log-indicators
:math:`\\log \\lambda_v` (one per unobserved variable): it is one at the maximizing state and
zero elsewhere.

*Marginal MAP* over a query set :math:`Q`: :math:`\\arg\\max_q \\sum_{h} p(q, h, e)`, the
other unobserved variables :math:`h` summed out. This is not the MPE restricted to
:math:`Q`, nor the per-variable argmax of the posterior marginals (either may differ from
it). It is exact here: one contraction gives the joint :math:`p(q, e)` over all query
states (cost exponential in :math:`|Q|`), maximized over them.

References:
    A. P. Dawid, "Applications of a general propagation algorithm for probabilistic expert
    systems", Statistics and Computing 2, 1992.
    J. D. Park and A. Darwiche, "Complexity results and approximation strategies for MAP
    explanations", JAIR 21, 2004.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DAGError
from .exact import _BATCH, _evidence, _expression, _factors, _normalize, _with_indicators, joint_log

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["map_assignment"]

_MAXPLUS = "pgm_lab.dag.maxplus"


def map_assignment(dag: DAG, evidence: Mapping[str, Any] | None = None,
                   query: str | Sequence[str] | None = None
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """MPE (``query=None``) or marginal MAP over ``query``, batched over evidence rows.

    Args:
        dag: a discrete DAG (every node with ``query=None``; else the query, observed nodes
            and their ancestors).
        evidence: ``name -> state``, index or index tensor ``[B]``; merged with
            ``dag.evidence``.
        query: ``None`` for the MPE over all unobserved nodes, or node names for the
            marginal MAP (the other unobserved nodes are summed out).

    Returns:
        ``(assignment, log_prob)``: ``assignment`` maps each maximized node to its state
        index, long ``[]`` or ``[B]``; ``log_prob`` is float64 ``[]`` or ``[B]``, the log
        joint :math:`\\log p(x^*, e)` (MPE) or :math:`\\log p(q^*, e)` (marginal MAP);
        subtract ``log_evidence(evidence)`` for the log posterior probability.

    Raises:
        DAGError: unknown nodes, evidence of probability zero (for any row).
        InferenceError: a node needed is not discrete.
    """
    if query is None:
        return _mpe(dag, evidence)
    queries = [query] if isinstance(query, str) else (
        list(query) if isinstance(query, Iterable) else None)
    if not queries or not all(isinstance(q, str) for q in queries):
        raise DAGError(f"expected query=None (MPE) or node names, got {query!r}; try "
                       "map(evidence, query=['a', 'b'])")
    log_joint = joint_log(dag, queries, evidence)
    lead = log_joint.shape[:log_joint.dim() - len(queries)]
    flat = log_joint.reshape(*lead, -1)
    _normalize(flat, ("batch",) if lead else ())  # impossible evidence
    log_prob, best = flat.max(-1)
    cards = log_joint.shape[len(lead):]
    idx = torch.unravel_index(best, cards)
    return {q: i.long() for q, i in zip(queries, idx)}, log_prob


def _mpe(dag: DAG, evidence: Mapping[str, Any] | None
         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    scalar, batched, b = _evidence(dag, evidence)
    observed = set(scalar) | set(batched)
    dag.tables()  # every node takes part in the maximum
    free = [n for n in dag.nodes if n not in observed]
    factors, _ = _factors(dag, dag.nodes, scalar, batched)
    batch_out = (_BATCH,) if b is not None else ()
    with torch.enable_grad():
        logs = [(t.log(), names) for t, names in factors]
        logs, lams = _with_indicators(logs, dag.nodes, free, b, log=True)
        expr = _expression(dag, logs, batch_out)
        best = expr(*(t for t, _ in logs), backend=_MAXPLUS)
        _normalize(best.detach().unsqueeze(-1), batch_out)  # impossible evidence
        grads = torch.autograd.grad(best.sum(), lams) if free else []
    lead = 1 if b is not None else 0
    return ({v: g.reshape(*g.shape[:lead], -1).argmax(-1) for v, g in zip(free, grads)},
            best.detach())
