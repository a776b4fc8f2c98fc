"""Conversion of discrete DAGs to pgmpy networks (pgmpy is optional: imported on use)."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import DAGError

__all__ = ["to_pgmpy"]


def to_pgmpy(dag: Any) -> Any:
    """The same network as a ``pgmpy.models.DiscreteBayesianNetwork``.

    Built directly from :meth:`DAG.tables` (not through BIF text), with the node and state
    names of ``dag``; pgmpy's CPD layout is ``[card(node), prod(card(parents))]``, parents in
    :meth:`DAG.parents` order. Useful as an oracle and to hand a network to pgmpy's tools.

    Raises:
        DAGError: a node is not discrete.
        ImportError: pgmpy is not installed (``pip install "pgmpy<1.3"``).
    """
    continuous = [n for n in dag.nodes if not dag.is_discrete(n)]
    if continuous:
        raise DAGError(f"to_pgmpy needs a discrete network; nodes {continuous} are not "
                       "discrete. Try tabulating them with cpt(...)")
    try:
        with warnings.catch_warnings():  # pgmpy's import emits FutureWarnings
            warnings.simplefilter("ignore")
            from pgmpy.factors.discrete import TabularCPD
            from pgmpy.models import DiscreteBayesianNetwork
    except ImportError as exc:
        raise ImportError('to_pgmpy needs pgmpy; install it with pip install "pgmpy<1.3"'
                          ) from exc
    model = DiscreteBayesianNetwork()
    model.add_nodes_from(dag.nodes)
    model.add_edges_from(dag.edges)
    cpds = []
    for n in dag.nodes:
        table = dag.tables([n])[n]
        ps = list(dag.parents(n))
        cpds.append(TabularCPD(n, table.shape[-1], table.reshape(-1, table.shape[-1]).T.numpy(),
                               evidence=ps or None,
                               evidence_card=[len(dag.states(p)) for p in ps] or None,
                               state_names={v: list(dag.states(v)) for v in (n, *ps)}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.add_cpds(*cpds)
    return model
