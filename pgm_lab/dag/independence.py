"""Conditional independence read off the graph: d-separation, Markov blankets, back-door sets.

*d-separation* (Pearl 1988): ``X`` and ``Y`` are d-separated by ``Z`` iff they are separated
in the moral graph of the ancestral set :math:`\\mathrm{An}(X \\cup Y \\cup Z)` once ``Z`` is
removed (Lauritzen et al. 1990); then :math:`X \\perp Y \\mid Z` in every distribution that
factorizes over the DAG. Linear in the size of the ancestral graph.

*Back-door criterion* (Pearl 2009, def. 3.3.1): ``Z`` is a valid adjustment set for the
effect of ``X`` on ``Y`` if no node of ``Z`` is a descendant of ``X`` and ``Z`` d-separates
``X`` from ``Y`` in the graph without the edges out of ``X``; then

.. math:: p(y \\mid do(x)) = \\sum_z p(y \\mid x, z)\\, p(z).

References:
    J. Pearl, *Probabilistic Reasoning in Intelligent Systems*, Morgan Kaufmann 1988.
    S. L. Lauritzen, A. P. Dawid, B. N. Larsen and H.-G. Leimer, "Independence properties of
    directed Markov fields", Networks 20, 1990.
    J. Pearl, *Causality*, 2nd ed., Cambridge University Press 2009, sec. 3.3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ..errors import DAGError
from .graph import ancestors

__all__ = ["adjustment_set", "descendants", "is_backdoor", "is_dseparated",
           "local_independencies", "markov_blanket", "names"]

Parents = Mapping[str, Sequence[str]]


def names(x: str | Iterable[str], what: str) -> set[str]:
    out = {x} if isinstance(x, str) else set(x)
    if not all(isinstance(v, str) for v in out):
        raise DAGError(f"expected {what} to be a node name or a list of names, got {x!r}")
    return out


def descendants(parents: Parents, names: Iterable[str]) -> set[str]:
    """``names`` together with all their descendants: their ancestors in the reversed graph."""
    children: dict[str, list[str]] = {n: [] for n in parents}
    for n, ps in parents.items():
        for p in ps:
            children[p].append(n)
    return ancestors(children, names)


def is_dseparated(parents: Parents, x: str | Iterable[str], y: str | Iterable[str],
                  given: str | Iterable[str] = ()) -> bool:
    """Whether ``given`` d-separates every node of ``x`` from every node of ``y``.

    Raises:
        DAGError: ``x``, ``y`` and ``given`` overlap.
    """
    xs, ys, zs = names(x, "x"), names(y, "y"), names(given, "given")
    if xs & ys or (xs | ys) & zs:
        raise DAGError(f"expected disjoint node sets x, y and given, got x={sorted(xs)}, "
                       f"y={sorted(ys)}, given={sorted(zs)}")
    keep = ancestors(parents, xs | ys | zs)
    adj: dict[str, set[str]] = {n: set() for n in keep}
    for n in keep:
        ps = list(parents[n])
        for i, p in enumerate(ps):  # parent-child edges, and the moral edges between parents
            adj[n].add(p)
            adj[p].add(n)
            for q in ps[i + 1:]:
                adj[p].add(q)
                adj[q].add(p)
    seen = set(xs)
    stack = list(xs)
    while stack:
        for m in adj[stack.pop()]:
            if m in ys:
                return False
            if m not in seen and m not in zs:
                seen.add(m)
                stack.append(m)
    return True


def markov_blanket(parents: Parents, name: str) -> set[str]:
    """Parents, children and the children's other parents of ``name``: given them, ``name``
    is independent of every other node."""
    kids = [n for n, ps in parents.items() if name in ps]
    out = set(parents[name]) | set(kids)
    for k in kids:
        out |= set(parents[k])
    out.discard(name)
    return out


def local_independencies(parents: Parents, order: Sequence[str]
                         ) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The local Markov property: each node ``v`` is independent of its non-descendants
    other than its parents, given its parents. Returns ``(v, others, parents)`` triples
    (``others`` in ``order``), those with no ``others`` left out."""
    out = []
    for v in order:
        below = descendants(parents, [v])
        others = tuple(n for n in order if n not in below and n not in parents[v])
        if others:
            out.append((v, others, tuple(parents[v])))
    return out


def is_backdoor(parents: Parents, treatment: str, outcome: str, z: Iterable[str]) -> bool:
    """Whether ``z`` satisfies the back-door criterion for ``treatment`` -> ``outcome``."""
    z = set(z)
    if z & descendants(parents, [treatment]):
        return False
    cut = {n: tuple(p for p in ps if p != treatment) for n, ps in parents.items()}
    return is_dseparated(cut, treatment, outcome, z)


def adjustment_set(parents: Parents, order: Sequence[str], treatment: str, outcome: str
                   ) -> tuple[str, ...]:
    """A minimal valid back-door adjustment set for the effect of ``treatment`` on
    ``outcome`` (in ``order``).

    Starts from the non-descendants of ``treatment`` among the ancestors of both nodes (or,
    if that set is not valid, the parents of ``treatment``, which always are when every
    node is observed) and drops nodes, latest in ``order`` first, while the rest stays
    valid.

    Raises:
        DAGError: ``treatment`` equals ``outcome``, or ``outcome`` is an ancestor of
            ``treatment`` (no causal effect to adjust for).
    """
    if treatment == outcome:
        raise DAGError(f"expected different treatment and outcome, got {treatment!r} twice")
    if outcome in ancestors(parents, [treatment]):
        raise DAGError(f"expected an outcome that is not an ancestor of the treatment, got "
                       f"{outcome!r} -> ... -> {treatment!r}; intervening on {treatment!r} "
                       f"does not change {outcome!r}")
    below = descendants(parents, [treatment])
    z = [n for n in order if n in ancestors(parents, [treatment, outcome]) and n not in below
         and n != outcome]
    if not is_backdoor(parents, treatment, outcome, z):
        z = [n for n in order if n in parents[treatment]]  # always valid (Pearl 2009, 3.3)
    for n in reversed(list(z)):
        rest = [m for m in z if m != n]
        if is_backdoor(parents, treatment, outcome, rest):
            z = rest
    return tuple(z)
