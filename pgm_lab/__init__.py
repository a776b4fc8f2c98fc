"""pgm_lab: graphical models and deep generative models as Pyro programs."""

__version__ = "0.1.0"

from .dag import DAG, cpt, learn_structure, node, read_bif
from .errors import DAGError, PgmLabError, PgmLabWarning

__all__ = ["DAG", "DAGError", "PgmLabError", "PgmLabWarning", "__version__", "cpt",
           "learn_structure", "node", "read_bif"]
