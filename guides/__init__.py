"""Guides (variational families) for pgm_lab models (installed as ``pgm_lab.guides``).

* :class:`AmortizedNormal` -- MLP encoder to a diagonal Normal q(z | x), reparameterized.
"""

from .amortized import SCALE_TRANSFORMS, AmortizedNormal

__all__ = ["AmortizedNormal", "SCALE_TRANSFORMS"]
