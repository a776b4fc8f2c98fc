"""Exact posteriors of discrete nodes in conditional linear-Gaussian (CLG) networks.

In a CLG network (Lauritzen 1992) discrete nodes have discrete parents only, and each
continuous node is :func:`~pgm_lab.dag.gaussian` given its parents. Given one configuration
:math:`d` of the discrete nodes the continuous ones are jointly normal,
:math:`x \\mid d \\sim N(\\mu_d, \\Sigma_d)` (:func:`~pgm_lab.dag.lingauss.joint_normal`
with the coefficients that :math:`d` selects), so

.. math:: p(d \\mid x_e, d_e) \\propto p(d)\\, N(x_e; \\mu_{d,e}, \\Sigma_{d,ee})\\,
    [d \\text{ agrees with } d_e],

computed here by enumerating the configurations of the discrete ancestors of the query and
evidence, at most ``MAX_CONFIGURATIONS`` of them: one batched Cholesky factor per
configuration, shared by every evidence row. A linear-Gaussian node whose discrete parent
enters as a number adds ``w * index`` to its mean.

Reference:
    S. L. Lauritzen, "Propagation of probabilities, means and variances in mixed graphical
    association models", JASA 87, 1992. D. Koller and N. Friedman, *Probabilistic Graphical
    Models*, MIT Press 2009, 14.3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions import MultivariateNormal

from ..errors import DAGError, InferenceError
from .graph import ancestors
from .spec import ConditionalLinearGaussian, LinearGaussian

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["MAX_CONFIGURATIONS", "check_shapes", "is_hybrid", "log_evidence", "log_joint",
           "posterior"]

MAX_CONFIGURATIONS = 1 << 16
"""The most discrete configurations :func:`log_joint` enumerates."""

_GAUSSIAN = (LinearGaussian, ConditionalLinearGaussian)


def check_shapes(dag: DAG) -> None:
    """Check every CLG node's tables against its discrete parents' states.

    Raises:
        DAGError: a parent named ``discrete`` is not a discrete node, or ``coef`` does not have
            shape ``[card(d_1), ..., card(d_k), m]``.
    """
    info = None
    for name in dag.nodes:
        nd = dag._spec[name]
        if not isinstance(nd, ConditionalLinearGaussian):
            continue
        info = dag._discrete() if info is None else info
        cont = [d for d in nd.discrete if info[d] is None]
        if cont:
            raise DAGError(f"gaussian node {name!r}: expected discrete parents in discrete=, "
                           f"got continuous {cont}; try listing them in parents only")
        want = (*(info[d].card for d in nd.discrete), len(nd.continuous))
        if tuple(nd.coef.shape) != want:
            raise DAGError(f"gaussian node {name!r}: expected coef of shape {want} "
                           f"([card({'), card('.join(nd.discrete)}), {len(nd.continuous)}]), got "
                           f"{tuple(nd.coef.shape)}")


def is_hybrid(dag: DAG, names: Sequence[str]) -> bool:
    """Whether a Gaussian node is among ``names`` and their ancestors."""
    return any(isinstance(dag._spec[n], _GAUSSIAN) for n in ancestors(dag._parents, names))


def _evidence(dag: DAG, evidence: Mapping[str, Any] | None
              ) -> tuple[dict[str, torch.Tensor], tuple[int, ...]]:
    if evidence is not None and not isinstance(evidence, Mapping):
        raise DAGError(f"evidence must be a mapping name -> value, got "
                       f"{type(evidence).__name__}")
    out = {}
    for k, v in {**dag._evidence, **(evidence or {})}.items():
        if dag.is_discrete(k) or isinstance(v, (str, torch.Tensor)):
            t = dag._to_index(k, v)  # checks names and states
            out[k] = t if dag.is_discrete(k) else t.to(torch.float64)
        else:  # numbers straight to float64, not through the default dtype
            try:
                out[k] = torch.as_tensor(v, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise DAGError(f"evidence on {k!r}: expected a number or a tensor [B], got "
                               f"{v!r}; try torch.tensor([0.5, 1.0])") from exc
        if out[k].dim() > 1:
            raise DAGError(f"evidence on {k!r} must be a value or a tensor [B], got shape "
                           f"{tuple(out[k].shape)}")
    sizes = {t.shape[0] for t in out.values() if t.dim() == 1}
    if len(sizes) > 1:
        raise DAGError(f"expected one batch size B for all evidence tensors, got lengths "
                       f"{sorted(sizes)}; try tensors [B] of equal length")
    return out, tuple(sizes)


def log_joint(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None = None
              ) -> tuple[torch.Tensor, list[str]]:
    """:math:`\\log p(d, e)` on the grid of the discrete ancestors of queries and evidence.

    Returns:
        float64 ``[*batch, card(d_1), ..., card(d_n)]`` and the names ``d_1 ... d_n``
        (topological order).

    Raises:
        DAGError: a query is observed or unknown; malformed evidence.
        InferenceError: a relevant continuous node is not :func:`~pgm_lab.dag.gaussian`, a
            discrete node has a continuous parent, or more than ``MAX_CONFIGURATIONS``
            configurations.
    """
    values, batch = _evidence(dag, evidence)
    for q in queries:
        dag._check_name(q)
    clash = [q for q in queries if q in values]
    if clash:
        raise DAGError(f"expected unobserved query nodes, got observed {clash}; its value is "
                       "known")
    keep = ancestors(dag._parents, [*queries, *values])
    info = dag._discrete()
    disc = [n for n in dag.nodes if n in keep and info[n] is not None]
    cont = [n for n in dag.nodes if n in keep and info[n] is None]
    bad = [n for n in cont if not isinstance(dag._spec[n], _GAUSSIAN)]
    if bad:
        raise InferenceError(f"exact inference in hybrid networks needs gaussian() continuous "
                             f"nodes, got {bad}; use posterior(..., method='importance')")
    cards = [info[n].card for n in disc]
    size = math.prod(cards)
    if size > MAX_CONFIGURATIONS:
        raise InferenceError(f"exact hybrid inference enumerates the {size} configurations of "
                             f"{disc}; expected at most {MAX_CONFIGURATIONS}; use "
                             "posterior(..., method='importance')")
    grid = torch.cartesian_prod(*(torch.arange(c) for c in cards)).reshape(size, len(disc))
    config = dict(zip(disc, grid.T))  # name -> state index [C]
    tables = dag.tables(disc)  # InferenceError for a discrete node with a continuous parent
    out = torch.zeros(*batch, size, dtype=torch.float64)
    for n in disc:
        idx = tuple(config[p] for p in dag._parents[n]) + (config[n],)
        out = out + tables[n][idx].log()
        if n in values:  # evidence [*batch] against the configurations [C]
            agree = values[n].unsqueeze(-1) == config[n]
            out = out.masked_fill(~agree, -math.inf)
    observed = [n for n in cont if n in values]
    if observed:
        mean, cov = _normals(dag, cont, config, size)
        e = [cont.index(n) for n in observed]
        x = torch.stack([values[n].expand(batch) for n in observed], -1)  # [*batch, m]
        mvn = MultivariateNormal(mean[:, e], covariance_matrix=cov[:, e][:, :, e])
        out = out + mvn.log_prob(x.unsqueeze(-2))
    return out.reshape(*batch, *cards), disc


def _normals(dag: DAG, cont: list[str], config: Mapping[str, torch.Tensor], size: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[C, n]`` and covariance ``[C, n, n]`` of ``cont`` given each configuration."""
    n = len(cont)
    pos = {v: i for i, v in enumerate(cont)}
    w = torch.zeros(size, n, n, dtype=torch.float64)
    b = torch.zeros(size, n, dtype=torch.float64)
    s = torch.zeros(size, n, dtype=torch.float64)
    for v in cont:
        nd = dag._spec[v]
        if isinstance(nd, ConditionalLinearGaussian):
            row = tuple(config[d] for d in nd.discrete)
            coef, b[:, pos[v]], s[:, pos[v]] = nd.coef[row], nd.intercept[row], nd.scale[row]
            parents = nd.continuous
        else:
            coef = nd.coef.expand(size, -1)
            b[:, pos[v]], s[:, pos[v]] = nd.intercept, nd.scale
            parents = nd.parents
        for j, p in enumerate(parents):
            if p in pos:
                w[:, pos[v], pos[p]] = coef[:, j]
            else:  # a discrete parent entering as its state index
                b[:, pos[v]] += coef[:, j] * config[p].to(torch.float64)
    eye = torch.eye(n, dtype=torch.float64)
    a = torch.linalg.solve_triangular(eye - w, eye.expand(size, n, n), upper=False)
    cov = (a * s.unsqueeze(-2) ** 2) @ a.transpose(-1, -2)
    return (a @ b.unsqueeze(-1)).squeeze(-1), 0.5 * (cov + cov.transpose(-1, -2))


def posterior(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None = None,
              joint: bool = False) -> dict[str, torch.Tensor] | torch.Tensor:
    """Exact posterior of discrete ``queries`` given discrete and continuous evidence.

    Returns:
        dict ``name -> float64 probs [*batch, card]``, or with ``joint=True`` one tensor
        ``[*batch, card(q_1), ..., card(q_k)]``.

    Raises:
        DAGError, InferenceError: as :func:`log_joint`; a query that is not discrete.
        DAGError: evidence of density zero (every configuration excluded).
    """
    for q in queries:
        dag.states(q)  # DAGError for a continuous query
    lj, disc = log_joint(dag, queries, evidence)
    batch = lj.dim() - len(disc)
    log_z = lj.flatten(batch).logsumexp(-1)
    if bool((log_z == -math.inf).any()):
        raise DAGError("the evidence has probability zero under the network (no discrete "
                       "configuration agrees with it); check the discrete evidence")
    post = (lj - log_z.reshape(*log_z.shape, *[1] * len(disc))).exp()

    def marginal(names: Sequence[str]) -> torch.Tensor:
        axes = [batch + disc.index(q) for q in names]
        rest = [batch + i for i in range(len(disc)) if batch + i not in axes]
        out = post.sum(rest) if rest else post
        order = sorted(axes)
        return out.permute(*range(batch), *[batch + order.index(a) for a in axes])

    if joint:
        return marginal(list(queries))
    return {q: marginal([q]) for q in dict.fromkeys(queries)}


def log_evidence(dag: DAG, evidence: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Exact :math:`\\log p(e)` (a density in the continuous evidence), float64 ``[*batch]``:
    the log-sum-exp of :func:`log_joint` over the configurations."""
    lj, disc = log_joint(dag, [], evidence)
    return lj.flatten(lj.dim() - len(disc)).logsumexp(-1)
