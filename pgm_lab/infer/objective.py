"""The importance-weighted autoencoder objective with standard, DReG and STL gradients."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import ELBO
from pyro.poutine.util import site_is_subsample

from ..errors import ConfigError, InferenceError
from .weights import (
    PARTICLE_PLATE,
    LogWeights,
    guess_max_plate_nesting,
    log_weights,
    vectorized_traces,
)

__all__ = ["IWAE", "ESTIMATORS"]

ESTIMATORS = ("standard", "dreg", "stl")


class IWAE(ELBO):
    r"""Importance-weighted bound (Burda, Grosse & Salakhutdinov 2015) as a Pyro ELBO.

    For data points :math:`x_n` in the data plate, with :math:`K` reparameterized particles
    :math:`z_{nk} \sim q(z \mid x_n)` and :math:`\log w_{nk} = \log p(x_n, z_{nk}) -
    \log q(z_{nk} \mid x_n)`,

    .. math::

        \mathcal L_K = \sum_n s \Big(\operatorname{logsumexp}_k \log w_{nk} - \log K\Big)
            + \frac1K \sum_k g_k,

    where :math:`s` is the scale of the data-plate sites (``N / B`` under
    :func:`pgm_lab.train.fit` minibatching) and :math:`g_k` the scaled log-weight of observed
    sites outside the data plate (constant over particles). Latents outside the data plate,
    or observations outside it that depend on latents, are allowed only for :math:`K = 1`:
    with more particles the per-point logsumexp is not a bound on :math:`\log p(x)`.
    The scale is applied *outside* the logsumexp, so a minibatch estimate is unbiased for
    the full-data bound; Pyro's ``RenyiELBO(alpha=0)`` scales inside it and sums over the
    whole batch before the logsumexp (pyro issues #2220, #3104). ``num_particles=1`` gives
    exactly ``Trace_ELBO`` (same seed, same value). ``loss`` returns :math:`-\mathcal L_K`.

    Gradient estimators (all reparameterized; the value is always :math:`-\mathcal L_K`):

    * ``"standard"``: :math:`\nabla \mathcal L_K = \sum_k \tilde w_k \nabla \log w_k`.
    * ``"stl"`` -- sticking the landing (Roeder, Wu & Duvenaud 2017, "Sticking the Landing"):
      :math:`\log q` evaluated with detached guide parameters, dropping the score term.
      Unbiased for :math:`K = 1`, biased for :math:`K > 1`.
    * ``"dreg"`` -- doubly reparameterized (Tucker, Lawson, Gu & Maddison 2019, "Doubly
      Reparameterized Gradient Estimators for Monte Carlo Objectives"): guide gradient
      :math:`\sum_k \tilde w_k^2\, \partial_z \log w_k\, \mathrm d z_k / \mathrm d\phi`,
      unbiased, with lower variance. Model gradients are those of ``"standard"``.

    Path derivatives (STL, DReG). :math:`\partial_z \log w_k` is taken with the guide's
    parameters :math:`\phi` held fixed but *all* dependence on the latents kept: in a guide
    with dependent sites, :math:`q(z_1)\, q(z_2 \mid z_1)`, the parameters of
    :math:`q(z_2 \mid z_1)` depend on :math:`z_1`, and :math:`\mathrm d z_k / \mathrm d\phi`
    is the total derivative through the reparameterized draws (the path derivative of a
    structured guide; Tucker et al. 2019). A guide with one latent site takes one backward
    pass: :math:`\log q` with detached parameters plus a hook scaling the gradient reaching
    each :math:`z_{nk}` by :math:`\tilde w_{nk}` (DReG). A guide with several latent sites
    is replayed once more on detached copies :math:`\hat z` of its draws (and the model on
    that replay); ``torch.autograd.grad`` gives :math:`\partial \mathcal L_K / \partial \hat
    z_s` (leaving parameter gradients untouched), and one backward of :math:`\sum_s \langle
    c_s\, \partial \mathcal L_K / \partial \hat z_s,\, z_s \rangle` through the original
    draws adds the guide gradient, with :math:`c = \tilde w` (DReG) or 1 (STL). This costs
    one more guide and model pass per step.

    :math:`\tilde w_{nk}` are the self-normalized weights over :math:`k`. Particles are
    vectorized in an outermost plate as in Pyro's ``vectorize_particles=True``.

    Args:
        num_particles: :math:`K \ge 1`.
        estimator: ``"standard"``, ``"dreg"`` or ``"stl"``.
        plate_name: name of the data plate in model and guide.
        max_plate_nesting: as in :class:`pyro.infer.ELBO` (guessed from one run if omitted).

    Raises:
        ConfigError: bad ``num_particles`` or ``estimator``.
        pgm_lab.errors.InferenceError: on use, a non-reparameterizable guide site, a guide
            latent (or latent-dependent observation) outside the data plate with
            ``num_particles > 1``.
    """

    def __init__(self, num_particles: int = 1, estimator: str = "standard", *,
                 plate_name: str = "data", max_plate_nesting: float = float("inf")) -> None:
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) \
                or num_particles < 1:
            raise ConfigError(f"num_particles must be an int >= 1, got {num_particles!r}")
        if estimator not in ESTIMATORS:
            raise ConfigError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}; "
                              "try 'dreg' for low-variance guide gradients")
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
                         vectorize_particles=True)
        self.estimator = estimator
        self.plate_name = plate_name

    def _get_trace(self, model: Callable, guide: Callable, args: tuple,
                   kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Model and guide traces with all ``num_particles`` particles in one plate."""
        if self.max_plate_nesting == float("inf"):
            self.max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        return vectorized_traces(model, guide, args, kwargs, self.num_particles,
                                 self.max_plate_nesting)

    def _log_weights(self, model: Callable, guide: Callable, args: tuple,
                     kwargs: dict[str, Any]) -> LogWeights:
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        return self._checked_weights(model_trace, guide_trace,
                                     detach_guide=self.estimator != "standard")

    def _checked_weights(self, model_trace: poutine.Trace, guide_trace: poutine.Trace, *,
                         detach_guide: bool) -> LogWeights:
        lw = log_weights(model_trace, guide_trace, plate_name=self.plate_name,
                         max_plate_nesting=self.max_plate_nesting, detach_guide=detach_guide)
        if lw.particle_global_sites and self.num_particles > 1:
            # A global latent drawn per particle makes the per-point logsumexp average
            # p(x_n | g_k) over different g_k; an observation outside the plate that depends
            # on the local latents enters as E_q log p(x | z). Neither is a bound on log p(x)
            # (it can exceed it by hundreds of nats): the weights do not factor per point.
            raise InferenceError(
                f"sites {list(lw.particle_global_sites)} lie outside plate "
                f"{self.plate_name!r} and depend on the particle; per-data-point IWAE with "
                "num_particles > 1 needs all latents, and every observation that depends on "
                "them, in the data plate; try num_particles=1 (= Trace_ELBO), "
                "pyro.infer.RenyiELBO(alpha=0) (whole-batch weights), or conditioning on the "
                "global latents")
        return lw

    def _bound(self, lw: LogWeights) -> torch.Tensor:
        # Skipped kernels (each with its backward) that would not change a bit of the result:
        # logsumexp over one particle is the identity (gradient exactly 1), scale 1 and the
        # global term are no-ops when there is no scaling or no site outside the data plate.
        if self.num_particles == 1:
            per_point = lw.local[0]
        else:
            per_point = torch.logsumexp(lw.local, dim=0) - math.log(self.num_particles)
        bound = per_point.sum() if lw.scale == 1.0 else lw.scale * per_point.sum()
        return bound + lw.glob.mean() if lw.has_global_sample_sites else bound

    def _site_weights(self, lw: LogWeights) -> dict[int, torch.Tensor]:
        """``id(value) ->`` :math:`\\tilde w` ``[K, N]`` reshaped to broadcast against the
        value of each local guide latent (particle and data dims in place)."""
        w = torch.softmax(lw.local.detach(), dim=0)  # [K, N] self-normalized weights
        total = self.max_plate_nesting + 1
        out = {}
        for value, plate_dim, event_dim in lw.local_latents:
            shape = [1] * value.dim()
            batch_dims = value.dim() - event_dim
            shape[batch_dims + plate_dim] = w.shape[1]
            if batch_dims - total >= 0:
                shape[batch_dims - total] = w.shape[0]
            out[id(value)] = w.reshape(shape)
        return out

    def _register_dreg_hooks(self, lw: LogWeights) -> None:
        weights = self._site_weights(lw)
        for value, _, _ in lw.local_latents:
            if value.requires_grad:
                value.register_hook(_scale_grad(weights[id(value)]))

    def _path_loss(self, model: Callable, guide: Callable, args: tuple,
                   kwargs: dict[str, Any]) -> torch.Tensor:
        """:math:`-\\mathcal L_K` with the STL / DReG guide gradient (see the class docstring)."""
        if self.max_plate_nesting == float("inf"):
            self.max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        if self.num_particles > 1:  # as in vectorized_traces: same draws, same values
            dim = -(self.max_plate_nesting + 1)
            guide = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=dim)(guide)
            model = pyro.plate(PARTICLE_PLATE, self.num_particles, dim=dim)(model)
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        draws = {name: site["value"] for name, site in guide_trace.nodes.items()
                 if site["type"] == "sample" and not site["is_observed"]
                 and not site_is_subsample(site)}
        reweight = self.estimator == "dreg" and self.num_particles > 1  # K = 1: weights 1
        if len(draws) <= 1:  # no site depends on another draw: one backward pass
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
            lw = self._checked_weights(model_trace, guide_trace, detach_guide=True)
            if reweight:
                self._register_dreg_hooks(lw)
            return -self._bound(lw)
        copies = guide_trace.copy()
        for name, z in draws.items():
            copies.nodes[name] = {**copies.nodes[name],
                                  "value": z.detach().requires_grad_(z.requires_grad)}
        # Replaying the copies recomputes each site's parameters from the copies of the
        # earlier draws, so d log w / d z_hat is the partial derivative at fixed draws.
        replay_trace = poutine.trace(poutine.replay(guide, trace=copies)).get_trace(
            *args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=replay_trace)).get_trace(
            *args, **kwargs)
        # the value and the model gradient: log q at detached parameters, log p at the copies
        bound = self._bound(self._checked_weights(model_trace, replay_trace, detach_guide=True))
        names = [n for n in draws if copies.nodes[n]["value"].requires_grad]
        if not names:
            return -bound
        full = self._checked_weights(model_trace, replay_trace, detach_guide=False)
        hats = [copies.nodes[n]["value"] for n in names]
        partials = torch.autograd.grad(self._bound(full), hats, allow_unused=True,
                                       retain_graph=True)
        weights = self._site_weights(full) if reweight else {}
        path: torch.Tensor | float = 0.0
        for name, hat, g in zip(names, hats, partials):
            if g is not None:
                if id(hat) in weights:
                    g = g * weights[id(hat)]
                path = path + (g * draws[name]).sum()
        if not isinstance(path, torch.Tensor):
            return -bound
        return -(bound + (path - path.detach()))

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any,
                            **kwargs: Any) -> torch.Tensor:
        """:math:`-\\mathcal L_K` as a tensor whose gradient is the chosen estimator."""
        if self.estimator == "standard":
            return -self._bound(self._log_weights(model, guide, args, kwargs))
        return self._path_loss(model, guide, args, kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        """:math:`-\\mathcal L_K` as a float (no gradients)."""
        with torch.no_grad():
            return float(-self._bound(self._log_weights(model, guide, args, kwargs)))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any,
                       **kwargs: Any) -> float:
        """Compute :math:`-\\mathcal L_K`, backpropagate the estimator, return the loss."""
        return float(self.loss_and_grads_on_device(model, guide, *args, **kwargs))

    def loss_and_grads_on_device(self, model: Callable, guide: Callable, *args: Any,
                                 **kwargs: Any) -> torch.Tensor:
        """:meth:`loss_and_grads` returning :math:`-\\mathcal L_K` as a detached 0-d tensor
        on the model's device: no host synchronisation, so a GPU keeps its queue of kernels
        (:func:`pgm_lab.train.fit` reads the sum of the losses every ``check_every`` steps)."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return loss.detach()


def _scale_grad(factor: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """A tensor hook multiplying the incoming gradient by ``factor`` (broadcast)."""
    return lambda grad: grad * factor
