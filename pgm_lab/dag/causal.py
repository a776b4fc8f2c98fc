"""The average causal effect from observational data, by back-door adjustment.

With a valid back-door set :math:`Z` for treatment :math:`T` and outcome :math:`Y`
(:func:`~pgm_lab.dag.independence.adjustment_set`),
:math:`E[Y \\mid do(T = t)] = \\sum_z p(z)\\, E[Y \\mid T = t, Z = z]` (Pearl 2009, 3.3.1),
so with discrete :math:`Z` the plug-in estimate from ``N`` samples is the stratified mean

.. math:: \\hat\\tau = \\frac{1}{N} \\sum_{i=1}^N \\big(\\hat m_b(z_i) - \\hat m_a(z_i)\\big),
    \\quad \\hat m_t(z) = \\text{mean of } y_i \\text{ over the rows with } T = t, Z = z,

for :math:`\\tau = E[Y \\mid do(T=b)] - E[Y \\mid do(T=a)]`. Its standard error is
:math:`\\mathrm{sd}(\\varphi_i) / \\sqrt N` with the influence function (with saturated
strata the estimate equals the augmented inverse-probability-weighted one)

.. math:: \\varphi_i = \\hat m_b(z_i) - \\hat m_a(z_i)
    + \\frac{[t_i = b]}{\\hat\\pi_b(z_i)} (y_i - \\hat m_b(z_i))
    - \\frac{[t_i = a]}{\\hat\\pi_a(z_i)} (y_i - \\hat m_a(z_i)),

:math:`\\hat\\pi_t(z)` the fraction of rows with :math:`T = t` in stratum :math:`z`.

References:
    J. Pearl, *Causality*, 2nd ed., Cambridge University Press 2009, sec. 3.3.
    M. A. Hernán and J. M. Robins, *Causal Inference: What If*, CRC 2020, ch. 12-13.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ..errors import DAGError, DataError

if TYPE_CHECKING:
    from .core import DAG

__all__ = ["CausalEffect", "average_causal_effect"]


class CausalEffect(NamedTuple):
    """Result of :func:`average_causal_effect`.

    Attributes:
        estimate: :math:`\\hat\\tau` (float).
        stderr: its standard error (float).
        adjustment: the back-door set :math:`Z` used (node names).
    """

    estimate: float
    stderr: float
    adjustment: tuple[str, ...]


def average_causal_effect(dag: DAG, data: Mapping[str, Any], treatment: str, outcome: str,
                          treatment_values: tuple[Any, Any] = (0, 1)) -> CausalEffect:
    """Estimate :math:`E[Y \\mid do(T=b)] - E[Y \\mid do(T=a)]` from observational ``data``.

    Args:
        dag: the causal graph (only its structure and state names are used).
        data: ``name -> values [N]`` for the treatment, the outcome and the adjustment set
            :meth:`~pgm_lab.dag.DAG.adjustment_set` (discrete nodes: state names or indices).
        treatment: a discrete node :math:`T`.
        outcome: :math:`Y`, continuous (its values) or discrete (its state index).
        treatment_values: ``(a, b)``, state names or indices of :math:`T`.

    Returns:
        :class:`CausalEffect` (estimate, standard error, adjustment set).

    Raises:
        DAGError: the treatment is not discrete (so is ``Z``: its nodes are ancestors of the
            treatment, and discrete nodes have discrete parents), ``treatment_values`` is not
            a pair of states.
        DataError: a column is missing or of another length, or a stratum of :math:`Z` seen
            in ``data`` has no row with :math:`T = a` or :math:`T = b` (positivity).
    """
    if not dag.is_discrete(treatment):
        raise DAGError(f"treatment {treatment!r}: expected a discrete node, got a continuous "
                       "one; stratify a continuous treatment first")
    z = dag.adjustment_set(treatment, outcome)
    if not isinstance(treatment_values, (tuple, list)) or len(treatment_values) != 2:
        raise DAGError(f"treatment_values: expected a pair (a, b) of states of {treatment!r}, "
                       f"got {treatment_values!r}")
    missing = [n for n in (treatment, outcome, *z) if n not in data]
    if missing:
        raise DataError(f"data: expected columns {[treatment, outcome, *z]}, missing {missing}")
    cols = {n: dag._to_index(n, data[n]).reshape(-1) for n in (treatment, outcome, *z)}
    lengths = {n: c.shape[0] for n, c in cols.items()}
    if len(set(lengths.values())) != 1:
        raise DataError(f"data: expected columns of one length N, got {lengths}")
    a, b = (int(dag._to_index(treatment, v)) for v in treatment_values)
    t, y = cols[treatment], cols[outcome].to(torch.float64)
    n = t.shape[0]
    if z:
        _, stratum = torch.unique(torch.stack([cols[v] for v in z], -1), dim=0,
                                  return_inverse=True)
    else:
        stratum = torch.zeros(n, dtype=torch.long)
    k = int(stratum.max()) + 1
    size = torch.bincount(stratum, minlength=k).to(torch.float64)
    phi = torch.zeros(n, dtype=torch.float64)
    for sign, value in ((1.0, b), (-1.0, a)):
        hit = t == value
        count = torch.bincount(stratum[hit], minlength=k).to(torch.float64)
        if bool((count == 0).any()):
            bad = int(torch.nonzero(count == 0)[0])
            row = int(torch.nonzero(stratum == bad)[0])
            where = {v: int(cols[v][row]) for v in z}
            raise DataError(f"expected rows with {treatment}={value} in every stratum of "
                            f"{list(z)}, got none where {where} (positivity fails); try more "
                            "data or a coarser adjustment")
        mean = torch.bincount(stratum[hit], weights=y[hit], minlength=k) / count
        m = mean[stratum]
        phi += sign * (m + hit.to(torch.float64) * (y - m) * (size / count)[stratum])
    est = float(phi.mean())
    se = float(phi.std()) / math.sqrt(n) if n > 1 else math.inf
    return CausalEffect(est, se, z)
