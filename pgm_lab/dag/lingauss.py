"""Exact inference and learning in linear-Gaussian networks (every node a :func:`gaussian`).

With :math:`x_i = b_i + \\sum_j W_{ij} x_j + \\sigma_i \\varepsilon_i` (``W`` strictly lower
triangular in topological order, :math:`\\varepsilon \\sim N(0, I)`), the joint is

.. math:: x \\sim N(\\mu, \\Sigma), \\quad \\mu = (I - W)^{-1} b, \\quad
    \\Sigma = (I - W)^{-1} \\operatorname{diag}(\\sigma^2) (I - W)^{-\\top},

and conditioning on observed :math:`x_e` is the Gaussian formula

.. math:: x_q \\mid x_e \\sim N\\big(\\mu_q + \\Sigma_{qe} \\Sigma_{ee}^{-1}(x_e - \\mu_e),\\
    \\Sigma_{qq} - \\Sigma_{qe} \\Sigma_{ee}^{-1} \\Sigma_{eq}\\big)

(one Cholesky factor of :math:`\\Sigma_{ee}`, shared by every evidence row), with
:math:`\\log p(x_e) = \\log N(x_e; \\mu_e, \\Sigma_{ee})`. Only the ancestors of the query and
evidence nodes are used (the rest is barren). Learning is least squares per node: the
maximum-likelihood :math:`(b_i, W_{i\\cdot})` regresses :math:`x_i` on its parents, and
:math:`\\hat\\sigma_i^2` is the mean squared residual.

References:
    R. D. Shachter and C. R. Kenley, "Gaussian influence diagrams", Management Science 35,
    1989. D. Koller and N. Friedman, *Probabilistic Graphical Models*, MIT Press 2009, 7.2.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from pyro.distributions import MultivariateNormal, Normal

from ..errors import DAGError, InferenceError
from .graph import ancestors
from .spec import ConditionalLinearGaussian, LinearGaussian, gaussian

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["fit_regression", "is_linear_gaussian", "joint_normal", "log_evidence",
           "posterior"]


def is_linear_gaussian(dag: DAG, names: Iterable[str]) -> bool:
    """Whether ``names`` and all their ancestors are linear-Gaussian nodes."""
    return all(isinstance(dag._spec[n], LinearGaussian) for n in ancestors(dag._parents, names))


def joint_normal(dag: DAG, names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[n]`` and covariance ``[n, n]`` (float64) of the joint normal of ``names`` (in
    topological order, closed under parents)."""
    pos = {v: i for i, v in enumerate(names)}
    n = len(names)
    w = torch.zeros(n, n, dtype=torch.float64)
    b = torch.zeros(n, dtype=torch.float64)
    s = torch.zeros(n, dtype=torch.float64)
    for v in names:
        nd = dag._spec[v]
        for p, c in zip(nd.parents, nd.coef):
            w[pos[v], pos[p]] = c
        b[pos[v]] = nd.intercept
        s[pos[v]] = nd.scale
    a = torch.linalg.solve_triangular(torch.eye(n, dtype=torch.float64) - w,
                                      torch.eye(n, dtype=torch.float64), upper=False)
    mean = a @ b
    cov = (a * s**2) @ a.T
    return mean, 0.5 * (cov + cov.T)


def _values(dag: DAG, evidence: Mapping[str, Any] | None
            ) -> tuple[dict[str, torch.Tensor], int | None]:
    """Evidence (merged with ``dag.evidence``) as float64 tensors ``[]`` or ``[B]``."""
    if evidence is not None and not isinstance(evidence, Mapping):
        raise DAGError(f"evidence must be a mapping name -> value, got "
                       f"{type(evidence).__name__}")
    raw = {**dag._evidence, **(evidence or {})}
    out, sizes = {}, set()
    for k, v in raw.items():
        dag._check_name(k)
        try:
            t = torch.as_tensor(v, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise DAGError(f"evidence on {k!r}: expected a number or a tensor [B], got {v!r}; "
                           "try torch.tensor([0.5, 1.0])") from exc
        if t.dim() > 1:
            raise DAGError(f"evidence on {k!r} must be a number or a tensor [B], got shape "
                           f"{tuple(t.shape)}")
        if t.dim() == 1:
            sizes.add(t.shape[0])
        out[k] = t
    if len(sizes) > 1:
        raise DAGError(f"expected one batch size B for all evidence tensors, got lengths "
                       f"{sorted(sizes)}; try tensors [B] of equal length")
    return out, (sizes.pop() if sizes else None)


def _split(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None):
    values, b = _values(dag, evidence)
    clash = [q for q in queries if q in values]
    if clash:
        raise DAGError(f"expected unobserved query nodes, got observed {clash}; its value is "
                       "known")
    if not is_linear_gaussian(dag, [*queries, *values]):
        bad = [n for n in ancestors(dag._parents, [*queries, *values])
               if not isinstance(dag._spec[n], LinearGaussian)]
        raise InferenceError(f"exact Gaussian inference needs linear-Gaussian nodes, got "
                             f"{sorted(bad)}; use log_evidence(..., method='importance')")
    keep = ancestors(dag._parents, [*queries, *values])
    names = [n for n in dag.nodes if n in keep]
    mean, cov = joint_normal(dag, names)
    e_idx = [names.index(k) for k in names if k in values]
    e_names = [names[i] for i in e_idx]
    x_e = (torch.stack([values[k].expand(b) for k in e_names], -1) if b is not None
           else torch.stack([values[k] for k in e_names])) if e_names else None
    return names, mean, cov, e_idx, x_e


def posterior(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None = None,
              joint: bool = False) -> dict[str, Normal] | MultivariateNormal:
    """Exact posterior of linear-Gaussian query nodes given continuous evidence.

    Returns:
        dict ``name -> Normal`` (batch shape ``[]`` or ``[B]``), or with ``joint=True`` one
        ``MultivariateNormal`` over the queries in the given order (event ``[k]``).

    Raises:
        DAGError: observed query nodes, malformed evidence.
        InferenceError: a query or evidence node or an ancestor is not linear-Gaussian.
    """
    names, mean, cov, e_idx, x_e = _split(dag, queries, evidence)
    q_idx = [names.index(q) for q in queries]
    loc, s = mean[q_idx], cov[q_idx][:, q_idx]
    if e_idx:
        chol = torch.linalg.cholesky(cov[e_idx][:, e_idx])
        gain = torch.cholesky_solve(cov[e_idx][:, q_idx], chol).T  # S_qe S_ee^-1  [k, m]
        loc = loc + (x_e - mean[e_idx]) @ gain.T
        s = s - gain @ cov[e_idx][:, q_idx]
        s = 0.5 * (s + s.T)
    if joint:
        return MultivariateNormal(loc, covariance_matrix=s.expand(*loc.shape[:-1], *s.shape))
    return {q: Normal(loc[..., i], s[i, i].sqrt().expand(loc.shape[:-1]))
            for i, q in enumerate(queries)}


def log_evidence(dag: DAG, evidence: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Exact :math:`\\log p(x_e)` (density), float64 ``[]`` or ``[B]``."""
    names, mean, cov, e_idx, x_e = _split(dag, [], evidence)
    if not e_idx:
        return torch.zeros((), dtype=torch.float64)
    return MultivariateNormal(mean[e_idx], covariance_matrix=cov[e_idx][:, e_idx]).log_prob(x_e)


def _least_squares(name: str, y: torch.Tensor, parents: list[torch.Tensor], where: str = ""
                   ) -> tuple[torch.Tensor, float]:
    """``(beta [1 + m], scale)``: intercept and weights of ``y`` on ``parents``, and the root
    mean squared residual."""
    x = torch.stack([torch.ones_like(y), *parents], -1)
    if x.shape[0] <= x.shape[1]:
        raise DAGError(f"fitting {name!r}{where} by least squares needs more than {x.shape[1]} "
                       f"rows, got {x.shape[0]}")
    beta = torch.linalg.lstsq(x, y.unsqueeze(-1)).solution.squeeze(-1)
    return beta, float((y - x @ beta).pow(2).mean().sqrt())


def fit_regression(dag: DAG, data: Mapping[str, Any]) -> DAG:
    """A new DAG with every (conditional) linear-Gaussian node refitted by least squares on
    ``data``; a :class:`~pgm_lab.dag.spec.ConditionalLinearGaussian` node gets one regression
    per configuration of its discrete parents, on the rows with that configuration.

    Args:
        data: ``name -> float values [N]`` for every node and parent refitted.

    Raises:
        DAGError: a node or parent missing from ``data``, rows of different lengths, fewer
            rows than a node's parents plus one (per discrete configuration).
    """
    spec = dict(dag._spec)
    fitted = [v for v in dag.nodes
              if isinstance(spec[v], (LinearGaussian, ConditionalLinearGaussian))]
    needed = list(dict.fromkeys(c for v in fitted for c in (v, *spec[v].parents)))
    missing = [c for c in needed if c not in data]
    if missing:
        raise DAGError(f"fitting the linear-Gaussian nodes needs data on {missing}; got "
                       f"columns {sorted(data)}")
    # discrete parents enter as their state indices (state names are encoded)
    cols = {k: dag._to_index(k, data[k]).to(torch.float64).reshape(-1) for k in needed}
    if len({c.shape[0] for c in cols.values()}) > 1:
        raise DAGError(f"data columns have different lengths "
                       f"{sorted({c.shape[0] for c in cols.values()})}; expected N rows each")
    for v in fitted:
        nd = spec[v]
        if isinstance(nd, LinearGaussian):
            beta, scale = _least_squares(v, cols[v], [cols[p] for p in nd.parents])
            spec[v] = gaussian(nd.parents, beta[1:], intercept=float(beta[0]), scale=scale)
            continue
        coef, intercept = torch.empty_like(nd.coef), torch.empty_like(nd.intercept)
        scale = torch.empty_like(nd.scale)
        for config in torch.cartesian_prod(*(torch.arange(c) for c in nd.intercept.shape)
                                           ).reshape(-1, len(nd.discrete)).tolist():
            rows = torch.ones_like(cols[v], dtype=torch.bool)
            for d, i in zip(nd.discrete, config):
                rows &= cols[d] == i
            where = f" where {dict(zip(nd.discrete, config))}"
            beta, sigma = _least_squares(v, cols[v][rows],
                                         [cols[p][rows] for p in nd.continuous], where)
            coef[tuple(config)], intercept[tuple(config)] = beta[1:], beta[0]
            scale[tuple(config)] = sigma
        spec[v] = gaussian(nd.parents, coef, intercept=intercept, scale=scale,
                           discrete=nd.discrete)
    return dag._derive(spec)
