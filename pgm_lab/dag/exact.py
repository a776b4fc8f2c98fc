"""Exact inference in discrete DAGs: variable elimination as one tensor contraction.

The joint of a discrete DAG is a product of its conditional probability tables, so

.. math::

    \\log p(q, e) = \\log \\sum_{x \\setminus \\{q, e\\}} \\prod_i T_i[x_{\\mathrm{pa}(i)}, x_i]

is a single ``einsum`` over the tables, with each observed variable's axis indexed by its
value. The order in which the sums are pushed inside the product (the elimination order) is
a contraction path, found by ``opt_einsum`` (greedy or optimal, depending on the number of
factors) and cached per evidence pattern.

Products of many probabilities underflow float64 (below ``1e-308``), so each contraction
picks its arithmetic (``_contract``). Every term of every intermediate factor is a product
of at most one entry per table, so if the product :math:`\\prod_i m_i` of the tables'
smallest positive entries is above ``1e-300`` no term can underflow: the contraction runs on
probabilities (fast BLAS kernels), where every term is a normal number and the result is
accurate to a few ulps. Otherwise (``p(e) = 1e-400`` over a long chain) it runs in log space,
with Pyro's log-sum-exp einsum (``pyro.ops.einsum.torch_log``), which shifts each pairwise
product-sum by its operands' maxima over the summed variables and keeps ``log p(e)`` and
the posteriors exact. (It would still underflow on a pairwise sum whose largest term is
below ``1e-308`` times the product of those maxima, which needs factors whose entries
already span more than 300 orders of magnitude.) Evidence of probability exactly zero gives
``log p(e) = -inf``.

Before contracting:

- *barren nodes* -- neither queried, observed, nor an ancestor of either -- are dropped: their
  tables sum to one and contribute nothing;
- for a posterior, factors not connected to the query once evidence is applied are left
  out of the query's contraction: they only scale ``p(q, e)`` by a constant that
  normalization removes. To detect evidence of probability zero (a zero constant), only
  the supports of those among them with zero entries are checked (``_check_possible``).

A batch of ``B`` evidence rows (index tensors ``[B]``) is one extra output index: each table
that mentions an observed variable is gathered to ``[B, ...]`` and the whole batch is one
contraction, with no Python loop over rows. Unlike Pyro's ``TraceEnum_ELBO``, which needs a
tensor dimension per enumerated variable, the number of variables is unbounded: the cost is
set by the largest intermediate factor (the treewidth of the chosen order).

References:
    N. L. Zhang and D. Poole, "A simple approach to Bayesian network computations", 1994.
    R. Dechter, "Bucket elimination: a unifying framework for reasoning", AIJ 1999.
    D. G. A. Smith and J. Gray, "opt_einsum -- a Python package for optimizing contraction
    order for einsum-like expressions", JOSS 2018.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import opt_einsum
import torch

from ..errors import DAGError, InferenceError
from .graph import ancestors
from .spec import CPT

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["joint_log", "joint_posterior", "log_evidence", "marginals", "posterior"]

_CACHE_SIZE = 512
MAX_INTERMEDIATE = 2**27  # entries of the largest intermediate factor (1 GiB in float64)
_BATCH = "__batch__"
_LOG_EINSUM = "pyro.ops.einsum.torch_log"  # opt_einsum backend: log-sum-exp contractions
# above this log product of the tables' smallest positive entries no term can underflow
_LINEAR_LOG_FLOOR = math.log(1e-300)


def _evidence(dag: DAG, evidence: Mapping[str, Any] | None
              ) -> tuple[dict[str, int], dict[str, torch.Tensor], int | None]:
    """Split evidence into scalar indices and batched index tensors ``[B]``."""
    if evidence is not None and not isinstance(evidence, Mapping):
        raise DAGError(f"evidence must be a mapping name -> state, got "
                       f"{type(evidence).__name__}; try {{'node': 'state'}}")
    merged = dag._merge_evidence(evidence)
    dag.tables(merged)  # every observed node must be discrete
    scalar: dict[str, int] = {}
    batched: dict[str, torch.Tensor] = {}
    sizes = set()
    for k, v in merged.items():
        if v.dim() == 0:
            scalar[k] = int(v)
        elif v.dim() == 1:
            batched[k] = v
            sizes.add(int(v.shape[0]))
        else:
            raise DAGError(f"evidence on {k!r} must be a state or an index tensor [B], got "
                           f"shape {tuple(v.shape)}")
    if len(sizes) > 1:
        raise DAGError(f"expected one batch size B for all evidence tensors, got lengths "
                       f"{sorted(sizes)}; try tensors [B] of equal length")
    return scalar, batched, (sizes.pop() if sizes else None)


def _scopes(dag: DAG, keep: set[str], observed: set[str]) -> dict[str, set[str]]:
    """The unobserved variables of each kept node's factor (observed ones do not connect)."""
    return {n: {v for v in (*dag._parents[n], n) if v not in observed}
            for n in dag.nodes if n in keep}


def _factors(dag: DAG, keep: Iterable[str], scalar: Mapping[str, int],
             batched: Mapping[str, torch.Tensor]
             ) -> tuple[list[tuple[torch.Tensor, tuple[str, ...]]], float]:
    """Tables of ``keep`` with evidence applied, as ``(tensor, variable names)`` pairs, and
    :math:`\\sum_i \\log m_i` with :math:`m_i` the smallest positive entry of table ``i``: a
    lower bound on the log of every nonzero term of their contraction."""
    tables = dag.tables(n for n in dag.nodes if n in keep)
    out = []
    log_floor = 0.0
    for name, table in tables.items():
        log_floor += _table_stats(dag, name, table)[1]
        names = (*dag._parents[name], name)
        t = table[tuple(scalar.get(v, slice(None)) for v in names)]
        names = tuple(v for v in names if v not in scalar)
        axes = [i for i, v in enumerate(names) if v in batched]
        if axes:
            rest = [i for i in range(len(names)) if i not in axes]
            t = t.permute(*axes, *rest)[tuple(batched[names[i]] for i in axes)]
            names = (_BATCH, *(names[i] for i in rest))
        out.append((t, names))
    return out, log_floor


def _component(scopes: Mapping[str, set[str]], var: str) -> set[str]:
    """The nodes whose factors connect to ``var`` through shared unobserved variables."""
    by_var: dict[str, list[str]] = {}
    for n, vs in scopes.items():
        for v in vs:
            by_var.setdefault(v, []).append(n)
    seen_vars, nodes, stack = {var}, set(), [var]
    while stack:
        for n in by_var.get(stack.pop(), ()):
            if n not in nodes:
                nodes.add(n)
                new = scopes[n] - seen_vars
                seen_vars |= new
                stack.extend(new)
    return nodes


def _expression(dag: DAG, factors: list[tuple[torch.Tensor, tuple[str, ...]]],
                output: tuple[str, ...], optimize: str = "auto"):
    """The compiled ``opt_einsum`` expression contracting ``factors`` to ``output`` (cached
    per equation and shapes; the path is semiring-agnostic, see :mod:`.maxplus`).

    Raises:
        InferenceError: the path's largest intermediate factor exceeds ``MAX_INTERMEDIATE``.
    """
    symbols: dict[str, str] = {}
    for _, names in factors:
        for v in names:
            symbols.setdefault(v, opt_einsum.get_symbol(len(symbols)))
    for v in output:
        symbols.setdefault(v, opt_einsum.get_symbol(len(symbols)))
    eq = ",".join("".join(symbols[v] for v in names) for _, names in factors)
    eq += "->" + "".join(symbols[v] for v in output)
    shapes = tuple(tuple(t.shape) for t, _ in factors)
    key = (eq, shapes, optimize)
    cache = dag._expressions
    expr = cache.get(key)
    if expr is None:
        expr = opt_einsum.contract_expression(eq, *shapes, optimize=optimize)
        dims = {symbols[v]: d for (t, names) in factors for v, d in zip(names, t.shape)}
        largest = max((math.prod(dims[c] for c in step[2].split("->")[1])
                       for step in expr.contraction_list), default=1)
        if largest > MAX_INTERMEDIATE:
            raise InferenceError(
                f"exact inference would build a factor with {largest:.3g} entries (more than "
                f"{MAX_INTERMEDIATE:.3g}): the network's treewidth is too large for this "
                "query; use log_evidence(..., method='importance') or fewer query/evidence "
                "nodes")
        cache[key] = expr
        if len(cache) > _CACHE_SIZE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return expr


def _contract(dag: DAG, factors: list[tuple[torch.Tensor, tuple[str, ...]]],
              output: tuple[str, ...], log_floor: float, optimize: str = "auto"
              ) -> torch.Tensor:
    """:math:`\\log \\sum \\prod` of the nonnegative ``factors`` over the variables not in
    ``output``: float64 tensor with one axis per ``output`` variable (in that order).

    ``log_floor`` bounds the log of every nonzero term from below (from :func:`_factors`): above
    ``log(1e-300)`` the contraction runs on the factors themselves, else (or if a sum
    overflowed) on their logs with Pyro's log-sum-exp einsum.
    """
    expr = _expression(dag, factors, output, optimize)
    tensors = [t for t, _ in factors]
    if log_floor > _LINEAR_LOG_FLOOR:
        z = expr(*tensors, backend="torch")
        if bool(torch.isfinite(z).all()):
            return z.log()
    return expr(*(t.log() for t in tensors), backend=_LOG_EINSUM)


def posterior(dag: DAG, query: str | Sequence[str], evidence: Mapping[str, Any] | None = None
              ) -> dict[str, torch.Tensor]:
    """Exact posterior marginals :math:`p(q \\mid e)` of each query node.

    Args:
        dag: a DAG whose query and observed nodes and their ancestors are discrete.
        query: a node name or a list of names.
        evidence: ``name -> value``; a value is a state name, a state index, or an index
            tensor ``[B]`` (all batched tensors share ``B``). Merged with ``dag.evidence``.

    Returns:
        dict ``name -> float64 probs [card]``, or ``[B, card]`` with batched evidence. A
        query node that is observed gets the one-hot vector of its observed state.

    Raises:
        DAGError: unknown nodes or states, or evidence of probability zero (for any row).
        InferenceError: a relevant node is not discrete.
    """
    queries = [query] if isinstance(query, str) else (
        list(query) if isinstance(query, Iterable) else None)
    if not queries or not all(isinstance(q, str) for q in queries):
        raise DAGError(f"expected a query node name or a non-empty list of names, got "
                       f"{query!r}; try posterior('lung') or posterior(['lung', 'bronc'])")
    queries = list(dict.fromkeys(queries))  # a node queried twice is computed once
    for q in queries:
        dag._check_name(q)
    scalar, batched, b = _evidence(dag, evidence)
    observed = set(scalar) | set(batched)
    keep = ancestors(dag._parents, [*queries, *observed])
    dag.tables(keep)
    scopes = _scopes(dag, keep, observed)
    out: dict[str, torch.Tensor] = {}
    batch_out = (_BATCH,) if b is not None else ()
    # several queries share intermediate products; for one, sharing is pure overhead
    share = opt_einsum.shared_intermediates() if len(queries) > 1 else contextlib.nullcontext()
    covered: set[str] = set()
    with share:
        for q in queries:
            card = dag.tables([q])[q].shape[-1]
            if q in observed:
                idx = torch.as_tensor(scalar[q]) if q in scalar else batched[q]
                out[q] = torch.nn.functional.one_hot(idx, card).to(torch.float64)
                continue
            nodes = _component(scopes, q)
            covered |= nodes
            comp, log_floor = _factors(dag, nodes, scalar, batched)
            comp_batched = any(_BATCH in names for _, names in comp)
            joint = _contract(dag, comp, (_BATCH, q) if comp_batched else (q,), log_floor)
            if b is not None and not comp_batched:
                joint = joint.expand(b, card)
            out[q] = _normalize(joint, batch_out)
    # The factors outside the queries' components only scale p(q, e) by a constant, but a
    # zero constant means the evidence is impossible.
    rest = [n for n in keep if n not in covered and _table_stats(dag, n)[0]]
    if observed and rest:
        _check_possible(dag, _factors(dag, rest, scalar, batched)[0], batch_out)
    return out


def _table_stats(dag: DAG, name: str, table: torch.Tensor | None = None
                 ) -> tuple[bool, float]:
    """Whether the table of ``name`` (``table`` if given) has a zero entry, and the log of its
    smallest positive entry (cached for fixed tables)."""
    cache = dag._table_stats
    if name not in cache:
        table = dag.tables([name])[name] if table is None else table
        positive = table > 0
        value = (not bool(positive.all()), math.log(float(table[positive].min())))
        nd = dag._spec[name]
        if not (isinstance(nd, CPT) or nd.root is not None):  # a callable: may change
            return value
        cache[name] = value
    return cache[name]


def _check_possible(dag: DAG, factors: list[tuple[torch.Tensor, tuple[str, ...]]],
                    batch_out: tuple[str, ...]) -> None:
    """Raise :class:`DAGError` if the product of ``factors`` is zero everywhere (per row).

    ``sum_x prod_i f_i(x) > 0`` iff some assignment makes every factor positive, so only the
    supports ``f_i > 0`` of factors with a zero entry matter (the others are positive
    everywhere). A variable found in one support only is eliminated there by "exists"
    (``any`` over its axis), and a support that becomes all true is dropped; what is left
    after this peeling (variables shared by several supports) is contracted as 0/1 tensors,
    counting admissible assignments (no underflow).
    """
    supports = [(t > 0, names) for t, names in factors if not bool((t > 0).all())]
    changed = True
    while changed and supports:
        changed = False
        uses = Counter(v for _, names in supports for v in names if v != _BATCH)
        kept = []
        for t, names in supports:
            private = tuple(i for i, v in enumerate(names) if v != _BATCH and uses[v] == 1)
            if private:
                t = t.any(dim=private)
                names = tuple(v for i, v in enumerate(names) if i not in private)
                changed = True
            if bool(t.all()):
                changed = True
                continue
            kept.append((t, names))
        supports = kept
    if not supports:
        return
    batched = any(_BATCH in names for _, names in supports)
    # 0/1 supports: the greedy path is cheap to find and good enough
    log_count = _contract(dag, [(t.to(torch.float64), names) for t, names in supports],
                          (_BATCH,) if batched else (), log_floor=0.0, optimize="greedy")
    _normalize(log_count.unsqueeze(-1), batch_out if batched else ())


def _normalize(log_joint: torch.Tensor, batch_out: tuple[str, ...]) -> torch.Tensor:
    """Probabilities ``[..., card]`` from a log joint ``[..., card]`` (softmax over the last
    axis); :class:`DAGError` for a row whose joint is zero everywhere."""
    log_z = log_joint.logsumexp(-1, keepdim=True)
    if (log_z == -math.inf).any():
        rows = torch.nonzero(log_z.reshape(-1) == -math.inf).reshape(-1)[:5].tolist()
        where = f" (batch rows {rows})" if batch_out else ""
        raise DAGError(f"expected evidence of positive probability, got evidence of "
                       f"probability zero under the network{where}, for which posteriors "
                       "are undefined; try log_evidence(evidence) to find the impossible "
                       "rows, and check the observed states")
    return (log_joint - log_z).exp()


def log_evidence(dag: DAG, evidence: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Exact :math:`\\log p(e)`, float64, shape ``[]`` or ``[B]`` with batched evidence.

    Only the evidence nodes and their ancestors are contracted (the rest is barren); with no
    evidence the result is ``0``. A zero-probability evidence row gives ``-inf``; a tiny but
    positive one (below float64's ``1e-308``) its exact finite logarithm.
    """
    scalar, batched, b = _evidence(dag, evidence)
    observed = set(scalar) | set(batched)
    if not observed:
        return torch.zeros((), dtype=torch.float64)
    keep = ancestors(dag._parents, observed)
    factors, log_floor = _factors(dag, keep, scalar, batched)
    return _contract(dag, factors, (_BATCH,) if b is not None else (), log_floor)


def _with_indicators(factors: list[tuple[torch.Tensor, tuple[str, ...]]],
                     keep: Iterable[str], free: Iterable[str], b: int | None, log: bool
                     ) -> tuple[list[tuple[torch.Tensor, tuple[str, ...]]], list[torch.Tensor]]:
    """Darwiche's evidence indicators :math:`\\lambda_v` (``[B, card]`` or ``[card]``, with
    gradients; ones, or zeros with ``log``) multiplied (added) into the factor of each
    ``free`` node, along its own axis.

    ``factors`` are aligned with the nodes of ``keep`` in order. Folding the indicators into
    the nodes' own factors keeps the contraction path that of the factors alone (with a
    batch axis everywhere), where separate indicator factors mislead the path search.
    """
    free = set(free)
    out, lams = [], []
    for n, (t, names) in zip(keep, factors):
        if n in free:
            shape = [t.shape[i] if v == n else 1 for i, v in enumerate(names)]
            if b is not None:
                if _BATCH not in names:
                    t, names = t.unsqueeze(0), (_BATCH, *names)
                    shape = [1, *shape]
                shape[0] = b
            lam = torch.full(shape, 0.0 if log else 1.0, dtype=torch.float64,
                             requires_grad=True)
            lams.append(lam)
            t = t + lam if log else t * lam
        out.append((t, names))
    return out, lams


def marginals(dag: DAG, evidence: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """Posterior marginals of every unobserved discrete node from one forward and one
    backward pass.

    With an indicator :math:`\\lambda_v(x_v) = 1` multiplied into the contraction for each
    unobserved variable, :math:`Z(\\lambda) = \\sum_x \\prod_i T_i \\prod_v \\lambda_v(x_v)`
    equals :math:`p(e)` and

    .. math:: \\frac{\\partial \\log Z}{\\partial \\lambda_v(x)} = p(v = x \\mid e),

    so one contraction of the whole network (forward) and its gradient (backward, by
    autograd) give all the marginals, instead of one contraction per node. With batched evidence
    ``[B]`` the indicators are ``[B, card]`` and the rows' log evidences are summed before
    the backward pass (rows do not interact). The contraction runs on probabilities or in
    log space as chosen by ``_contract``, and the gradient follows it, so tiny evidence
    (``p(e) = 1e-400``) keeps exact posteriors.

    Returns:
        dict ``name -> float64 probs [card]`` (``[B, card]`` with batched evidence) for
        every unobserved discrete node, in topological order.

    Raises:
        DAGError: evidence of probability zero (for any row).
        InferenceError: an observed node or an ancestor of one is not discrete.

    Reference:
        A. Darwiche, "A differential approach to inference in Bayesian networks", JACM 50(3),
        2003.
    """
    scalar, batched, b = _evidence(dag, evidence)
    observed = set(scalar) | set(batched)
    info = dag._discrete()
    free = [n for n in dag.nodes if info[n] is not None and n not in observed]
    keep = ancestors(dag._parents, [*free, *observed])
    keep = [n for n in dag.nodes if n in keep]
    factors, log_floor = _factors(dag, keep, scalar, batched)
    batch_out = (_BATCH,) if b is not None else ()
    with torch.enable_grad():
        factors, lams = _with_indicators(factors, keep, free, b, log=False)
        log_z = _contract(dag, factors, batch_out, log_floor)
        _normalize(log_z.detach().unsqueeze(-1), batch_out)  # impossible evidence
        if not free:
            return {}
        grads = torch.autograd.grad(log_z.sum(), lams)
    # the gradient is the marginal up to rounding; renormalize so rows sum to one exactly
    out = {}
    for v, g in zip([n for n in keep if n in set(free)], grads):
        g = g.reshape(*g.shape[:1 if b is not None else 0], -1)
        out[v] = g / g.sum(-1, keepdim=True)
    return {v: out[v] for v in free}


def joint_log(dag: DAG, queries: Sequence[str], evidence: Mapping[str, Any] | None = None
              ) -> torch.Tensor:
    """:math:`\\log p(q_1, \\dots, q_k, e)`, float64 ``[*batch, card(q_1), ..., card(q_k)]``.

    One contraction with the query variables as output axes (exponential in ``k``, bounded by
    ``MAX_INTERMEDIATE``). An observed query variable has ``-inf`` off its observed state.

    Raises:
        DAGError: unknown or repeated query nodes.
    """
    if not queries or not all(isinstance(q, str) for q in queries):
        raise DAGError(f"expected a non-empty list of query node names, got {queries!r}; try "
                       "posterior(['lung', 'bronc'], joint=True)")
    if len(set(queries)) != len(queries):
        raise DAGError(f"expected distinct query nodes, got {list(queries)}")
    for q in queries:
        dag._check_name(q)
    scalar, batched, b = _evidence(dag, evidence)
    observed = set(scalar) | set(batched)
    keep = ancestors(dag._parents, [*queries, *observed])
    cards = {q: t.shape[-1] for q, t in dag.tables(keep).items() if q in queries}
    factors, log_floor = _factors(dag, keep, scalar, batched)
    batch_out = (_BATCH,) if b is not None else ()
    free = tuple(q for q in queries if q not in observed)
    out = _contract(dag, factors, (*batch_out, *free), log_floor)
    # observed queries: indicator axes (log one-hot) inserted in query order
    view = out.reshape(*out.shape[:len(batch_out)], *(cards[q] if q in free else 1
                                                      for q in queries))
    for axis, q in enumerate(queries):
        if q in observed:
            idx = torch.as_tensor(scalar[q]) if q in scalar else batched[q]
            hot = torch.nn.functional.one_hot(idx, cards[q]).to(torch.float64).log()
            shape = [1] * view.dim()
            shape[len(batch_out) + axis] = cards[q]
            if idx.dim():
                shape[0] = -1
            view = view + hot.reshape(shape)
    return view


def joint_posterior(dag: DAG, queries: Sequence[str],
                    evidence: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Joint posterior :math:`p(q_1, \\dots, q_k \\mid e)`, float64
    ``[*batch, card(q_1), ..., card(q_k)]`` (axes in query order), from :func:`joint_log`.

    Raises:
        DAGError: unknown or repeated query nodes, evidence of probability zero.
    """
    log_joint = joint_log(dag, queries, evidence)
    k = len(queries)
    lead = log_joint.shape[:log_joint.dim() - k]
    flat = log_joint.reshape(*lead, -1)
    return _normalize(flat, ("batch",) if lead else ()).reshape(log_joint.shape)
