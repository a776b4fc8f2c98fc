"""Declarative directed graphical models (Bayesian networks) compiled to Pyro programs.

``DAG(spec)`` turns a mapping ``name -> conditional`` into a Pyro program with exact and
approximate inference, learning, BIF input/output and pictures.
"""

from ..errors import DAGError
from .bif import parse_bif, read_bif, to_bif
from .core import DAG
from .importance import ImportanceResult, importance_log_evidence
from .networks import available as available_networks
from .spec import CPT, Node, cpt, node

__all__ = [
    "CPT",
    "DAG",
    "DAGError",
    "ImportanceResult",
    "Node",
    "available_networks",
    "cpt",
    "importance_log_evidence",
    "node",
    "parse_bif",
    "read_bif",
    "to_bif",
]
