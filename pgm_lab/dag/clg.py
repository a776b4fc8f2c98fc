"""Exact posteriors of discrete and continuous nodes in conditional linear-Gaussian (CLG)
networks.

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

The posterior of continuous queries :math:`x_q` is the mixture of the Gaussian conditionals
of the configurations, weighted by the discrete posterior,

.. math:: p(x_q \\mid x_e, d_e) = \\sum_d p(d \\mid x_e, d_e)\\,
    N\\big(x_q;\\ \\mu_{d,q} + \\Sigma_{d,qe} \\Sigma_{d,ee}^{-1} (x_e - \\mu_{d,e}),\\
    \\Sigma_{d,qq} - \\Sigma_{d,qe} \\Sigma_{d,ee}^{-1} \\Sigma_{d,eq}\\big),

exact (not the moment-matched single Gaussian that Lauritzen's propagation keeps in a clique
whose discrete variables are summed out; its mean and variance are the mixture's).

Reference:
    S. L. Lauritzen, "Propagation of probabilities, means and variances in mixed graphical
    association models", JASA 87, 1992. S. L. Lauritzen and F. Jensen, "Stable local
    computation with conditional Gaussian distributions", Statistics and Computing 11, 2001.
    D. Koller and N. Friedman, *Probabilistic Graphical Models*, MIT Press 2009, 14.3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from pyro.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

from ..errors import DAGError, InferenceError
from .graph import ancestors
from .spec import ConditionalLinearGaussian, LinearGaussian

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["MAX_CONFIGURATIONS", "check_shapes", "has_discrete", "is_hybrid", "log_evidence",
           "log_joint", "posterior"]

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


def has_discrete(dag: DAG, names: Sequence[str]) -> bool:
    """Whether a discrete node is among ``names`` and their ancestors."""
    info = dag._discrete()
    return any(info[n] is not None for n in ancestors(dag._parents, names))


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


class _Enumeration(NamedTuple):
    """The configurations of the relevant discrete nodes, and given each one the joint normal
    of the relevant continuous nodes (``C`` configurations, ``n`` continuous nodes)."""

    log_joint: torch.Tensor  # [*batch, C]: log p(d, e)
    disc: list[str]
    cards: list[int]
    cont: list[str]
    mean: torch.Tensor  # [C, n]
    cov: torch.Tensor  # [C, n, n]
    values: dict[str, torch.Tensor]
    batch: tuple[int, ...]


def _enumerate(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None
               ) -> _Enumeration:
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
                             f"nodes, got {bad}; use posterior(..., method='importance') for "
                             "discrete queries or log_evidence(..., method='importance')")
    cards = [info[n].card for n in disc]
    size = math.prod(cards)
    if size > MAX_CONFIGURATIONS:
        raise InferenceError(f"exact hybrid inference enumerates the {size} configurations of "
                             f"{disc}; expected at most {MAX_CONFIGURATIONS}; use "
                             "posterior(..., method='importance')")
    grid = (torch.cartesian_prod(*(torch.arange(c) for c in cards)).reshape(size, len(disc))
            if disc else torch.zeros(1, 0, dtype=torch.long))
    config = dict(zip(disc, grid.T))  # name -> state index [C]
    tables = dag.tables(disc)  # InferenceError for a discrete node with a continuous parent
    out = torch.zeros(*batch, size, dtype=torch.float64)
    for n in disc:
        idx = tuple(config[p] for p in dag._parents[n]) + (config[n],)
        out = out + tables[n][idx].log()
        if n in values:  # evidence [*batch] against the configurations [C]
            agree = values[n].unsqueeze(-1) == config[n]
            out = out.masked_fill(~agree, -math.inf)
    mean, cov = _normals(dag, cont, config, size)
    observed = [n for n in cont if n in values]
    if observed:
        e = [cont.index(n) for n in observed]
        x = torch.stack([values[n].expand(batch) for n in observed], -1)  # [*batch, m]
        mvn = MultivariateNormal(mean[:, e], covariance_matrix=cov[:, e][:, :, e])
        out = out + mvn.log_prob(x.unsqueeze(-2))
    return _Enumeration(out, disc, cards, cont, mean, cov, values, batch)


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
    en = _enumerate(dag, queries, evidence)
    return en.log_joint.reshape(*en.batch, *en.cards), en.disc


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


def _conditionals(en: _Enumeration, queries: Sequence[str]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per configuration, the Gaussian of the continuous ``queries`` given the continuous
    evidence: loc ``[*batch, C, k]`` and the Cholesky factor of its covariance ``[C, k, k]``.

    .. math:: \\mu_{q \\mid e} = \\mu_q + \\Sigma_{qe} \\Sigma_{ee}^{-1} (x_e - \\mu_e), \\quad
        \\Sigma_{q \\mid e} = \\Sigma_{qq} - V^\\top V, \\quad V = L^{-1} \\Sigma_{eq},
        \\quad L L^\\top = \\Sigma_{ee}
    """
    q = [en.cont.index(n) for n in queries]
    e = [i for i, n in enumerate(en.cont) if n in en.values]
    loc = en.mean[:, q].expand(*en.batch, -1, -1)  # [*batch, C, k]
    cov = en.cov[:, q][:, :, q]
    if e:
        chol = torch.linalg.cholesky(en.cov[:, e][:, :, e])  # [C, m, m]
        v = torch.linalg.solve_triangular(chol, en.cov[:, e][:, :, q], upper=False)
        x = torch.stack([en.values[en.cont[i]].expand(en.batch) for i in e], -1)
        r = torch.linalg.solve_triangular(chol, (x.unsqueeze(-2) - en.mean[:, e]).unsqueeze(-1),
                                          upper=False)  # L^-1 (x_e - mu_e)  [*batch, C, m, 1]
        loc = loc + (v.transpose(-1, -2) @ r).squeeze(-1)
        cov = cov - v.transpose(-1, -2) @ v
    chol_q, bad = torch.linalg.cholesky_ex(0.5 * (cov + cov.transpose(-1, -2)))
    if bool((bad != 0).any()):
        raise InferenceError(f"the conditional covariance of {list(queries)} is not positive "
                             "definite in float64 for some discrete configuration (scales too "
                             "small for the evidence?); expected gaussian() scales well above "
                             "the rounding error of the covariance")
    return loc, chol_q


def posterior(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None = None,
              joint: bool = False) -> dict[str, Any] | torch.Tensor | MixtureSameFamily:
    """Exact posterior of discrete and continuous ``queries`` given discrete and continuous
    evidence.

    A discrete query gets its probabilities. A continuous query gets the mixture over the
    ``C`` configurations :math:`d` of the relevant discrete nodes (see the module), with
    weights :math:`p(d \\mid e)` and the Gaussian of the query given :math:`d` and the
    continuous evidence as component, so its mean is :math:`\\sum_d p(d \\mid e)\\,
    \\mu_{d, q \\mid e}` and its variance adds the spread of the component means to their
    mean variance. Configurations the discrete evidence excludes keep weight zero.

    Args:
        queries: node names: all discrete, all continuous (:func:`~pgm_lab.dag.gaussian`), or
            a mix when ``joint=False``.
        evidence: ``name -> value`` (state names or indices for discrete nodes, numbers for
            continuous ones; tensors ``[B]`` batch the rows), merged with ``dag.evidence``.
        joint: one joint posterior of all queries instead of the marginals.

    Returns:
        dict ``name -> float64 probs [*batch, card]`` for a discrete query, ``name ->
        MixtureSameFamily(Categorical(logits [*batch, C]), Normal(loc [*batch, C], scale))``
        (batch shape ``[*batch]``, float64; ``.mixture_distribution.probs`` are the weights
        :math:`p(d \\mid e)`, given as log weights so that an excluded configuration has
        weight exactly zero in ``log_prob``) for a continuous one. With ``joint=True``, one
        tensor ``[*batch, card(q_1), ..., card(q_k)]`` for discrete queries, or for
        continuous ones one ``MixtureSameFamily`` of ``MultivariateNormal`` components with
        event ``[k]`` (queries in the given order).

    Raises:
        DAGError, InferenceError: as :func:`log_joint`.
        DAGError: evidence of density zero (every configuration excluded); ``joint=True``
            with discrete and continuous queries together, or a repeated continuous query.
        InferenceError: a conditional covariance that is not positive definite in float64.

    References:
        S. L. Lauritzen, JASA 87, 1992; S. L. Lauritzen and F. Jensen, Statistics and
        Computing 11, 2001.
    """
    for q in queries:
        dag._check_name(q)
    info = dag._discrete()
    cont_q = [q for q in queries if info[q] is None]
    disc_q = [q for q in queries if info[q] is not None]
    if joint and cont_q and disc_q:
        raise DAGError(f"a joint posterior of discrete and continuous queries is not "
                       f"supported: expected all discrete or all continuous queries with "
                       f"joint=True, got discrete {disc_q} and continuous {cont_q}; try "
                       "joint=False for the marginals, or the continuous queries jointly with "
                       "the discrete ones as evidence")
    if joint and len(set(cont_q)) < len(cont_q):
        raise DAGError(f"expected distinct continuous queries with joint=True, got {cont_q}; "
                       "try each name once")
    en = _enumerate(dag, queries, evidence)
    log_z = en.log_joint.logsumexp(-1)
    if bool((log_z == -math.inf).any()):
        raise DAGError("the evidence has probability zero under the network (no discrete "
                       "configuration agrees with it); check the discrete evidence")
    log_w = en.log_joint - log_z.unsqueeze(-1)  # [*batch, C]
    batch, disc = len(en.batch), en.disc
    post = log_w.exp().reshape(*en.batch, *en.cards)

    def marginal(names: Sequence[str]) -> torch.Tensor:
        axes = [batch + disc.index(q) for q in names]
        rest = [batch + i for i in range(len(disc)) if batch + i not in axes]
        out = post.sum(rest) if rest else post
        order = sorted(axes)
        return out.permute(*range(batch), *[batch + order.index(a) for a in axes])

    if joint and not cont_q:
        return marginal(list(queries))
    names = list(dict.fromkeys(cont_q))
    loc, chol = _conditionals(en, names) if names else (None, None)
    # log weights, not probs: Categorical(probs=) clamps its logits at log(eps), which would
    # give an excluded configuration the density eps * N(...) far in the tails
    mix = Categorical(logits=log_w)
    if joint:
        return MixtureSameFamily(mix, MultivariateNormal(loc, scale_tril=chol))
    out: dict[str, Any] = {}
    for q in dict.fromkeys(queries):
        if q in disc_q:
            out[q] = marginal([q])
        else:
            i = names.index(q)
            out[q] = MixtureSameFamily(mix, Normal(loc[..., i], chol[:, i, :].norm(dim=-1)))
    return out


def log_evidence(dag: DAG, evidence: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Exact :math:`\\log p(e)` (a density in the continuous evidence), float64 ``[*batch]``:
    the log-sum-exp of :func:`log_joint` over the configurations."""
    lj, disc = log_joint(dag, [], evidence)
    return lj.flatten(lj.dim() - len(disc)).logsumexp(-1)
