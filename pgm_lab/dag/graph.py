"""Graph algorithms on ``name -> parents`` mappings: topological order, cycles, ancestors."""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterable, Mapping, Sequence

from ..errors import DAGError

__all__ = ["ancestors", "check_parents", "suggest", "topological_order"]


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate names, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in candidates}
        close = [lowered[name.lower()]] if name.lower() in lowered else []
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def check_parents(parents: Mapping[str, Sequence[str]]) -> None:
    """Raise :class:`DAGError` naming the first unknown parent (with close-name hints)."""
    for child, ps in parents.items():
        for p in ps:
            if p not in parents:
                raise DAGError(f"node {child!r} has unknown parent {p!r}{suggest(p, parents)} "
                               f"(known nodes: {sorted(parents)})")
            if p == child:
                raise DAGError(f"node {child!r} lists itself as a parent: cycle {child} -> "
                               f"{child}")


def _find_cycle(parents: Mapping[str, Sequence[str]], remaining: set[str]) -> list[str]:
    # Walk parent links inside the nodes Kahn's algorithm could not order: each such node
    # has a parent among them, so the walk must revisit a node, closing a cycle.
    start = min(remaining)
    seen: dict[str, int] = {}
    path: list[str] = []
    cur = start
    while cur not in seen:
        seen[cur] = len(path)
        path.append(cur)
        cur = next(p for p in parents[cur] if p in remaining)
    cycle = path[seen[cur]:] + [cur]
    return cycle[::-1]  # parent -> child direction


def topological_order(parents: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Kahn's algorithm; ties keep the spec's order, so the result is deterministic.

    Raises:
        DAGError: the graph has a cycle; the message prints it as ``a -> b -> a``.
    """
    check_parents(parents)
    children: dict[str, list[str]] = {n: [] for n in parents}
    indeg = {n: len(set(ps)) for n, ps in parents.items()}
    for n, ps in parents.items():
        for p in set(ps):
            children[p].append(n)
    rank = {n: i for i, n in enumerate(parents)}
    order: list[str] = []
    heap = [(rank[n], n) for n, d in indeg.items() if d == 0]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        order.append(n)
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                heapq.heappush(heap, (rank[c], c))
    if len(order) < len(parents):
        remaining = set(parents) - set(order)
        cycle = _find_cycle(parents, remaining)
        raise DAGError(f"the graph has a cycle: {' -> '.join(cycle)}; a DAG must be acyclic "
                       "(remove one of these edges)")
    return tuple(order)


def ancestors(parents: Mapping[str, Sequence[str]], names: Iterable[str]) -> set[str]:
    """``names`` together with all their ancestors."""
    out: set[str] = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n not in out:
            out.add(n)
            stack.extend(parents[n])
    return out
