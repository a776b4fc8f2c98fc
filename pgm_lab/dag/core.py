"""The :class:`DAG`: a declarative directed graphical model compiled to a Pyro program.

A DAG is the factorization

.. math:: p(x_1, \\dots, x_n) = \\prod_{i=1}^n p(x_i \\mid \\mathrm{pa}(x_i))

given as data (a mapping ``name -> conditional``, see :mod:`pgm_lab.dag.spec`). The order of
the nodes is derived by topological sort. Instances are immutable: :meth:`DAG.condition`,
:meth:`DAG.do` and :meth:`DAG.fit` (closed form) return new DAGs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import Bernoulli, Categorical, Distribution

from ..errors import ConfigError, DAGError, InferenceError
from . import causal, clg, exact, importance, independence, learn, lingauss, mpe, render
from .graph import suggest, topological_order
from .logprob import exact_log_prob
from .spec import CPT, LinearGaussian, Node, as_node
from .util import forked_rng, positive_int

__all__ = ["DAG", "Discrete"]

ROW_SUM_ATOL = 1e-6


@dataclass(frozen=True)
class Discrete:
    """A node whose conditional is a finite table.

    ``table`` is float64 ``[card(pa_1), ..., card(pa_m), card]``; ``bernoulli`` marks nodes
    whose Pyro samples are floats ``0.``/``1.`` (Bernoulli) rather than long state indices.
    """

    card: int
    states: tuple[str, ...]
    table: torch.Tensor
    bernoulli: bool = False


def _default_states(card: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(card))


def _root_table(d: Distribution) -> Discrete | None:
    if d.batch_shape != () or d.event_shape != ():
        return None
    if isinstance(d, Bernoulli):
        p = d.probs.detach().to(torch.float64)
        return Discrete(2, ("0", "1"), torch.stack([1 - p, p]), bernoulli=True)
    if isinstance(d, Categorical):
        probs = d.probs.detach().to(torch.float64)
        return Discrete(probs.shape[-1], _default_states(probs.shape[-1]), probs)
    return None


def _fmt_config(parents: Sequence[str], states: Sequence[Sequence[str]], idx: Sequence[int]) -> str:
    return ", ".join(f"{p}={s[i]!r}" for p, s, i in zip(parents, states, idx))


class DAG:
    """A directed acyclic graphical model built from a spec ``name -> conditional``.

    Args:
        spec: mapping from node name to a root distribution, a callable whose argument names
            are its parents, :func:`~pgm_lab.dag.node` or :func:`~pgm_lab.dag.cpt`. Discrete
            tables, continuous distributions and neural-network conditionals can be mixed.
        name: a label (the BIF ``network`` name), or ``None`` (default) for an unnamed
            network: its rendering is an anonymous ``digraph {``, and :meth:`to_bif` writes
            the placeholder ``network unknown``, as bnlearn and pgmpy do.

    Raises:
        DAGError: unknown parents (with close-name suggestions), cycles (printed as
            ``a -> b -> a``), CPT tables whose shape does not match their parents or whose
            rows are not probability vectors (naming the parent configuration).

    Example:
        >>> import pyro.distributions as dist
        >>> dag = DAG({"a": dist.Bernoulli(0.3),
        ...            "b": lambda a: dist.Normal(2.0 * a, 1.0),
        ...            "c": cpt(["a"], [[0.9, 0.1], [0.2, 0.8]])})
        >>> dag.factorization()
        'p(a) p(b | a) p(c | a)'
    """

    def __init__(self, spec: Mapping[str, Any], *, name: str | None = None,
                 properties: Sequence[str] = ()) -> None:
        if name is not None and not isinstance(name, str):
            raise DAGError(f"DAG name must be a string or None, got {type(name).__name__}; "
                           "try name='my_network'")
        if not isinstance(spec, Mapping) or not spec:
            raise DAGError(f"DAG spec must be a non-empty mapping name -> distribution, "
                           f"callable, node(...) or cpt(...), got {type(spec).__name__}")
        for key in spec:
            if not isinstance(key, str) or not key:
                raise DAGError(f"node names must be non-empty strings, got {key!r}")
        self._spec: dict[str, Node | CPT] = {k: as_node(k, v) for k, v in spec.items()}
        self._parents = {k: v.parents for k, v in self._spec.items()}
        self.nodes: tuple[str, ...] = topological_order(self._parents)
        self.name: str | None = name
        self.properties = tuple(properties)
        self._evidence: dict[str, torch.Tensor] = {}
        self._interventions: dict[str, Any] = {}
        self._discrete_cache: dict[str, Discrete | None] | None = None
        self._expressions: OrderedDict = OrderedDict()
        self._sampler_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._tabulate_errors: dict[str, str] = {}
        self._event_dims: dict[str, int] | None = None
        # fixed tables: (has a zero entry, log of the smallest positive entry) (exact.py)
        self._table_stats: dict[str, tuple[bool, float]] = {}
        self._check_tables()
        clg.check_shapes(self)

    # ------------------------------------------------------------------ structure
    def parents(self, name: str) -> tuple[str, ...]:
        """Parents of ``name`` in the order its conditional takes them."""
        return self._parents[self._check_name(name)]

    def children(self, name: str) -> tuple[str, ...]:
        """Children of ``name``, in topological order."""
        self._check_name(name)
        return tuple(n for n in self.nodes if name in self._parents[n])

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """All edges ``(parent, child)``, children in topological order."""
        return tuple((p, n) for n in self.nodes for p in self._parents[n])

    @property
    def spec(self) -> dict[str, Node | CPT]:
        """The normalized spec ``name -> Node | CPT``, in the order given."""
        return dict(self._spec)

    @property
    def evidence(self) -> dict[str, torch.Tensor]:
        """Observed values set by :meth:`condition` (state indices for discrete nodes)."""
        return dict(self._evidence)

    def factorization(self) -> str:
        """The factorization as text, e.g. ``"p(a) p(b | a) p(c | a)"``."""
        terms = []
        for n in self.nodes:
            ps = self._parents[n]
            terms.append(f"p({n} | {', '.join(ps)})" if ps else f"p({n})")
        return " ".join(terms)

    def __repr__(self) -> str:
        extra = f", observed={sorted(self._evidence)}" if self._evidence else ""
        extra += f", intervened={sorted(self._interventions)}" if self._interventions else ""
        return f"DAG({self.factorization()!r}{extra})"

    def _check_name(self, name: str) -> str:
        if name not in self._spec:
            raise DAGError(f"unknown node {name!r}{suggest(str(name), self._spec)}; "
                           f"nodes are {list(self.nodes)}")
        return name

    # ------------------------------------------------------------------ discrete tables
    def _static_discrete(self, name: str) -> Discrete | None:
        nd = self._spec[name]
        if isinstance(nd, CPT):
            return Discrete(nd.card, nd.states or _default_states(nd.card), nd.table)
        if nd.root is not None:
            return _root_table(nd.root)
        return None

    def _check_tables(self) -> None:
        for name in self.nodes:
            nd = self._spec[name]
            if not isinstance(nd, CPT):
                continue
            pstates = []
            for axis, p in enumerate(nd.parents):
                info = self._static_discrete(p)
                if info is None:
                    if self._spec[p].root is not None:
                        raise DAGError(f"node {name!r} is a cpt but its parent {p!r} is not a "
                                       f"discrete node ({type(self._spec[p].root).__name__}); "
                                       "a cpt needs discrete parents")
                    pstates.append(nd.parent_states.get(p, _default_states(nd.table.shape[axis])))
                    continue
                if info.card != nd.table.shape[axis]:
                    raise DAGError(f"cpt of node {name!r}: table axis {axis} (parent {p!r}) has "
                                   f"{nd.table.shape[axis]} states but {p!r} has {info.card} "
                                   f"{list(info.states)}; expected table shape "
                                   f"{self._expected_shape(name)}, got {tuple(nd.table.shape)}")
                declared = nd.parent_states.get(p)
                if declared is not None and tuple(declared) != info.states:
                    raise DAGError(f"cpt of node {name!r} names the states of {p!r} as "
                                   f"{list(declared)}, but {p!r} has states {list(info.states)}")
                pstates.append(info.states)
            self._check_rows(name, nd.table, nd.parents, pstates)

    def _expected_shape(self, name: str) -> tuple[int | str, ...]:
        nd = self._spec[name]
        cards: list[int | str] = []
        for p in nd.parents:
            info = self._static_discrete(p)
            cards.append(info.card if info is not None else "?")
        return (*cards, nd.card) if isinstance(nd, CPT) else tuple(cards)

    @staticmethod
    def _check_rows(name: str, table: torch.Tensor, parents: Sequence[str],
                    pstates: Sequence[Sequence[str]]) -> None:
        if not torch.isfinite(table).all():
            bad = torch.nonzero(~torch.isfinite(table))[0].tolist()
            raise DAGError(f"cpt of node {name!r} has a NaN/inf entry for parent configuration "
                           f"({_fmt_config(parents, pstates, bad[:-1])})")
        if (table < 0).any():
            bad = torch.nonzero(table < 0)[0].tolist()
            raise DAGError(f"cpt of node {name!r} has a negative entry {table[tuple(bad)]:.6g} "
                           f"for parent configuration ({_fmt_config(parents, pstates, bad[:-1])})")
        sums = table.sum(-1)
        off = (sums - 1).abs() > ROW_SUM_ATOL
        if off.any():
            bad = torch.nonzero(off)[0].tolist()
            where = _fmt_config(parents, pstates, bad) if parents else "no parents"
            raise DAGError(f"cpt of node {name!r}: the row for parent configuration ({where}) "
                           f"sums to {sums[tuple(bad)].item():.6g}, expected 1 (within "
                           f"{ROW_SUM_ATOL:g}); try normalizing, table / table.sum(-1, "
                           "keepdim=True)")

    def _discrete(self) -> dict[str, Discrete | None]:
        """Tables of every node whose conditional is discrete given discrete parents.

        Callables are tabulated by calling them once on the grid of all parent
        configurations (parents broadcast against each other), so a Bernoulli or Categorical
        conditional written as a function is as good as a :func:`cpt`.
        """
        if self._discrete_cache is not None:
            return self._discrete_cache
        out: dict[str, Discrete | None] = {}
        for name in self.nodes:
            nd = self._spec[name]
            info = self._static_discrete(name)
            if info is None and isinstance(nd, Node) and nd.root is None:
                pinfo = [out[p] for p in nd.parents]
                if all(pi is not None for pi in pinfo):
                    info = self._tabulate(name, nd, pinfo)
            if isinstance(nd, CPT):
                for axis, p in enumerate(nd.parents):
                    pi = out[p]
                    if pi is None or pi.card != nd.table.shape[axis]:
                        got = "continuous" if pi is None else f"{pi.card} states"
                        raise DAGError(f"cpt of node {name!r}: table axis {axis} (parent {p!r}) "
                                       f"has {nd.table.shape[axis]} states, but {p!r} is {got}")
            out[name] = info
        self._discrete_cache = out
        return out

    def _tabulate(self, name: str, nd: Node, pinfo: list[Discrete]) -> Discrete | None:
        m = len(pinfo)
        cards = [pi.card for pi in pinfo]
        grid = []
        for i, pi in enumerate(pinfo):
            shape = [1] * m
            shape[i] = pi.card
            v = torch.arange(pi.card).reshape(shape)
            grid.append(v.to(torch.get_default_dtype()) if pi.bernoulli else v)
        try:
            with torch.no_grad():
                d = nd(*grid)
        except Exception as exc:  # noqa: BLE001 -- any failure means "not tabulable"
            # A callable written for batches [N] may reject the grid [card_1, ..., card_m];
            # the node then counts as non-discrete, and exact inference says why.
            self._tabulate_errors[name] = f"{type(exc).__name__}: {exc}"
            return None
        if not isinstance(d, (Bernoulli, Categorical)) or d.event_shape != ():
            return None
        try:
            shape = torch.broadcast_shapes(d.batch_shape, tuple(cards))
        except RuntimeError:
            return None
        if shape != tuple(cards):
            return None
        if isinstance(d, Bernoulli):
            p = d.probs.detach().to(torch.float64).expand(cards)
            return Discrete(2, ("0", "1"), torch.stack([1 - p, p], -1), bernoulli=True)
        probs = d.probs.detach().to(torch.float64)
        probs = probs.expand(*cards, probs.shape[-1])
        return Discrete(probs.shape[-1], _default_states(probs.shape[-1]), probs)

    def is_discrete(self, name: str) -> bool:
        """Whether ``name`` has a finite table given its (discrete) parents."""
        return self._discrete()[self._check_name(name)] is not None

    def states(self, name: str) -> tuple[str, ...]:
        """State names of a discrete node (``"0", "1", ...`` unless named)."""
        info = self._discrete()[self._check_name(name)]
        if info is None:
            raise DAGError(f"node {name!r} is not discrete (its conditional is not a finite "
                           "table given discrete parents), so it has no states")
        return info.states

    def tables(self, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Float64 tables ``[card(pa_1), ..., card(pa_m), card]`` of discrete nodes.

        Tables of callables are computed afresh on every call (the callable may read
        ``pyro.param`` or module parameters that training has changed); :func:`cpt` tables
        and root distributions are fixed.

        Raises:
            InferenceError: one of ``names`` (default: all nodes) is not discrete.
        """
        info = self._discrete()
        names = self.nodes if names is None else names
        out = {}
        for n in names:
            table = None
            if info[n] is not None:
                nd = self._spec[n]
                fresh = (self._tabulate(n, nd, [info[p] for p in nd.parents])
                         if isinstance(nd, Node) and nd.root is None else info[n])
                if fresh is not None and fresh.table.shape == info[n].table.shape:
                    table = fresh.table
            if table is None:
                why = self._tabulate_errors.get(n)
                why = (f" (calling its conditional on the grid of parent states raised "
                       f"{why})" if why else " (continuous, or has a continuous parent)")
                raise InferenceError(f"exact inference needs discrete nodes, but {n!r} is not"
                                     f"{why}; use log_evidence(..., method='importance')")
            out[n] = table
        return out

    # ------------------------------------------------------------------ values
    def encode(self, name: str, value: Any) -> torch.Tensor:
        """Turn a state name, index or tensor into the value a node's sample site takes.

        Discrete nodes accept state names (str), indices (int), lists of those, or tensors of
        indices ``[B]``; the result is a long index tensor, or float for Bernoulli nodes.
        Other nodes accept anything ``torch.as_tensor`` takes.

        Raises:
            DAGError: unknown state names, or indices outside ``[0, card)``.
        """
        return self._to_value(name, self._to_index(name, value))

    def _to_index(self, name: str, value: Any) -> torch.Tensor:
        info = self._discrete()[self._check_name(name)]
        if info is None:
            if isinstance(value, str):
                raise DAGError(f"node {name!r} is continuous: expected a number or tensor, got "
                               f"the state name {value!r}; try a float value")
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                return value  # its own dtype, e.g. float64
            # numbers take the dtype the node's values have (float64 for gaussian nodes, so
            # conditioned and direct evidence agree bit for bit), else the default dtype
            dtype = getattr(self._spec[name], "value_dtype", None) or torch.get_default_dtype()
            return _as_tensor(name, value, dtype)
        if isinstance(value, str) or (isinstance(value, (list, tuple)) and value
                                      and all(isinstance(v, str) for v in value)):
            names = [value] if isinstance(value, str) else list(value)
            idx = []
            for s in names:
                if s not in info.states:
                    raise DAGError(f"node {name!r} has no state {s!r}"
                                   f"{suggest(s, info.states)}; states are {list(info.states)}")
                idx.append(info.states.index(s))
            t = torch.tensor(idx)
            return t[0] if isinstance(value, str) else t
        t = _as_tensor(name, value, None)
        if t.is_floating_point():
            if not torch.equal(t, t.round()):
                raise DAGError(f"node {name!r} is discrete; expected state indices or names, "
                               f"got non-integer values {t.flatten()[:5].tolist()}")
        t = t.long()
        if t.numel() and (t.min() < 0 or t.max() >= info.card):
            bad = int(t.min() if t.min() < 0 else t.max())
            raise DAGError(f"node {name!r} has {info.card} states {list(info.states)}; got index "
                           f"{bad}; expected 0..{info.card - 1}")
        return t

    def _to_value(self, name: str, index: torch.Tensor) -> torch.Tensor:
        info = self._discrete()[name]
        if info is not None and info.bernoulli:
            return index.to(torch.get_default_dtype())
        return index

    # ------------------------------------------------------------------ new DAGs
    def _derive(self, spec: Mapping[str, Node | CPT]) -> DAG:
        new = DAG(spec, name=self.name, properties=self.properties)
        new._evidence = dict(self._evidence)
        new._interventions = dict(self._interventions)
        return new

    def condition(self, evidence: Mapping[str, Any]) -> DAG:
        """A new DAG whose ``evidence`` nodes are observed (``obs=`` in :attr:`model`).

        .. math:: p(x \\mid e) \\propto \\prod_i p(x_i \\mid \\mathrm{pa}(x_i))
            \\big|_{x_e = e}

        The structure is unchanged (unlike :meth:`do`); :meth:`posterior` and
        :meth:`log_evidence` use the evidence, and :meth:`sample` clamps it.
        Values are state names, indices or tensors ``[B]`` (discrete), or tensors
        (continuous). Evidence of this DAG and the new one are merged.

        Raises:
            DAGError: unknown nodes or states, a node that is intervened on, or a node already
                observed with a different value.
        """
        if not isinstance(evidence, Mapping):
            raise DAGError(f"evidence must be a mapping name -> value, got "
                           f"{type(evidence).__name__}")
        for k in evidence:
            if k in self._interventions:
                raise DAGError(f"node {k!r} is intervened on (do): expected evidence on other "
                               f"nodes, got {k!r}; try conditioning before do(), on another "
                               "node")
        new = self._derive(self._spec)
        new._evidence = self._merge_evidence(evidence)
        new._discrete_cache = self._discrete_cache
        return new

    def _merge_evidence(self, evidence: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
        """This DAG's evidence plus ``evidence`` (as indices); a node observed twice must have
        the same value both times."""
        merged = dict(self._evidence)
        for k, v in (evidence or {}).items():
            idx = self._to_index(k, v)
            old = merged.get(k)
            if old is not None and not (old.shape == idx.shape and torch.equal(old, idx)):
                raise DAGError(f"node {k!r} is already observed (condition) with value "
                               f"{_short(old)}; expected new evidence to agree, got "
                               f"{_short(idx)}; try conditioning the unconditioned DAG")
            merged[k] = idx
        return merged

    def do(self, interventions: Mapping[str, Any]) -> DAG:
        """A new DAG where each intervened node is set to a constant, cutting incoming edges.

        .. math:: p(x \\mid do(x_k = v)) = \\delta_v(x_k) \\prod_{i \\ne k} p(x_i \\mid pa(x_i))

        Discrete nodes keep their states (a one-hot table); others become ``Delta(value)``.

        Reference: J. Pearl, *Causality*, 2nd ed., Cambridge University Press, 2009.
        """
        if not isinstance(interventions, Mapping):
            raise DAGError(f"interventions must be a mapping name -> value, got "
                           f"{type(interventions).__name__}")
        spec = dict(self._spec)
        info = self._discrete()
        for k, v in interventions.items():
            if k in self._evidence:
                raise DAGError(f"node {k!r} is observed (condition): expected interventions on "
                               f"unobserved nodes, got {k!r}; try do() on the unconditioned DAG")
            idx = self._to_index(k, v)
            if info[k] is not None:
                if idx.dim() != 0:
                    raise DAGError(f"do({k!r}=...) sets one value for every row: expected one "
                                   f"state, got a tensor of shape {tuple(idx.shape)}; try "
                                   "condition() for per-row values")
                table = torch.zeros(info[k].card, dtype=torch.float64)
                table[idx] = 1.0
                if info[k].bernoulli:
                    spec[k] = Node((), lambda: None, root=dist.Bernoulli(table[1].float()))
                else:
                    spec[k] = CPT((), table, info[k].states)
            else:
                if idx.dim() != self._event_dim(k):
                    raise DAGError(f"do({k!r}=...) sets one value for every row: expected a "
                                   f"value with {self._event_dim(k)} dims (the node's event "
                                   f"shape), got shape {tuple(idx.shape)}; try a scalar, or "
                                   "condition() for per-row values")
                spec[k] = Node((), lambda: None, root=dist.Delta(idx, event_dim=idx.dim()),
                               value_dtype=getattr(self._spec[k], "value_dtype", None))
        new = self._derive(spec)
        new._interventions.update(interventions)
        return new

    # ------------------------------------------------------------------ Pyro program
    def model(self, data: Mapping[str, Any] | None = None, *, size: int | None = None
              ) -> dict[str, torch.Tensor]:
        """The DAG as a Pyro program: one sample site per node inside ``plate("data")``.

        Args:
            data: extra observed values ``name -> tensor [N, *event_shape]`` (merged with
                :attr:`evidence`; a value of the node's event shape is one row, broadcast
                over the plate).
            size: plate size when nothing observed sets it (default 1).

        Returns:
            dict ``name -> value`` of every node (observed or sampled).
        """
        obs = {k: self._to_value(k, v) for k, v in self._merge_evidence(data).items()}
        n = self._plate_size(obs, size)
        values: dict[str, torch.Tensor] = {}
        with pyro.plate("data", n):
            for name in self.nodes:
                d = self._conditional(name, values)
                o = obs.get(name)
                if o is not None and o.dim() == self._event_dim(name):
                    o = o.expand(n, *o.shape)
                values[name] = pyro.sample(name, d, obs=o)
        return values

    def _event_dim(self, name: str) -> int:
        """Number of event dimensions of ``name``'s values (0 for scalar nodes)."""
        nd = self._spec[name]
        if isinstance(nd, CPT):
            return 0
        if nd.root is not None:
            return len(nd.root.event_shape)
        if self._event_dims is None:
            # A callable's event shape is only known from the distribution it returns: run
            # one prior draw (forked RNG, no gradients). Nodes after a failing call keep 0.
            dims: dict[str, int] = {}
            values: dict[str, torch.Tensor] = {}
            try:
                with torch.no_grad(), forked_rng(0):
                    for n in self.nodes:
                        dims[n] = len(self._conditional(n, values).event_shape)
                        values[n] = self._sample_node(n, values, (1,))
            except Exception:  # noqa: BLE001 -- e.g. callables written for larger batches
                pass
            self._event_dims = dims
        return self._event_dims.get(name, 0)

    def _batch_sizes(self, obs: Mapping[str, torch.Tensor]) -> set[int]:
        """Leading (batch) sizes of observed values that have more dims than their events."""
        return {int(v.shape[0]) for k, v in obs.items() if v.dim() > self._event_dim(k)}

    def _plate_size(self, obs: Mapping[str, torch.Tensor], size: int | None) -> int:
        sizes = self._batch_sizes(obs)
        if size is not None:
            sizes.add(int(size))
        if len(sizes) > 1:
            raise DAGError(f"observed values have different lengths {sorted(sizes)}; expected "
                           "one batch size B for every tensor")
        return sizes.pop() if sizes else 1

    def _conditional(self, name: str, values: Mapping[str, torch.Tensor]) -> Distribution:
        """The distribution of ``name`` given its parents' ``values`` (checked to be one)."""
        d = self._spec[name](*[values[p] for p in self._parents[name]])
        if not isinstance(d, Distribution):
            raise DAGError(f"node {name!r}: expected its conditional to return a "
                           f"torch/Pyro Distribution, got {type(d).__name__}; try returning "
                           "e.g. dist.Normal(loc, scale)")
        return d

    # ------------------------------------------------------------------ sampling
    def _cdf(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        if name not in self._sampler_cache:
            nd = self._spec[name]
            table = nd.table
            cards = table.shape[:-1]
            strides = torch.ones(len(cards), dtype=torch.long)
            for i in range(len(cards) - 2, -1, -1):
                strides[i] = strides[i + 1] * cards[i + 1]
            cdf = table.reshape(-1, table.shape[-1]).cumsum(-1)[:, :-1].T.contiguous()
            self._sampler_cache[name] = (cdf, strides)
        return self._sampler_cache[name]

    def _sample_node(self, name: str, values: Mapping[str, torch.Tensor],
                     shape: tuple[int, ...]) -> torch.Tensor:
        nd = self._spec[name]
        pvals = [values[p] for p in self._parents[name]]
        if isinstance(nd, CPT):
            # Inverse-CDF sampling for the whole batch: state = #{j < card-1 : u >= F_j(row)},
            # with one 1-d gather per CDF column (cheaper than a 2-d gather of whole rows or
            # torch.multinomial, which draws row by row).
            cdf, strides = self._cdf(name)
            flat = torch.zeros(shape, dtype=torch.long)
            for v, s in zip(pvals, strides.tolist()):
                flat.add_(v.long().expand(shape), alpha=s)
            u = torch.rand(shape, dtype=cdf.dtype).reshape(-1)
            flat = flat.reshape(-1)
            idx = torch.zeros_like(flat)
            for col in cdf:
                idx.add_(u >= col.index_select(0, flat))
            return idx.reshape(shape)
        d = self._conditional(name, values)
        bs = torch.broadcast_shapes(d.batch_shape, shape)
        return (d.expand(bs) if d.batch_shape != bs else d).sample()

    def _ancestral(self, shape: tuple[int, ...], observed: Mapping[str, torch.Tensor]
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sample unobserved nodes in topological order, whole batch per node.

        Returns the values and ``sum log p(obs | parents)`` per sample (likelihood weights).
        """
        values: dict[str, torch.Tensor] = {}
        log_w = torch.zeros(shape, dtype=torch.float64)
        for name in self.nodes:
            if name in observed:
                v = observed[name]
                d = self._conditional(name, values)
                lp = exact_log_prob(d, v)  # d.log_prob clamps probs at machine epsilon
                log_w = log_w + lp.to(torch.float64)
                values[name] = v.expand(shape + tuple(d.event_shape))
            else:
                values[name] = self._sample_node(name, values, shape)
        return values, log_w

    def sample(self, n: int, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Vectorized ancestral sampling: ``n`` joint draws, parents before children.

        .. math:: x_i^{(s)} \\sim p(x_i \\mid \\mathrm{pa}(x_i)^{(s)}), \\quad
            i = 1, \\dots, n_{\\mathrm{nodes}} \\text{ in topological order}

        Each node is sampled for the whole batch at once (no Python loop over samples);
        discrete tables use inverse-CDF sampling. Observed nodes of a conditioned DAG are
        clamped to their evidence (the draws are then the likelihood-weighting proposal, not
        the posterior; see :meth:`posterior` and :meth:`log_evidence`).

        Args:
            n: number of draws.
            seed: seeds a forked torch RNG (the global RNG is left untouched); ``None`` uses
                the global RNG.

        Returns:
            dict ``name -> tensor [n, *event_shape]``; discrete nodes give state indices
            (float ``0.``/``1.`` for Bernoulli nodes).
        """
        n = positive_int(n, "n")
        obs = {k: self._to_value(k, v) for k, v in self._evidence.items()}
        bad = [k for k, v in obs.items()
               if v.dim() > self._event_dim(k) and v.shape[0] not in (1, n)]
        if bad:
            raise DAGError(f"expected evidence batches of size n={n} (or 1), got other sizes on "
                           f"{bad}; try sample(n) with n equal to the evidence batch size")
        with torch.no_grad(), forked_rng(seed):
            values, _ = self._ancestral((n,), obs)
        return values

    def log_prob(self, values: Mapping[str, Any]) -> torch.Tensor:
        """Joint log density per row, :math:`\\sum_i \\log p(x_i \\mid pa(x_i))`.

        Args:
            values: every node ``name -> tensor [N, ...]`` (state names/indices for discrete).

        Returns:
            tensor ``[N]`` (float64 when any table is float64).
        """
        missing = [n for n in self.nodes if n not in values]
        if missing:
            raise DAGError(f"log_prob needs a value for every node; missing {missing}. For a "
                           "marginal use log_evidence(evidence)")
        unknown = [k for k in values if k not in self._spec]
        if unknown:
            self._check_name(unknown[0])
        vals = {k: self._to_value(k, self._to_index(k, values[k])) for k in self.nodes}
        total = 0.0
        for name in self.nodes:
            d = self._conditional(name, vals)
            total = total + exact_log_prob(d, vals[name])
        return torch.as_tensor(total)

    # ------------------------------------------------------------------ inference
    def posterior(self, query: str | Sequence[str], evidence: Mapping[str, Any] | None = None,
                  *, joint: bool = False, method: str = "exact", num_samples: int = 10_000,
                  seed: int | None = None) -> dict[str, Any] | torch.Tensor:
        """Exact posterior marginals :math:`p(q \\mid e)` by variable elimination.

        One ``opt_einsum`` contraction of the CPTs per query node, after pruning barren nodes
        and factors not connected to the query (see :mod:`pgm_lab.dag.exact`). With
        ``joint=True``, one contraction gives the joint posterior
        :math:`p(q_1, \\dots, q_k \\mid e)` of all query nodes.

        Args:
            query: a node name or a list of names (discrete nodes).
            evidence: ``name -> value`` with a state name, a state index, or an index tensor
                ``[B]`` (one batch size ``B`` for all tensors); merged with :attr:`evidence`
                (a node observed in both must have the same value in both).
            joint: return the joint posterior tensor instead of the marginals.
            method: ``"exact"``, or ``"importance"``: likelihood weighting for discrete query
                nodes given any evidence (continuous included), with standard errors
                (:func:`pgm_lab.dag.importance.importance_posterior`).
            num_samples, seed: particles per evidence row and RNG seed (``"importance"``).

        Returns:
            dict ``name -> float64 probs [card]`` (``[B, card]`` with batched evidence); with
            ``joint=True`` one float64 tensor ``[*batch, card(q_1), ..., card(q_k)]``. For
            linear-Gaussian query nodes (:func:`~pgm_lab.dag.gaussian`) the exact Gaussian
            posterior instead: dict ``name -> Normal`` (batch ``[*batch]``), or one
            ``MultivariateNormal`` with ``joint=True`` (:mod:`pgm_lab.dag.lingauss`); in a
            network with discrete nodes too, a ``MixtureSameFamily`` over the discrete
            configurations of ``Normal`` (``MultivariateNormal`` jointly) components
            (:mod:`pgm_lab.dag.clg`). With
            ``method="importance"``: dict ``name ->``
            :class:`~pgm_lab.dag.importance.PosteriorEstimate` (``probs``, ``stderr``,
            ``ess``).

        Raises:
            DAGError: unknown nodes or states, evidence of probability zero.
            InferenceError: the query, the evidence or an ancestor is not discrete.
        """
        names = [query] if isinstance(query, str) else (
            list(query) if isinstance(query, Iterable) else [])
        if method == "importance":
            if joint or not names:
                raise ConfigError("method='importance' estimates marginals of named nodes: "
                                  f"expected joint=False and query names, got joint={joint}, "
                                  f"query={query!r}")
            return {q: importance.importance_posterior(self, q, evidence,
                                                       num_samples=num_samples, seed=seed)
                    for q in dict.fromkeys(names)}
        if method != "exact":
            raise ConfigError(f"method must be 'exact' or 'importance', got {method!r}")
        known = [k for k in (*names, *self._evidence, *(evidence or {}))
                 if isinstance(k, str) and k in self._spec]  # others: errors below
        if (names and all(isinstance(self._spec.get(q), LinearGaussian) for q in names)
                and not clg.has_discrete(self, known)):
            return lingauss.posterior(self, names, evidence, joint=joint)
        if (names and all(q in known and (self.is_discrete(q) or clg.is_hybrid(self, [q]))
                          for q in names) and clg.is_hybrid(self, known)):
            return clg.posterior(self, names, evidence, joint=joint)
        if joint:
            return exact.joint_posterior(self, names, evidence)
        return exact.posterior(self, query, evidence)

    def marginals(self, evidence: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Posterior marginals of every unobserved discrete node at once, exact.

        One contraction and its gradient (Darwiche 2003; :func:`pgm_lab.dag.exact.marginals`)
        instead of one contraction per node.

        Args:
            evidence: as in :meth:`posterior` (index tensors ``[B]`` batch the rows).

        Returns:
            dict ``name -> float64 probs [card]`` (``[B, card]`` with batched evidence).
        """
        return exact.marginals(self, evidence)

    def map(self, evidence: Mapping[str, Any] | None = None,
            query: str | Sequence[str] | None = None
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Most probable explanation (``query=None``) or marginal MAP over ``query``.

        The MPE maximizes :math:`p(x, e)` over all unobserved nodes jointly (max-product);
        marginal MAP maximizes :math:`p(q, e) = \\sum_h p(q, h, e)` over the query nodes
        with the rest summed out. Neither is the per-variable argmax of
        :meth:`marginals`, which need not be a likely joint state at all. Details in
        :func:`pgm_lab.dag.mpe.map_assignment`.

        Returns:
            ``(assignment, log_prob)``: dict ``name -> long state index [*batch]`` and the
            float64 log joint :math:`\\log p(x^*, e)` ``[*batch]``.
        """
        return mpe.map_assignment(self, evidence, query)

    # ------------------------------------------------------------------ independence
    def is_dseparated(self, x: str | Iterable[str], y: str | Iterable[str],
                      given: str | Iterable[str] = ()) -> bool:
        """Whether ``given`` d-separates ``x`` from ``y`` (so :math:`x \\perp y \\mid given`
        in every distribution of this graph); see :mod:`pgm_lab.dag.independence`."""
        for v in (*independence.names(x, "x"), *independence.names(y, "y"),
                  *independence.names(given, "given")):
            self._check_name(v)
        return independence.is_dseparated(self._parents, x, y, given)

    def markov_blanket(self, name: str) -> tuple[str, ...]:
        """Parents, children and co-parents of ``name``, in topological order."""
        blanket = independence.markov_blanket(self._parents, self._check_name(name))
        return tuple(n for n in self.nodes if n in blanket)

    def independencies(self) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
        """The local Markov independencies ``(v, non-descendants, parents)``: each node is
        independent of its non-descendants (other than its parents) given its parents."""
        return independence.local_independencies(self._parents, self.nodes)

    def adjustment_set(self, treatment: str, outcome: str) -> tuple[str, ...]:
        """A minimal back-door adjustment set ``Z`` for the effect of ``treatment`` on
        ``outcome``: :math:`p(y \\mid do(x)) = \\sum_z p(y \\mid x, z) p(z)` (Pearl 2009);
        see :func:`pgm_lab.dag.independence.adjustment_set`."""
        return independence.adjustment_set(self._parents, self.nodes, self._check_name(treatment),
                              self._check_name(outcome))

    def average_causal_effect(self, data: Mapping[str, Any], treatment: str, outcome: str,
                              treatment_values: tuple[Any, Any] = (0, 1)
                              ) -> causal.CausalEffect:
        """Estimate :math:`E[y \\mid do(t=b)] - E[y \\mid do(t=a)]` from observational
        ``data`` (``name -> values [N]``) by back-door adjustment over
        :meth:`adjustment_set`, with its standard error; see
        :func:`pgm_lab.dag.causal.average_causal_effect`."""
        return causal.average_causal_effect(self, data, treatment, outcome, treatment_values)

    def log_evidence(self, evidence: Mapping[str, Any] | None = None, *, method: str = "exact",
                     num_samples: int = 1000, guide: Callable | None = None,
                     seed: int | None = None, return_info: bool = False) -> Any:
        """Log marginal likelihood :math:`\\log p(e)` of the evidence, tensor ``[*batch]``.

        Args:
            evidence: ``name -> value`` merged with this DAG's evidence.
            method: ``"exact"`` (variable elimination, discrete networks, float64; the closed
                form of :mod:`pgm_lab.dag.lingauss` for linear-Gaussian evidence) or
                ``"importance"`` (likelihood weighting with the prior as proposal, or
                ``guide``; any network).
            num_samples: number of importance samples ``K``.
            guide: a Pyro callable proposing the latent nodes (``method="importance"``).
            seed: seed of the importance sampler.
            return_info: with ``method="importance"``, return the
                :class:`~pgm_lab.dag.importance.ImportanceResult` (estimate, standard error,
                effective sample size, log weights) instead of the tensor.
        """
        if method == "exact":
            if return_info:
                raise ConfigError("return_info=True needs method='importance' (the exact "
                                  "method has no standard error)")
            observed = {**self._evidence, **(evidence or {})}
            if observed and all(isinstance(self._spec.get(k), LinearGaussian) for k in observed):
                return lingauss.log_evidence(self, evidence)
            if clg.is_hybrid(self, [k for k in observed if k in self._spec]):
                return clg.log_evidence(self, evidence)
            return exact.log_evidence(self, evidence)
        if method == "importance":
            res = importance.importance_log_evidence(self, evidence, num_samples=num_samples,
                                                     guide=guide, seed=seed)
            return res if return_info else res.log_evidence
        raise ConfigError(f"method must be 'exact' or 'importance', got {method!r}")

    # ------------------------------------------------------------------ learning, I/O, pictures
    def fit(self, data: Mapping[str, Any], **kwargs: Any) -> DAG:
        """Learn the conditionals from ``data`` (``name -> values [N]``).

        Closed-form maximum likelihood / Dirichlet posterior mean for tables, EM with hidden
        table nodes, or SVI for learnable callables; arguments, math and references in
        :func:`pgm_lab.dag.learn.fit`. Returns a new DAG (counts, EM) or ``self`` (SVI).
        """
        return learn.fit(self, data, **kwargs)

    def to_bif(self, path: str | os.PathLike | None = None) -> str:
        """The network as BIF (bnlearn) text, also written to ``path`` if given.

        Every node must be discrete; ``read_bif(path)`` gives back the same tables bit for
        bit. See :func:`pgm_lab.dag.bif.to_bif` and the format reference in :mod:`.bif`.
        """
        from .bif import to_bif

        return to_bif(self, path)

    def render(self, filename: str | os.PathLike | None = None, format: str = "png"):
        """A :class:`graphviz.Digraph` of the DAG's own edges (written if ``filename``).

        Discrete nodes show their state count, observed nodes are shaded, intervened nodes are
        boxes; without the ``dot`` binary a DOT file and a text picture are written instead.
        See :func:`pgm_lab.dag.render.render`.
        """
        return render.render(self, filename, format=format)


def _short(t: torch.Tensor) -> str:
    """A tensor's values for a message (the first five of a batch)."""
    if t.dim() == 0:
        return str(t.item())
    more = ", ..." if t.numel() > 5 else ""
    return f"{str(t.flatten()[:5].tolist())[:-1]}{more}] (shape {tuple(t.shape)})"


def _as_tensor(name: str, value: Any, dtype: torch.dtype | None) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DAGError(f"node {name!r}: expected a state name, an index or a tensor of "
                       f"them, got {value!r} ({exc}); try e.g. torch.tensor([0, 1])") from exc
