"""Declarative directed graphical models (Bayesian networks) compiled to Pyro programs.

``DAG(spec)`` turns a mapping ``name -> conditional`` into a Pyro program with exact and
approximate inference, learning, BIF input/output and pictures::

    import pyro.distributions as dist
    from pgm_lab.dag import DAG, cpt, read_bif

    dag = DAG({"rain": cpt([], [0.8, 0.2], states=["no", "yes"]),
               "sprinkler": cpt(["rain"], [[0.6, 0.4], [0.99, 0.01]]),
               "wet": lambda rain, sprinkler: dist.Bernoulli(
                   0.05 + 0.5 * rain + 0.4 * sprinkler - 0.05 * rain * sprinkler)})
    dag.posterior("rain", {"wet": 1})       # exact, float64 probs [2]
    dag.sample(1000, seed=0)                # dict name -> tensor [1000]
    alarm = read_bif("alarm")               # bundled bnlearn network

Modules: :mod:`.spec` (``node``, ``cpt``, ``gaussian``), :mod:`.core` (``DAG``),
:mod:`.exact` (variable elimination, all marginals), :mod:`.mpe` (MPE, marginal MAP) on
:mod:`.maxplus`, :mod:`.independence` (d-separation, back-door sets), :mod:`.lingauss`
(linear-Gaussian networks), :mod:`.importance`, :mod:`.learn`, :mod:`.structure`
(``learn_structure``), :mod:`.bif`, :mod:`.render`,
:mod:`.networks`.
"""

from ..errors import DAGError
from .bif import parse_bif, read_bif, to_bif
from .core import DAG
from .importance import ImportanceResult, importance_log_evidence
from .interop import to_pgmpy
from .networks import available as available_networks
from .spec import CPT, ConditionalLinearGaussian, LinearGaussian, Node, cpt, gaussian, node
from .structure import learn_structure

__all__ = [
    "CPT",
    "ConditionalLinearGaussian",
    "DAG",
    "DAGError",
    "ImportanceResult",
    "LinearGaussian",
    "Node",
    "available_networks",
    "cpt",
    "gaussian",
    "importance_log_evidence",
    "learn_structure",
    "node",
    "parse_bif",
    "read_bif",
    "to_bif",
    "to_pgmpy",
]
