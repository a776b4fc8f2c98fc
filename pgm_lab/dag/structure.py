"""Structure learning for discrete Bayesian networks from complete data.

Two searches, each returning a :class:`~pgm_lab.dag.DAG` with its tables fitted by counts:

- ``"chow-liu"``: the maximum-weight spanning tree on the empirical mutual information

  .. math:: I(u; v) = \\sum_{a, b} \\hat p(a, b)
      \\log \\frac{\\hat p(a, b)}{\\hat p(a)\\, \\hat p(b)},

  the maximum-likelihood tree (Chow and Liu 1968), directed away from a root (default: the
  node with the largest total mutual information, as pgmpy's ``TreeSearch``). Kruskal's
  algorithm; ties keep the column order.
- ``"hill-climb"``: greedy search over DAGs from the empty graph, one edge addition,
  removal or reversal per step, the best that keeps the graph acyclic and every node within
  ``max_parents``; it stops when no move gains more than ``epsilon``. The score is
  decomposable, :math:`S(G) = \\sum_i s(x_i, \\mathrm{pa}_i)`, so a move changes one or two
  local scores, cached per (node, parent set):

  .. math::

      s_{\\mathrm{BIC}} = \\sum_{j, k} N_{ijk} \\log \\frac{N_{ijk}}{N_{ij}}
        - \\frac{\\log N}{2}\\, q_i (r_i - 1), \\qquad
      s_{\\mathrm{BDeu}} = \\sum_j \\Big[\\log \\frac{\\Gamma(\\alpha / q_i)}
        {\\Gamma(\\alpha / q_i + N_{ij})} + \\sum_k \\log \\frac{\\Gamma(\\alpha / (q_i r_i)
        + N_{ijk})}{\\Gamma(\\alpha / (q_i r_i))}\\Big],

  with :math:`r_i` states of :math:`x_i`, :math:`q_i` parent configurations, counts
  :math:`N_{ijk}` and equivalent sample size :math:`\\alpha` (the same scores as pgmpy's
  ``BIC`` and ``BDeu``).

Counts are ``torch.bincount`` over the rows' family codes (one pass over the data per local
score), so no Python loop runs over rows.

References:
    C. K. Chow and C. N. Liu, "Approximating discrete probability distributions with
    dependence trees", IEEE Trans. Information Theory 14, 1968.
    D. Heckerman, D. Geiger and D. M. Chickering, "Learning Bayesian networks: the
    combination of knowledge and statistical data", Machine Learning 20, 1995.
    G. Schwarz, "Estimating the dimension of a model", Annals of Statistics 6, 1978.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import ConfigError, DAGError
from .core import DAG
from .independence import descendants
from .spec import cpt

__all__ = ["learn_structure", "local_score"]


def _data(data: Mapping[str, Any], states: Mapping[str, Sequence[str]] | None
          ) -> tuple[list[str], torch.Tensor, list[int], dict[str, tuple[str, ...]]]:
    """Column names, the data as long ``[N, n]``, cardinalities and state names."""
    if not isinstance(data, Mapping) or not data:
        raise DAGError(f"data must be a non-empty mapping name -> state indices [N], got "
                       f"{type(data).__name__}")
    names = list(data)
    cols = []
    for k in names:
        t = torch.as_tensor(data[k])
        if t.dim() != 1 or t.is_floating_point() and not torch.equal(t, t.round()):
            raise DAGError(f"data[{k!r}] must be state indices [N], got shape "
                           f"{tuple(t.shape)}, dtype {t.dtype}; try dag.sample(n)[{k!r}]")
        cols.append(t.long())
    if len({c.shape[0] for c in cols}) != 1 or cols[0].shape[0] == 0:
        raise DAGError(f"data columns must have one positive length N, got "
                       f"{ {k: c.shape[0] for k, c in zip(names, cols)} }")
    x = torch.stack(cols, -1)
    if bool((x < 0).any()):
        raise DAGError("data must hold state indices >= 0, got negative values")
    cards, named = [], {}
    for i, k in enumerate(names):
        seen = int(x[:, i].max()) + 1
        given = None if states is None else states.get(k)
        if given is not None and len(given) < seen:
            raise DAGError(f"data[{k!r}] has index {seen - 1} but states[{k!r}] names "
                           f"{len(given)} states")
        named[k] = tuple(given) if given is not None else tuple(str(s) for s in range(seen))
        cards.append(len(named[k]))
    return names, x, cards, named


class _Scorer:
    """Cached local scores :math:`s(x_i, \\mathrm{pa})` of one dataset."""

    def __init__(self, x: torch.Tensor, cards: list[int], score: str, ess: float) -> None:
        self.cards, self.score, self.ess = cards, score, ess
        self.cols = list(x.T.contiguous())  # one contiguous column per node
        self.n = x.shape[0]
        self.cache: dict[tuple[int, frozenset[int]], float] = {}

    def counts(self, i: int, parents: Sequence[int]) -> torch.Tensor:
        """:math:`N_{ijk}` as float64 ``[q_i, r_i]`` (parents in the given order)."""
        code = self.cols[i].clone()
        stride = self.cards[i]
        for p in reversed(parents):
            code.add_(self.cols[p], alpha=stride)
            stride *= self.cards[p]
        q = math.prod(self.cards[p] for p in parents)
        return torch.bincount(code, minlength=q * self.cards[i]).reshape(q, -1).double()

    def __call__(self, i: int, parents: frozenset[int]) -> float:
        key = (i, parents)
        if key not in self.cache:
            self.cache[key] = self._local(i, sorted(parents))
        return self.cache[key]

    def _local(self, i: int, parents: list[int]) -> float:
        n_ijk = self.counts(i, parents)
        q, r = n_ijk.shape
        n_ij = n_ijk.sum(-1, keepdim=True)
        if self.score == "bic":
            ll = torch.where(n_ijk > 0, n_ijk * (n_ijk / n_ij.clamp_min(1)).log(), 0.0).sum()
            return float(ll) - 0.5 * math.log(self.n) * q * (r - 1)
        a_j, a_jk = self.ess / q, self.ess / (q * r)
        return float((torch.lgamma(n_ijk + a_jk) - math.lgamma(a_jk)).sum()
                     + (math.lgamma(a_j) - torch.lgamma(n_ij + a_j)).sum())


def local_score(data: Mapping[str, Any], node: str, parents: Sequence[str] = (), *,
                score: str = "bic", equivalent_sample_size: float = 10.0,
                states: Mapping[str, Sequence[str]] | None = None) -> float:
    """The local score :math:`s(x, \\mathrm{pa})` of ``node`` with ``parents`` on ``data``."""
    names, x, cards, _ = _data(data, states)
    scorer = _Scorer(x, cards, _check_score(score), float(equivalent_sample_size))
    idx = {k: i for i, k in enumerate(names)}
    return scorer(idx[node], frozenset(idx[p] for p in parents))


def _check_score(score: str) -> str:
    if score not in ("bic", "bdeu"):
        raise ConfigError(f"score must be 'bic' or 'bdeu', got {score!r}")
    return score


def _mutual_information(x: torch.Tensor, cards: list[int]) -> torch.Tensor:
    """Empirical mutual information (nats) of every pair of columns, float64 ``[n, n]``."""
    n, m = x.shape
    w = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            joint = torch.bincount(x[:, i] * cards[j] + x[:, j], minlength=cards[i] * cards[j])
            p = joint.reshape(cards[i], cards[j]).double() / n
            outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
            w[i, j] = w[j, i] = torch.where(p > 0, p * (p / outer.clamp_min(1e-300)).log(),
                                            0.0).sum()
    return w


def _chow_liu(x: torch.Tensor, cards: list[int], root: int | None) -> dict[int, list[int]]:
    w = _mutual_information(x, cards)
    m = x.shape[1]
    pairs = sorted(((float(w[i, j]), i, j) for i in range(m) for j in range(i + 1, m)),
                   key=lambda t: -t[0])
    comp = list(range(m))

    def find(a: int) -> int:
        while comp[a] != a:
            comp[a] = comp[comp[a]]
            a = comp[a]
        return a

    adj: dict[int, list[int]] = {i: [] for i in range(m)}
    for _, i, j in pairs:
        a, b = find(i), find(j)
        if a != b:
            comp[a] = b
            adj[i].append(j)
            adj[j].append(i)
    if root is None:
        root = int(w.sum(0).argmax())
    parents: dict[int, list[int]] = {i: [] for i in range(m)}
    seen, frontier = {root}, [root]
    while frontier:  # breadth first from the root; other components from their first node
        nxt = []
        for u in frontier:
            for v in adj[u]:
                if v not in seen:
                    seen.add(v)
                    parents[v].append(u)
                    nxt.append(v)
        frontier = nxt
        if not frontier and len(seen) < m:
            start = min(set(range(m)) - seen)
            seen.add(start)
            frontier = [start]
    return parents


def _hill_climb(scorer: _Scorer, m: int, max_parents: int, epsilon: float,
                max_iter: int) -> dict[int, list[int]]:
    parents: dict[int, set[int]] = {i: set() for i in range(m)}
    for _ in range(max_iter):
        below = {i: descendants(parents_view(parents), [i]) for i in range(m)}
        best, best_delta = None, epsilon
        for y in range(m):
            old_y = frozenset(parents[y])
            s_y = scorer(y, old_y)
            for x in range(m):
                if x == y:
                    continue
                if x in old_y:
                    delta = scorer(y, old_y - {x}) - s_y  # remove x -> y
                    if delta > best_delta:
                        best, best_delta = ("-", x, y), delta
                    # reverse x -> y: no other directed path x ~> y may exist
                    if len(parents[x]) < max_parents and not _other_path(parents, x, y):
                        old_x = frozenset(parents[x])
                        delta += scorer(x, old_x | {y}) - scorer(x, old_x)
                        if delta > best_delta:
                            best, best_delta = ("flip", x, y), delta
                elif len(old_y) < max_parents and x not in below[y]:
                    delta = scorer(y, old_y | {x}) - s_y  # add x -> y
                    if delta > best_delta:
                        best, best_delta = ("+", x, y), delta
        if best is None:
            break
        op, x, y = best
        if op == "+":
            parents[y].add(x)
        elif op == "-":
            parents[y].discard(x)
        else:
            parents[y].discard(x)
            parents[x].add(y)
    return {i: sorted(ps) for i, ps in parents.items()}


def parents_view(parents: Mapping[int, set[int]]) -> dict[int, tuple[int, ...]]:
    """``parents`` as the ``name -> parents`` mapping the graph helpers take."""
    return {i: tuple(ps) for i, ps in parents.items()}


def _other_path(parents: Mapping[int, set[int]], x: int, y: int) -> bool:
    """Whether ``y`` is reachable from ``x`` other than by the edge ``x -> y``."""
    children: dict[int, list[int]] = {i: [] for i in parents}
    for c, ps in parents.items():
        for p in ps:
            if not (p == x and c == y):
                children[p].append(c)
    seen, stack = {x}, [x]
    while stack:
        for c in children[stack.pop()]:
            if c == y:
                return True
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return False


def learn_structure(data: Mapping[str, Any], method: str = "hill-climb", score: str = "bic",
                    *, max_parents: int | None = None, root: str | None = None,
                    equivalent_sample_size: float = 10.0, epsilon: float = 1e-4,
                    max_iter: int = 1_000_000, pseudo_count: float = 0.0,
                    states: Mapping[str, Sequence[str]] | None = None) -> DAG:
    """Learn a discrete DAG's structure from complete data, with its tables fitted by counts.

    Args:
        data: ``name -> state indices [N]`` (e.g. ``dag.sample(n)``), every column one node.
        method: ``"chow-liu"`` (maximum-likelihood tree) or ``"hill-climb"``.
        score: ``"bic"`` or ``"bdeu"`` (hill climbing).
        max_parents: most parents per node (hill climbing; default unbounded).
        root: the tree's root (Chow-Liu; default the node of largest total mutual
            information).
        equivalent_sample_size: BDeu's :math:`\\alpha`.
        epsilon: hill climbing stops when the best move gains at most this much score.
        max_iter: most hill-climbing moves.
        pseudo_count: Dirichlet pseudo-count of the fitted tables
            (:meth:`~pgm_lab.dag.DAG.fit`).
        states: ``name -> state names`` (default ``"0", ..., str(max index)``); sets the
            cardinalities that BIC and BDeu count.

    Returns:
        a :class:`~pgm_lab.dag.DAG` of :func:`~pgm_lab.dag.cpt` nodes fitted to ``data``; its
        ``score_`` attribute holds the search's score (BIC / BDeu; Chow-Liu: the
        log-likelihood of the tree).

    Raises:
        DAGError: malformed data.
        ConfigError: unknown method or score, bad ``max_parents`` or ``root``.
    """
    names, x, cards, named = _data(data, states)
    if method not in ("chow-liu", "hill-climb"):
        raise ConfigError(f"method must be 'chow-liu' or 'hill-climb', got {method!r}")
    _check_score(score)
    if max_parents is not None and (isinstance(max_parents, bool)
                                    or not isinstance(max_parents, int) or max_parents < 0):
        raise ConfigError(f"expected max_parents to be None or an int >= 0, got "
                          f"{max_parents!r}; try max_parents=3")
    limit = len(names) if max_parents is None else max_parents
    if method == "chow-liu":
        if root is not None and root not in names:
            raise ConfigError(f"root must be one of the data's columns {names}, got {root!r}")
        found = _chow_liu(x, cards, None if root is None else names.index(root))
        scorer = _Scorer(x, cards, "bic", equivalent_sample_size)
        total = float(sum(_loglik(scorer, i, ps) for i, ps in found.items()))
    else:
        scorer = _Scorer(x, cards, score, float(equivalent_sample_size))
        found = _hill_climb(scorer, len(names), limit, epsilon, max_iter)
        total = float(sum(scorer(i, frozenset(ps)) for i, ps in found.items()))
    spec = {}
    for i, k in enumerate(names):
        ps = [names[p] for p in found[i]]
        shape = [cards[p] for p in found[i]] + [cards[i]]
        spec[k] = cpt(ps, torch.full(shape, 1.0 / cards[i], dtype=torch.float64), named[k])
    dag = DAG(spec).fit({k: x[:, i] for i, k in enumerate(names)}, method="counts",
                        pseudo_count=pseudo_count)
    dag.score_ = total
    return dag


def _loglik(scorer: _Scorer, i: int, parents: list[int]) -> float:
    n_ijk = scorer.counts(i, parents)
    n_ij = n_ijk.sum(-1, keepdim=True)
    return float(torch.where(n_ijk > 0, n_ijk * (n_ijk / n_ij.clamp_min(1)).log(), 0.0).sum())
