"""Amortized diagonal-Normal guide q(z | x) with an MLP encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, pyro_method
from pyro.nn.module import to_pyro_module_
from pyro.poutine.util import is_validation_enabled

from pgm_lab.errors import ConfigError

from ..models._nets import as_rows, check_dims, hidden_tuple, mlp, param_dtype

__all__ = ["AmortizedNormal", "SCALE_TRANSFORMS"]

SCALE_TRANSFORMS = ("softplus", "exp")


class AmortizedNormal(PyroModule):
    r"""Inference network :math:`q_\phi(z \mid x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\,
    s_\phi(x)^2)` (Kingma & Welling 2014, "Auto-Encoding Variational Bayes").

    An MLP ``x_dim -> hidden_dims -> 2 * z_dim`` outputs :math:`(\mu, h)`; the scale is

    .. math::

        s = \mathrm{softplus}(h) + s_{\min} \quad\text{(default)} \qquad\text{or}\qquad
        s = \exp(h) + s_{\min},

    softplus being the gentler choice for training (no exploding scales), ``exp`` the classic
    log-scale parameterization. ``min_scale`` keeps :math:`s > 0` in floating point. The
    sample site (default ``"z"``, event shape ``[Z]``) is reparameterized and lives in
    ``pyro.plate("data", N)``, so this guide fits :class:`pgm_lab.models.VAE` and any model
    with a latent site of that name and shape in the data plate. Calling the guide accepts
    (and ignores) any extra model arguments after ``x``.

    Args:
        x_dim, z_dim: input and latent sizes.
        hidden_dims: hidden widths of the encoder, e.g. ``(128,)``; ``()`` is a linear encoder.
        scale_transform: ``"softplus"`` or ``"exp"``.
        min_scale: additive floor of the scale.
        activation: hidden activation (``"relu"``, ``"tanh"``, ``"softplus"``, ``"elu"``).
        site, plate_name: latent site and data plate names matching the model's.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (128,),
        *,
        scale_transform: str = "softplus",
        min_scale: float = 1e-5,
        activation: str = "relu",
        site: str = "z",
        plate_name: str = "data",
    ) -> None:
        super().__init__()
        check_dims(x_dim=x_dim, z_dim=z_dim)
        if scale_transform not in SCALE_TRANSFORMS:
            raise ConfigError(
                f"scale_transform must be one of {SCALE_TRANSFORMS}, got {scale_transform!r}"
            )
        if not (isinstance(min_scale, (int, float)) and min_scale >= 0):
            raise ConfigError(f"min_scale must be a float >= 0, got {min_scale!r}")
        self.x_dim, self.z_dim = x_dim, z_dim
        self.hidden_dims = hidden_tuple(hidden_dims)
        self.scale_transform, self.min_scale = scale_transform, float(min_scale)
        self.site, self.plate_name = site, plate_name
        encoder = mlp(x_dim, self.hidden_dims, 2 * z_dim, activation)
        to_pyro_module_(encoder)  # parameters become Pyro params named "encoder.<i>.weight"...
        self.encoder = encoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of q(z | x), each ``[N, Z]``, for ``x`` of shape ``[N, D]``.

        Raises :class:`~pgm_lab.errors.DataError` for ``x`` of another shape, or (while Pyro's
        validation is on, the default) with NaN or infinite entries; with validation off no
        tensor is read to the host (no GPU synchronisation).
        """
        x = as_rows(x, self.x_dim, dtype=param_dtype(self.encoder),
                    check_finite=is_validation_enabled())
        h = self.encoder(x)
        loc, raw = h[..., : self.z_dim], h[..., self.z_dim :]
        scale = F.softplus(raw) if self.scale_transform == "softplus" else raw.exp()
        return loc, scale + self.min_scale

    @pyro_method
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Sample the latent site from q(z | x) inside the data plate; returns ``z [N, Z]``."""
        loc, scale = self.encode(x)
        # scale > 0 by construction: skip the per-call elementwise argument validation.
        q = dist.Normal(loc, scale, validate_args=False).to_event(1)
        with pyro.plate(self.plate_name, x.shape[0]):
            return pyro.sample(self.site, q)
