"""An ``opt_einsum`` backend for the (max, +) semiring: ``einsum`` maximizes instead of summing.

.. math:: C[o] = \\max_{c} \\sum_i A_i[o, c]

over the contracted indices ``c`` of log-factors ``A_i``. Pass
``backend="pgm_lab.dag.maxplus"`` to a compiled ``opt_einsum`` expression: the same
contraction path that sums out variables for :mod:`pgm_lab.dag.exact` then maximizes them
out (max-product variable elimination in log space). Each reduction is ``Tensor.max(dim)``,
whose gradient goes to the single maximizing entry, so the gradient of the result with
respect to the operands is the argmax traceback: one consistent maximizing assignment,
ties broken by the first maximum. Unlike Pyro's ``pyro.ops.einsum.torch_map`` the operands
are plain tensors (no ``_pyro_dims``) and the traceback is autograd's.

References:
    A. P. Dawid, "Applications of a general propagation algorithm for probabilistic expert
    systems", Statistics and Computing 2, 1992 (max-propagation).
"""

from __future__ import annotations

import torch
from pyro.ops.einsum.util import Tensordot

__all__ = ["einsum", "tensordot", "transpose"]


def transpose(a: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``a`` with its axes permuted (the ``opt_einsum`` backend interface)."""
    return a.permute(axes)


def einsum(equation: str, *operands: torch.Tensor) -> torch.Tensor:
    """Max-plus ``einsum``: sum the broadcast operands, maximize over the contracted indices.

    Args:
        equation: ``"ab,bc->ac"`` form, one distinct letter per axis of each operand.
        operands: log-factors, one per input term.

    Returns:
        the tensor with the output's axes, in the output's order.
    """
    inputs, output = equation.split("->")
    terms = inputs.split(",")
    contracted = sorted(set("".join(terms)) - set(output))
    dims = list(output) + contracted
    sizes = {d: t.shape[i] for term, t in zip(terms, operands) for i, d in enumerate(term)}
    total = None
    for term, t in zip(terms, operands):
        t = t.permute(tuple(sorted(range(len(term)), key=lambda i: dims.index(term[i]))))
        present = set(term)
        t = t.reshape([sizes[d] if d in present else 1 for d in dims])
        total = t if total is None else total + t
    if contracted:
        out_shape = [sizes[d] for d in output]
        total = total.expand(*out_shape, *(sizes[d] for d in contracted))
        return total.reshape(*out_shape, -1).max(-1).values
    return total.expand([sizes[d] for d in output]).clone()


tensordot = Tensordot(einsum)
