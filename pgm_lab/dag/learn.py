"""Learning the conditionals of a DAG from data.

Two routes, chosen by ``method``:

- ``"counts"`` (closed form): every :func:`~pgm_lab.dag.cpt` node and every discrete root
  (``Bernoulli`` / ``Categorical``) is re-estimated from the rows of a fully observed
  dataset, by maximum likelihood or, with Dirichlet pseudo-counts :math:`\\alpha`, by the
  posterior mean

  .. math:: \\hat\\theta_{x \\mid u} = \\frac{N(x, u) + \\alpha}{N(u) + K \\alpha},

  where :math:`N(x, u)` counts rows with node value ``x`` and parent configuration ``u``.
  A configuration never seen (with :math:`\\alpha = 0`) gets the uniform row.
- ``"em"``: the same tables when some table nodes are hidden (columns absent from the
  data), by expectation-maximization. The E-step's expected counts
  :math:`\\sum_r p(x, u \\mid e_r)` of each family come from one batched exact contraction
  over all rows (:mod:`pgm_lab.dag.exact`); the M-step is the closed form above. Starts from
  the DAG's current tables, which must not be symmetric in a hidden node's states.
- ``"svi"``: conditionals with learnable parameters (``pyro.param`` or ``PyroModule`` inside
  callables) are trained by :func:`pgm_lab.train.fit` on ``dag.model`` with the data
  observed. Unobserved continuous nodes get an ``AutoNormal`` guide; unobserved discrete
  nodes are enumerated exactly with ``TraceEnum_ELBO``. SVI updates only the Pyro parameters
  that model and guide visit, so both are traced once before training
  (``_check_trainable``): a conditional that depends on tensors requiring grad that are
  not Pyro parameters (a plain ``torch.nn.Linear``, never ``pyro.module``'d) is refused, as
  is a fit with no parameter at all; fixed conditionals next to learnable ones are fine.

References:
    D. Heckerman, D. Geiger and D. M. Chickering, "Learning Bayesian networks: the
    combination of knowledge and statistical data", Machine Learning 20, 1995.
    A. P. Dempster, N. M. Laird and D. B. Rubin, "Maximum likelihood from incomplete data
    via the EM algorithm", JRSS B 39, 1977. S. L. Lauritzen, "The EM algorithm for graphical
    association models with missing data", CSDA 19, 1995.
    D. Koller and N. Friedman, *Probabilistic Graphical Models*, MIT Press 2009, ch. 17.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate
from pyro.infer.autoguide import AutoNormal

from ..errors import ConfigError, DAGError
from .exact import _BATCH, _contract, _factors
from .graph import ancestors
from .lingauss import fit_regression
from .spec import CPT, ConditionalLinearGaussian, LinearGaussian, Node

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["fit", "learnable_by_counts"]


def learnable_by_counts(dag: DAG) -> list[str]:
    """Nodes whose table :func:`fit` re-estimates in closed form (CPTs, discrete roots).

    Intervened nodes (:meth:`~pgm_lab.dag.DAG.do`) are constants, not learned: their one-hot
    tables are kept.
    """
    out = []
    for n in dag.nodes:
        if n in dag._interventions:
            continue
        nd = dag.spec[n]
        if isinstance(nd, CPT) or (isinstance(nd, Node) and nd.root is not None
                                   and dag._static_discrete(n) is not None):
            out.append(n)
    return out


def fit(dag: DAG, data: Mapping[str, Any], *, method: str = "auto",
        pseudo_count: float | torch.Tensor = 0.0, guide: Callable | None = None,
        max_iter: int = 100, tol: float = 1e-9, **svi_kwargs: Any) -> DAG:
    """Fit the DAG's conditionals to ``data``.

    Args:
        dag: the DAG (left unchanged by ``"counts"``).
        data: ``name -> values [N]`` (state names or indices for discrete nodes).
        method: ``"counts"``, ``"em"``, ``"regression"`` (least squares for
            :func:`~pgm_lab.dag.gaussian` nodes, :func:`pgm_lab.dag.lingauss.fit_regression`),
            ``"closed-form"`` (both: counts for the tables, least squares for the
            linear-Gaussian nodes), ``"svi"``, or ``"auto"`` -- counts when every node is a
            table (CPT or discrete root), regression when every node is linear-Gaussian,
            closed-form when every node is one or the other, else SVI.
        pseudo_count: Dirichlet pseudo-count :math:`\\alpha \\ge 0` added to every cell
            (``"counts"``); a float, or a mapping ``name -> tensor`` broadcastable to the table.
        guide: ``"svi"`` only; default ``AutoNormal`` over unobserved continuous nodes.
        max_iter, tol: ``"em"`` only; stop after ``max_iter`` updates or when an update
            gains less than ``tol`` (relative) in log-likelihood.
        **svi_kwargs: passed to :func:`pgm_lab.train.fit` (``epochs``, ``optim``, ``loss``,
            ``batch_size`` (default: all rows), ``seed``, ``progress``...).

    Returns:
        ``"counts"``: a new :class:`~pgm_lab.dag.DAG` with the estimated tables.
        ``"regression"``, ``"closed-form"``: a new DAG with the least-squares
        linear-Gaussian nodes (and, for ``"closed-form"``, the counts tables).
        ``"em"``: a new DAG; ``log_likelihood_`` lists the data log-likelihood of the initial
        and of every updated set of tables (non-decreasing; the last is the returned DAG's).
        ``"svi"``: ``dag`` itself (its parameters live in Pyro's param store and modules),
        with the training :class:`~pgm_lab.train.History` in ``dag.history_``.

    Raises:
        DAGError: unknown nodes, rows of different lengths, or (counts) a learnable node or
            one of its parents missing from ``data``.
        ConfigError: (svi) a conditional or the guide depends on trainable tensors that are
            not Pyro parameters, or there is no parameter to train.
    """
    if not isinstance(data, Mapping) or not data:
        raise DAGError(f"data must be a non-empty mapping name -> values [N], got "
                       f"{type(data).__name__}")
    for k in data:
        dag._check_name(k)
    if method == "auto":
        # all-table networks have no Pyro parameters for SVI to train: counts (which needs
        # complete data and says so); linear-Gaussian ones: least squares; else SVI
        gaussian = {n for n in dag.nodes
                    if isinstance(dag.spec[n], (LinearGaussian, ConditionalLinearGaussian))}
        closed = set(learnable_by_counts(dag)) | set(dag._interventions) | gaussian
        method = ("counts" if _all_tables(dag) else
                  "regression" if gaussian == set(dag.nodes) else
                  "closed-form" if closed == set(dag.nodes) else "svi")
    if method == "regression":
        return fit_regression(dag, data)
    if method == "closed-form":  # tables by counts, linear-Gaussian nodes by least squares
        return fit_regression(_fit_counts(dag, data, pseudo_count), data)
    if method == "counts":
        return _fit_counts(dag, data, pseudo_count)
    if method == "em":
        return _fit_em(dag, data, pseudo_count, max_iter, tol)
    if method == "svi":
        if not (isinstance(pseudo_count, (int, float)) and pseudo_count == 0):
            raise ConfigError(f"pseudo_count applies to method='counts' and 'em': expected "
                              f"pseudo_count=0 with method='svi', got {pseudo_count!r}; try "
                              "a prior inside the conditionals")
        return _fit_svi(dag, data, guide, svi_kwargs)
    raise ConfigError(f"method must be 'auto', 'counts', 'em', 'regression', 'closed-form' or "
                      f"'svi', got {method!r}")


def _all_tables(dag: DAG) -> bool:
    """Every node is learnable by counts or fixed by an intervention."""
    return set(learnable_by_counts(dag)) | set(dag._interventions) == set(dag.nodes)


def _columns(dag: DAG, data: Mapping[str, Any], names: list[str]) -> dict[str, torch.Tensor]:
    cols = {k: dag._to_index(k, data[k]) for k in names}
    sizes = {int(v.shape[0]) if v.dim() else 0 for v in cols.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise DAGError(f"data columns must be tensors [N] with one N; got lengths "
                       f"{ {k: tuple(v.shape) for k, v in cols.items()} }")
    return cols


def _alpha(pseudo_count: Any, name: str) -> torch.Tensor:
    alpha = pseudo_count.get(name, 0.0) if isinstance(pseudo_count, Mapping) else pseudo_count
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    if not bool(((alpha >= 0) & torch.isfinite(alpha)).all()):
        raise ConfigError(f"expected a finite pseudo_count >= 0, got {alpha}; try "
                          "pseudo_count=1.0 (Laplace smoothing)")
    return alpha


def _estimate(counts: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    counts = counts + alpha
    total = counts.sum(-1, keepdim=True)
    return torch.where(total > 0, counts / total.clamp_min(1e-300),
                       torch.full_like(counts, 1.0 / counts.shape[-1]))


def _with_table(nd: Node | CPT, est: torch.Tensor) -> Node | CPT:
    if isinstance(nd, CPT):
        return CPT(nd.parents, est, nd.states, nd.parent_states, nd.properties)
    if isinstance(nd.root, dist.Bernoulli):
        return Node((), nd.fn, root=dist.Bernoulli(est[1].to(torch.get_default_dtype())))
    return Node((), nd.fn, root=dist.Categorical(est.to(torch.get_default_dtype())))


def _observed_counts(dag: DAG, n: str, cols: Mapping[str, torch.Tensor]) -> torch.Tensor:
    cards = dag.tables([n])[n].shape
    flat = torch.zeros_like(cols[n])
    for v, c in zip((*dag.parents(n), n), cards):
        flat = flat * c + cols[v]
    return torch.bincount(flat, minlength=math.prod(cards)).reshape(cards).double()


def _fit_counts(dag: DAG, data: Mapping[str, Any], pseudo_count: Any) -> DAG:
    learn = learnable_by_counts(dag)
    needed = sorted({v for n in learn for v in (n, *dag.parents(n))})
    missing = [v for v in needed if v not in data]
    if missing:
        raise DAGError(f"closed-form fit needs every learned node and its parents observed; "
                       f"missing {missing}. For hidden table nodes use method='em'; for "
                       "learnable conditionals method='svi'")
    cols = _columns(dag, data, needed)
    spec = dag.spec
    for n in learn:
        spec[n] = _with_table(spec[n], _estimate(_observed_counts(dag, n, cols),
                                                 _alpha(pseudo_count, n)))
    return dag._derive(spec)


def _expected_counts(dag: DAG, n: str, cols: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """:math:`\\sum_r p(x_n, x_{pa(n)} \\mid e_r)` as a table, one batched contraction."""
    family = (*dag.parents(n), n)
    free = [v for v in family if v not in cols]
    if not free:
        return _observed_counts(dag, n, cols)
    keep = ancestors(dag._parents, [*family, *cols])
    factors, log_floor = _factors(dag, keep, {}, cols)
    log_joint = _contract(dag, factors, (_BATCH, *free), log_floor)
    log_z = log_joint.reshape(log_joint.shape[0], -1).logsumexp(-1)
    post = (log_joint - log_z.reshape(-1, *[1] * len(free))).exp()
    table = torch.zeros(dag.tables([n])[n].shape, dtype=torch.float64)
    obs_axes = [i for i, v in enumerate(family) if v in cols]
    free_axes = [i for i, v in enumerate(family) if v not in cols]
    if not obs_axes:
        return table + post.sum(0)
    view = table.permute(*obs_axes, *free_axes)  # a view: index_put_ writes into table
    view.index_put_(tuple(cols[family[i]] for i in obs_axes), post, accumulate=True)
    return table


def _fit_em(dag: DAG, data: Mapping[str, Any], pseudo_count: Any, max_iter: int,
            tol: float) -> DAG:
    learn = learnable_by_counts(dag)
    if not _all_tables(dag) or dag._evidence:
        raise ConfigError("method='em' needs an unconditioned network of tables (CPTs and "
                          "discrete roots); use method='svi' for other conditionals")
    cols = _columns(dag, data, [n for n in dag.nodes if n in data])
    current = dag
    history = [float(current.log_evidence(cols).sum())]
    if not math.isfinite(history[0]):
        raise DAGError("a data row has probability zero under the initial tables; EM cannot "
                       "start there (use other initial tables)")
    for _ in range(max_iter):
        spec = current.spec
        for n in learn:
            spec[n] = _with_table(spec[n], _estimate(_expected_counts(current, n, cols),
                                                     _alpha(pseudo_count, n)))
        current = current._derive(spec)
        history.append(float(current.log_evidence(cols).sum()))
        if history[-1] - history[-2] <= tol * abs(history[-1]):
            break
    current.log_likelihood_ = history
    return current


def _fit_svi(dag: DAG, data: Mapping[str, Any], guide: Callable | None,
             kwargs: dict[str, Any]) -> DAG:
    from ..train import fit as train_fit
    from ..train import resolve_device

    names = [n for n in dag.nodes if n in data]
    cols = _columns(dag, data, names)
    n_rows = int(next(iter(cols.values())).shape[0])
    latent = [n for n in dag.nodes if n not in cols and n not in dag._evidence]
    info = dag._discrete()
    discrete_latent = [n for n in latent if info[n] is not None]
    continuous_latent = [n for n in latent if info[n] is None]

    def model(*batch: torch.Tensor) -> None:
        dag.model(dict(zip(names, batch)))

    if discrete_latent:
        model = config_enumerate(model, default="parallel")
    if guide is None:
        guide = (AutoNormal(poutine.block(model, expose=continuous_latent))
                 if continuous_latent else None)
    kwargs.setdefault("loss", TraceEnum_ELBO(max_plate_nesting=1) if discrete_latent
                      else Trace_ELBO())
    kwargs.setdefault("batch_size", n_rows)
    kwargs.setdefault("optim", pyro.optim.Adam({"lr": 0.01}))
    kwargs.setdefault("device", "cpu")
    device = resolve_device(kwargs["device"])
    _check_trainable(model, guide, [cols[n].to(device) for n in names])
    kwargs.setdefault("desc", "dag.fit")
    dag.history_ = train_fit(model, guide, [cols[n] for n in names], **kwargs)
    dag.guide_ = guide
    return dag


def _leaves(t: torch.Tensor) -> list[torch.Tensor]:
    """The leaf tensors requiring grad that ``t`` was computed from (its autograd graph)."""
    out, seen, stack = [], set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):  # AccumulateGrad: a leaf
            out.append(fn.variable)
        stack.extend(f for f, _ in fn.next_functions)
    return out


def _check_trainable(model: Callable, guide: Callable | None,
                     batch: list[torch.Tensor]) -> None:
    """Refuse an SVI fit that would silently leave tensors untrained or train nothing.

    SVI steps exactly the Pyro parameters (``pyro.param`` sites, including ``PyroModule`` and
    ``pyro.module`` parameters) that the traces of model and guide visit. Both are traced
    once on ``batch`` (forked RNG) and each sample site's log-density is followed back
    through autograd to its leaf tensors.

    Raises:
        ConfigError: a site depends on a leaf that requires grad but is no visited Pyro
            parameter (it would keep its initial value), or no Pyro parameter is visited.
    """
    with torch.random.fork_rng(devices=[]):
        guide_tr = poutine.trace(guide).get_trace(*batch) if guide is not None else None
        replayed = poutine.replay(model, trace=guide_tr) if guide_tr is not None else model
        model_tr = poutine.trace(replayed).get_trace(*batch)
    traces = [("guide site", guide_tr), ("node", model_tr)] if guide_tr else [("node", model_tr)]
    params = {id(site["value"].unconstrained()) for _, tr in traces
              for site in tr.nodes.values() if site["type"] == "param"}
    for what, tr in traces:
        for name, site in tr.nodes.items():
            if site["type"] != "sample":
                continue
            lp = site["fn"].log_prob(site["value"])
            stray = [v for v in _leaves(lp) if id(v) not in params]
            if stray:
                shapes = [list(v.shape) for v in stray]
                raise ConfigError(
                    f"expected every trainable tensor of {what} {name!r} to be a Pyro "
                    f"parameter, got {len(stray)} tensor(s) requiring grad of shapes {shapes} "
                    "that SVI would never update (a plain torch.nn.Module?); try "
                    "PyroModule[torch.nn.Linear](...) instead of torch.nn.Linear(...), or "
                    "pyro.module('net', net) inside the conditional, or "
                    "net.requires_grad_(False) to keep it fixed")
    if not params:
        raise ConfigError("expected Pyro parameters to train with method='svi', got none in "
                          "the conditionals or the guide; try pyro.param or PyroModule "
                          "conditionals, or method='counts' / 'em' for a network of tables")
