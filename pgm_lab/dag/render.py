"""Pictures of a DAG: a graphviz ``Digraph`` from the DAG's own edges, or plain text.

Discrete nodes show their number of states, observed nodes are shaded, intervened nodes
(:meth:`~pgm_lab.dag.DAG.do`) are drawn as boxes. Writing an image needs the graphviz ``dot``
binary; without it :func:`render` writes the DOT source and a text picture instead (and
warns), so scripts keep working on machines without graphviz.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import graphviz

from ..errors import PgmLabWarning

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["render", "to_text"]


def _label(dag: DAG, name: str) -> str:
    info = dag._discrete()[name]
    return f"{name}\n({info.card} states)" if info is not None else name


def to_text(dag: DAG) -> str:
    """One line per node in topological order: ``name [k states] <- parents`` with markers
    ``(observed)`` and ``(do)``."""
    info = dag._discrete()
    lines = []
    for n in dag.nodes:
        kind = f"[{info[n].card} states]" if info[n] is not None else "[continuous]"
        ps = dag.parents(n)
        line = f"{n} {kind}" + (f" <- {', '.join(ps)}" if ps else "")
        if n in dag.evidence:
            line += "  (observed)"
        if n in dag._interventions:
            line += "  (do)"
        lines.append(line)
    return "\n".join(lines)


def render(dag: DAG, filename: str | os.PathLike | None = None, format: str = "png"
           ) -> graphviz.Digraph:
    """A :class:`graphviz.Digraph` of ``dag`` (written to ``filename.<format>`` if given).

    Args:
        dag: the DAG.
        filename: output path without extension; ``None`` only builds the graph.
        format: any graphviz output format (``"png"``, ``"svg"``, ``"pdf"``...).

    Returns:
        the Digraph (its ``.source`` is the DOT text), named after ``dag.name``; an unnamed
        DAG (``name=None``) gives an anonymous ``digraph {``.

    Warns:
        pgm_lab.errors.PgmLabWarning: the ``dot`` binary is missing; ``filename.gv`` (DOT
            source) and ``filename.txt`` (:func:`to_text`) were written instead of the image.
    """
    g = graphviz.Digraph(name=dag.name, graph_attr={"rankdir": "TB"},
                         node_attr={"shape": "ellipse", "fontname": "Helvetica"})
    for n in dag.nodes:
        attrs = {}
        if n in dag.evidence:
            attrs.update(style="filled", fillcolor="gray80")
        if n in dag._interventions:
            attrs.update(shape="box")
        g.node(n, _label(dag, n), **attrs)
    for p, c in dag.edges:
        g.edge(p, c)
    if filename is not None:
        path = Path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            g.render(filename=str(path), format=format, cleanup=True)
        except graphviz.ExecutableNotFound:
            path.with_suffix(".gv").write_text(g.source)
            path.with_suffix(".txt").write_text(to_text(dag) + "\n")
            warnings.warn(f"graphviz 'dot' binary not found; wrote {path.with_suffix('.gv')} "
                          f"and {path.with_suffix('.txt')} instead of {path}.{format}. Install "
                          "graphviz (e.g. apt-get install graphviz) for images",
                          PgmLabWarning, stacklevel=3)
    return g
