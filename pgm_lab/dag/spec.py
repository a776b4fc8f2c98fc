"""Building blocks of a DAG specification: :func:`node` (explicit parents) and :func:`cpt`.

A DAG spec maps node names to one of

- a :class:`torch.distributions.Distribution` (a root node),
- a callable whose argument names are its parents (as TFP's ``JointDistributionNamed``),
- :func:`node` (a callable with explicitly listed parents, called positionally),
- :func:`cpt` (a discrete conditional probability table).

:func:`as_node` turns any of these into a :class:`Node`, the one internal representation.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from torch.distributions import Distribution

from ..errors import DAGError

__all__ = ["CPT", "ConditionalLinearGaussian", "LinearGaussian", "Node", "as_node", "cpt",
           "gaussian", "node"]


@dataclass(frozen=True)
class Node:
    """One conditional ``p(x | parents)`` of a DAG.

    Attributes:
        parents: parent names, in the order ``fn`` takes them.
        fn: ``fn(*parent_values) -> Distribution``; for a root, ``fn()`` returns ``root``.
        root: the distribution of a root node given as a distribution (else ``None``).
        keywords: call ``fn`` with keyword arguments named after the parents.
        value_dtype: the dtype of every value the conditional produces, when the node fixes
            it (``torch.float64`` for :func:`gaussian` nodes), else ``None``. Python numbers
            given as evidence or values of the node take this dtype (else the default dtype),
            so they enter the node's computations unrounded.
    """

    parents: tuple[str, ...]
    fn: Callable[..., Distribution]
    root: Distribution | None = None
    keywords: bool = False
    value_dtype: torch.dtype | None = None

    def __call__(self, *values: torch.Tensor) -> Distribution:
        """The distribution of the node given parent values (in :attr:`parents` order)."""
        if self.root is not None:
            return self.root
        if self.keywords:
            return self.fn(**dict(zip(self.parents, values)))
        return self.fn(*values)


@dataclass(frozen=True, eq=False)
class CPT:
    """A discrete conditional probability table ``p(x | parents)``.

    Attributes:
        parents: parent names (axis ``i`` of ``table`` indexes the states of ``parents[i]``).
        table: float64 tensor ``[card(parents[0]), ..., card(parents[-1]), card(x)]``; the last
            axis is the distribution of ``x`` for one parent configuration.
        states: state names of ``x`` (``None`` -> ``"0", "1", ...``).
        parent_states: state names of the parents, as declared by the table's author (checked
            against the parents' own states when the DAG is built).
        properties: free-form BIF ``property`` lines, kept for an exact round trip.
    """

    parents: tuple[str, ...]
    table: torch.Tensor
    states: tuple[str, ...] | None = None
    parent_states: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    properties: tuple[str, ...] = ()

    @property
    def card(self) -> int:
        """Number of states of the node."""
        return int(self.table.shape[-1])

    @functools.cached_property
    def log_table(self) -> torch.Tensor:
        """:math:`\\log (T / \\sum_k T_{\\cdot k})`, the log of the row-normalized table (what
        ``Categorical(probs=...)`` stores), same shape and dtype as :attr:`table`; ``-inf``
        where :math:`T = 0`. Computed once."""
        return (self.table / self.table.sum(-1, keepdim=True)).log()

    def __call__(self, *values: torch.Tensor) -> dist.Categorical:
        """``Categorical(probs=table[v_1, ..., v_m])`` for parent state indices ``v_i``
        (broadcast against each other; batch shape = their broadcast shape), whose
        ``logits`` are the exact :attr:`log_table` rows.

        ``torch.distributions`` derives logits from ``probs`` clamped at machine epsilon,
        so a zero-probability state would score :math:`\\log \\epsilon \\approx -36`
        (float64) instead of :math:`-\\infty` at the sample sites of the Pyro program, and
        entries below :math:`\\epsilon` would be wrong. Here ``log_prob`` (and every trace
        log density) is :math:`\\log T[v_1, \\dots, v_m, x]` exactly, while draws are those of
        the probability table itself (``torch.multinomial`` on ``probs``, as before).
        """
        idx = tuple(torch.as_tensor(v).long() for v in values)
        d = dist.Categorical(probs=self.table[idx] if idx else self.table)
        d.logits = self.log_table[idx] if idx else self.log_table  # replaces the lazy clamp
        return d


@dataclass(frozen=True, eq=False)
class LinearGaussian(Node):
    """A linear-Gaussian conditional :math:`x \\mid u \\sim N(b_0 + w^\\top u, \\sigma^2)`.

    Attributes (besides :class:`Node`'s): ``coef`` float64 ``[m]`` (one weight per parent),
    ``intercept`` :math:`b_0` and ``scale`` :math:`\\sigma > 0` (floats). Its values are
    float64 (:attr:`value_dtype`).
    """

    value_dtype: torch.dtype | None = torch.float64

    coef: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    intercept: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True, eq=False)
class ConditionalLinearGaussian(Node):
    """A conditional linear-Gaussian (CLG) node: each configuration :math:`d` of its discrete
    parents selects its own regression on the continuous parents :math:`u`,
    :math:`x \\mid d, u \\sim N(b_d + w_d^\\top u, \\sigma_d^2)`.

    Attributes (besides :class:`Node`'s): ``discrete`` the discrete parents (axes of the
    tables, in this order), ``continuous`` the other parents (in ``parents`` order),
    ``coef`` float64 ``[card(d_1), ..., card(d_k), m]``, ``intercept`` and ``scale`` float64
    ``[card(d_1), ..., card(d_k)]``. Its values are float64 (:attr:`value_dtype`).
    """

    value_dtype: torch.dtype | None = torch.float64

    discrete: tuple[str, ...] = ()
    continuous: tuple[str, ...] = ()
    coef: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    intercept: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    scale: torch.Tensor = field(default_factory=lambda: torch.ones((), dtype=torch.float64))


def gaussian(parents: Sequence[str], coef: Sequence[float] | torch.Tensor,
             intercept: float | Sequence | torch.Tensor = 0.0,
             scale: float | Sequence | torch.Tensor = 1.0, *,
             discrete: Sequence[str] = ()) -> LinearGaussian | ConditionalLinearGaussian:
    """A (conditional) linear-Gaussian node for a :class:`DAG` spec.

    .. math:: p(x \\mid d, u_1, \\dots, u_m) = N\\big(x;\\ b_d + \\textstyle\\sum_j w_{d,j} u_j,\\
        \\sigma_d^2\\big)

    Without ``discrete`` parents there is one regression (a :class:`LinearGaussian`) and a
    discrete parent, if any, enters as its state index (a number). Parents named in
    ``discrete`` instead select the row of ``coef``, ``intercept`` and ``scale`` for their
    configuration :math:`d` (a :class:`ConditionalLinearGaussian`; the shapes are checked
    against the parents' states when the DAG is built).

    A network of linear-Gaussian nodes is one multivariate normal, so
    :meth:`~pgm_lab.dag.DAG.posterior` and ``log_evidence(method="exact")`` are exact and
    closed form there (:mod:`pgm_lab.dag.lingauss`), and :meth:`~pgm_lab.dag.DAG.fit` is
    least squares. Given its discrete nodes a CLG network is one too, so posteriors given
    discrete and continuous evidence are exact by enumeration of the discrete
    configurations (:mod:`pgm_lab.dag.clg`): probabilities for discrete queries, a mixture
    of Gaussians for continuous ones.

    Args:
        parents: names of the parents.
        coef: the weights :math:`w_j` of the ``m`` continuous parents (``parents`` without
            ``discrete``, in ``parents`` order): ``[m]``, or ``[card(d_1), ..., card(d_k), m]``
            with ``k`` discrete parents.
        intercept: :math:`b_0`, a float or ``[card(d_1), ..., card(d_k)]`` (broadcast).
        scale: the standard deviation :math:`\\sigma > 0`, as ``intercept``.
        discrete: the parents whose states select the coefficients (keyword only).

    Raises:
        DAGError: parents not a list of distinct names, ``discrete`` not among them, ``coef``
            of the wrong shape or not finite, ``scale`` not positive.

    Example:
        >>> x = gaussian([], [], intercept=1.0, scale=2.0)
        >>> y = gaussian(["x"], [0.5], intercept=-5.0, scale=2.0)
        >>> z = gaussian(["a", "x"], [[0.5], [-1.0]], intercept=[0.0, 3.0], discrete=["a"])
    """
    if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
        raise DAGError(f"gaussian parents must be a list of node names, got {parents!r}; "
                       "try gaussian(['a'], [0.5])")
    parents = tuple(parents)
    if len(set(parents)) != len(parents):
        raise DAGError(f"gaussian parents must be distinct, got {list(parents)}")
    if isinstance(discrete, str) or not all(isinstance(p, str) for p in discrete):
        raise DAGError(f"gaussian discrete must be a list of parent names, got {discrete!r}; "
                       "try discrete=['a']")
    discrete = tuple(dict.fromkeys(discrete))
    if not set(discrete) <= set(parents):
        raise DAGError(f"gaussian discrete must name parents {list(parents)}, got "
                       f"{list(discrete)}; try adding them to parents")
    if discrete:
        return _conditional_gaussian(parents, discrete, coef, intercept, scale)
    try:
        w = torch.as_tensor(coef, dtype=torch.float64).reshape(-1)
        b0, sigma = float(intercept), float(scale)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DAGError(f"gaussian coef, intercept and scale must be numbers: {exc}") from exc
    if w.numel() != len(parents):
        raise DAGError(f"gaussian with parents {list(parents)} needs {len(parents)} coef, got "
                       f"{w.numel()}; try coef=[{', '.join(['1.0'] * len(parents))}]")
    if not (bool(torch.isfinite(w).all()) and math.isfinite(b0)):
        raise DAGError(f"gaussian coef and intercept must be finite, got coef={w.tolist()}, "
                       f"intercept={b0}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise DAGError(f"gaussian scale must be a positive float, got {scale!r}; try scale=1.0")

    def conditional(*values: torch.Tensor) -> dist.Normal:
        loc = torch.as_tensor(b0, dtype=torch.float64)
        for wj, v in zip(w, values):
            loc = loc + wj * torch.as_tensor(v, dtype=torch.float64)
        return dist.Normal(loc, torch.as_tensor(sigma, dtype=torch.float64))

    return LinearGaussian(parents, conditional, coef=w, intercept=b0, scale=sigma)


def _conditional_gaussian(parents: tuple[str, ...], discrete: tuple[str, ...], coef, intercept,
                          scale) -> ConditionalLinearGaussian:
    continuous = tuple(p for p in parents if p not in discrete)
    k, m = len(discrete), len(continuous)
    try:
        w = torch.as_tensor(coef, dtype=torch.float64)
        b = torch.as_tensor(intercept, dtype=torch.float64)
        s = torch.as_tensor(scale, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DAGError(f"gaussian coef, intercept and scale must be numbers: {exc}") from exc
    if m == 0 and w.numel() == 0 and w.dim() <= 1:
        w = torch.zeros(*b.shape, *s.shape[len(b.shape):], 0, dtype=torch.float64)
    expected = f"[{', '.join(f'card({d})' for d in discrete)}, {m}]"
    if w.dim() != k + 1 or w.shape[-1] != m:
        raise DAGError(f"gaussian with discrete parents {list(discrete)} and continuous parents "
                       f"{list(continuous)}: expected coef of shape {expected}, got "
                       f"{tuple(w.shape)}")
    try:
        b = b.expand(w.shape[:-1]).clone()
        s = s.expand(w.shape[:-1]).clone()
    except RuntimeError as exc:
        raise DAGError(f"gaussian intercept {tuple(b.shape)} and scale {tuple(s.shape)} must "
                       f"broadcast to the discrete configurations {tuple(w.shape[:-1])} of "
                       f"coef (shape {expected[:-len(f', {m}]')]}])") from exc
    if not (bool(torch.isfinite(w).all()) and bool(torch.isfinite(b).all())):
        raise DAGError("gaussian coef and intercept must be finite, got non-finite entries")
    if not (bool((s > 0).all()) and bool(torch.isfinite(s).all())):
        raise DAGError(f"gaussian scale must be positive, got {s.flatten()[:5].tolist()}; try "
                       "scale=1.0")
    d_pos = [parents.index(d) for d in discrete]
    c_pos = [parents.index(c) for c in continuous]

    def conditional(*values: torch.Tensor) -> dist.Normal:
        idx = tuple(torch.as_tensor(values[i]).long() for i in d_pos)
        loc = b[idx]
        for j, i in enumerate(c_pos):
            loc = loc + w[idx + (j,)] * torch.as_tensor(values[i], dtype=torch.float64)
        return dist.Normal(loc, s[idx])

    return ConditionalLinearGaussian(parents, conditional, discrete=discrete,
                                     continuous=continuous, coef=w, intercept=b, scale=s)


def cpt(
    parents: Sequence[str],
    table: torch.Tensor | Sequence,
    states: Sequence[str] | None = None,
    parent_states: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None = None,
) -> CPT:
    """A discrete conditional probability table ``p(x | parents)`` for a :class:`DAG` spec.

    .. math:: p(x = k \\mid \\mathrm{pa}(x) = (j_1, \\dots, j_m)) = T[j_1, \\dots, j_m, k]

    Args:
        parents: names of the ``m`` parents (any number, possibly none).
        table: nested lists or tensor of shape ``[card(pa_1), ..., card(pa_m), card(x)]``;
            every row ``T[j_1, ..., j_m, :]`` must be a probability vector (checked when the
            DAG is built, naming the parent configuration of a bad row).
        states: names of the node's states (default ``"0", "1", ...``).
        parent_states: names of the parents' states, a mapping ``parent -> names`` or a list
            aligned with ``parents``; used in messages and checked against the parents.

    Returns:
        a :class:`CPT`; the distribution for parent values ``v`` is
        ``Categorical(probs=T[v_1, ..., v_m])`` with exact logits :math:`\\log T` (no clamping
        at machine epsilon), and its samples are state indices.

    Example:
        >>> c = cpt(["a"], [[0.9, 0.1], [0.2, 0.8]], states=["off", "on"])
    """
    if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
        raise DAGError(f"cpt parents must be a list of node names, got {parents!r}; "
                       "try cpt(['a', 'b'], table)")
    parents = tuple(parents)
    if len(set(parents)) != len(parents):
        raise DAGError(f"cpt parents must be distinct, got {list(parents)}")
    try:
        t = torch.as_tensor(table, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DAGError(f"cpt table must be a (nested) list or tensor of numbers: {exc}") from exc
    if t.dim() != len(parents) + 1:
        raise DAGError(f"cpt table with {len(parents)} parents {list(parents)} must have "
                       f"{len(parents) + 1} dimensions [parent cards..., card], got shape "
                       f"{tuple(t.shape)}")
    if t.shape[-1] < 1 or any(s < 1 for s in t.shape):
        raise DAGError(f"cpt table has an empty dimension: shape {tuple(t.shape)}")
    if states is not None:
        states = tuple(str(s) for s in states)
        if len(states) != t.shape[-1]:
            raise DAGError(f"cpt has {t.shape[-1]} columns (states) but {len(states)} state "
                           f"names {list(states)}")
        if len(set(states)) != len(states):
            raise DAGError(f"cpt state names must be distinct, got {list(states)}")
    ps: dict[str, tuple[str, ...]] = {}
    if parent_states is not None:
        items = (parent_states.items() if isinstance(parent_states, Mapping)
                 else zip(parents, parent_states))
        for p, names in items:
            if p not in parents:
                raise DAGError(f"parent_states names {p!r}, which is not a parent {list(parents)}")
            names = tuple(str(s) for s in names)
            axis = parents.index(p)
            if len(names) != t.shape[axis]:
                raise DAGError(f"cpt table axis {axis} (parent {p!r}) has {t.shape[axis]} "
                               f"states, but parent_states gives {len(names)}: {list(names)}")
            ps[p] = names
    return CPT(parents, t, states, ps)


def node(fn: Callable[..., Distribution], parents: Sequence[str] = ()) -> Node:
    """A conditional given by ``fn(*parent_values) -> Distribution`` with explicit parents.

    Use it when the callable's argument names are not the parent names (e.g. a ``nn.Module``
    or a function of ``*args``). The parents are passed positionally, in the listed order.

    Raises:
        DAGError: ``fn`` is not callable, ``parents`` is not a list of distinct names, or
            ``fn``'s signature cannot take ``len(parents)`` positional arguments.

    Example:
        >>> n = node(lambda loc, s: dist.Normal(loc, s.exp()), parents=["mu", "log_sigma"])
    """
    if not callable(fn):
        raise DAGError(f"node(fn, parents) needs a callable fn, got {type(fn).__name__}")
    if isinstance(parents, str) or not all(isinstance(p, str) for p in parents):
        raise DAGError(f"node parents must be a list of node names, got {parents!r}")
    if len(set(parents)) != len(parents):
        raise DAGError(f"node parents must be distinct, got {list(parents)}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins/extension callables have none
        sig = None
    if sig is not None:
        try:
            sig.bind(*parents)
        except TypeError as exc:
            raise DAGError(f"node(fn, parents): fn is called with one positional argument per "
                           f"parent; expected fn to accept {len(parents)} ({list(parents)}), "
                           f"got signature {sig} ({exc}); try matching the parents list") from exc
    return Node(tuple(parents), fn)


def as_node(name: str, value: object) -> Node | CPT:
    """Turn one spec entry into a :class:`Node` or :class:`CPT` (validates its form)."""
    if isinstance(value, (Node, CPT)):  # LinearGaussian is a Node
        return value
    if isinstance(value, Distribution):
        if value.batch_shape != ():
            raise DAGError(f"node {name!r}: expected a root distribution with batch_shape (), "
                           f"got batch_shape {tuple(value.batch_shape)} (the plate 'data' "
                           "adds the batch); try .to_event(1) for a vector-valued node")
        return Node((), lambda: value, root=value)
    if callable(value):
        try:
            sig = inspect.signature(value)
        except (TypeError, ValueError) as exc:
            raise DAGError(f"cannot read the parents of node {name!r} from its signature; "
                           "use node(fn, parents=[...])") from exc
        names = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise DAGError(f"node {name!r}: expected a callable whose argument names are "
                               f"its parents, got one with {str(p)}; try "
                               "node(fn, parents=[...])")
            if p.default is not p.empty:
                # as TFP's JointDistributionNamed: arguments with defaults are not parents
                continue
            if p.kind is p.POSITIONAL_ONLY:
                raise DAGError(f"node {name!r}: parents are passed by keyword, got the "
                               f"positional-only argument {p.name!r}; try "
                               "node(fn, parents=[...])")
            names.append(p.name)
        return Node(tuple(names), value, keywords=True)
    raise DAGError(f"node {name!r}: expected a Distribution, a callable returning one, "
                   f"node(...) or cpt(...), got {type(value).__name__}")
