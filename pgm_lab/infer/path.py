"""The geometric annealing path between a tractable base and a Pyro model's joint, per data point.

For a model ``p(x, z)`` whose local latents ``z_n`` live in plate ``"data"``, and ``C`` chains
per data point (an outermost plate, as Pyro vectorizes particles), the intermediate densities

.. math::

    \\log \\pi_\\beta(z_{cn}) = \\log f_0(z_{cn}) + \\beta\\,[\\log p(x_n, z_{cn}) -
    \\log f_0(z_{cn})], \\qquad f_0 = p(z) \\ (\\text{init="prior"}) \\ \\text{or}\\
    q(z \\mid x_n) \\ (\\text{init="guide"}),

are evaluated by tracing the model (and the guide) with the latent values substituted
(``poutine.condition``), summing the log densities per chain and data point exactly as
:func:`pgm_lab.infer.weights.log_weights` does. Latents with a constrained support are moved
to unconstrained space with :func:`torch.distributions.biject_to` and the log-determinant of
the Jacobian is added, as Pyro's HMC does, so that gradient-based transitions see a density on
:math:`\\mathbb R^d`. Gradients come from torch autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to
from torch.distributions.transforms import ComposeTransform, IndependentTransform, Transform

from ..errors import ConfigError, InferenceError
from .weights import PARTICLE_PLATE, guess_max_plate_nesting, per_point, per_point_log_prob

__all__ = ["INITS", "LatentSite", "PathPoint", "PathGrad", "AnnealingPath"]

INITS = ("guide", "prior")

State = dict[str, torch.Tensor]  # site name -> unconstrained value [C, ..., N, ..., *event]


class LatentSite(NamedTuple):
    """A latent sample site of the model: how to move it and where its data-plate dim is.

    Attributes:
        name: the site name.
        transform: :math:`\\mathbb R^d \\to` the site's support (``biject_to(support)``).
        identity: whether ``transform`` is the identity (real support: no Jacobian).
        plate_dim: dim of the data plate (negative, counted in batch dims).
        event_dim: number of event dims of the site.
    """

    name: str
    transform: Transform
    identity: bool
    plate_dim: int
    event_dim: int


class PathPoint(NamedTuple):
    """Densities at one state, each ``[C, N]``: :math:`\\log \\pi_\\beta = \\text{base} + \\beta
    \\cdot \\text{log\\_ratio} + \\text{log\\_jacobian}`.

    Attributes:
        base: :math:`\\log f_0(z)`.
        log_ratio: :math:`\\log p(x, z) - \\log f_0(z)` (the AIS weight increments' integrand).
        log_jacobian: :math:`\\log |\\det \\partial z / \\partial u|`.
    """

    base: torch.Tensor
    log_ratio: torch.Tensor
    log_jacobian: torch.Tensor

    def log_density(self, beta: float) -> torch.Tensor:
        return self.base + beta * self.log_ratio + self.log_jacobian


def _is_identity(t: Transform) -> bool:
    base = t.base_transform if isinstance(t, IndependentTransform) else t
    return isinstance(base, ComposeTransform) and not base.parts


class AnnealingPath:
    """The path :math:`\\pi_\\beta` of one Pyro ``(model, guide)`` pair on fixed arguments.

    Args:
        model, guide: Pyro callables taking ``(*args, **kwargs)``; every latent of the model
            lies in plate ``plate_name`` (one value per data point).
        args, kwargs: their arguments (e.g. ``(x,)`` with ``x [N, D]``).
        num_chains: ``C``, chains per data point (a plate of that size at the outermost dim).
        init: ``"prior"`` (:math:`f_0 = p(z)`, the guide is not used) or ``"guide"``
            (:math:`f_0 = q(z \\mid x)`).

    Raises:
        ConfigError: unknown ``init``.
        InferenceError: the model has no latent site, a latent lies outside the data plate,
            or (``init="guide"``) the guide lacks a model latent or samples a site the model
            does not have.
    """

    def __init__(self, model: Callable, guide: Callable | None, args: tuple,
                 kwargs: dict[str, Any], *, num_chains: int, init: str = "guide",
                 plate_name: str = "data") -> None:
        if init not in INITS:
            raise ConfigError(f"init must be one of {INITS}, got {init!r}")
        if init == "guide" and guide is None:
            raise ConfigError("init='guide' needs a guide, got None; try init='prior'")
        self.args, self.kwargs, self.init, self.plate_name = args, kwargs, init, plate_name
        self.num_chains = num_chains
        with torch.no_grad():
            self.max_plate_nesting = guess_max_plate_nesting(model, guide, args, kwargs)
        dim = -(self.max_plate_nesting + 1)
        self.model = pyro.plate(PARTICLE_PLATE, num_chains, dim=dim)(model)
        self.guide = None if guide is None else pyro.plate(PARTICLE_PLATE, num_chains,
                                                           dim=dim)(guide)
        with poutine.block(), torch.no_grad():
            trace = poutine.trace(self.model).get_trace(*args, **kwargs)
        self.latents = [s for s in trace.nodes.values()
                        if s["type"] == "sample" and not site_is_subsample(s)
                        and not s["is_observed"]]
        self.observed = [n for n, s in trace.nodes.items()
                         if s["type"] == "sample" and not site_is_subsample(s) and s["is_observed"]]
        if not self.latents:
            raise InferenceError(
                f"the model has no latent sample site (observed: {self.observed}); expected "
                "local latents to anneal over; its log p(x) needs no AIS")
        self.sites = [self._latent_site(s) for s in self.latents]
        self.names = [s.name for s in self.sites]
        self.prior_trace = trace
        self._guide_site: dict[str, Any] | None = None  # see _guide_trace

    def _latent_site(self, site: dict[str, Any]) -> LatentSite:
        frame = next((f for f in site["cond_indep_stack"] if f.name == self.plate_name), None)
        if frame is None:
            raise InferenceError(
                f"latent site {site['name']!r} is outside plate {self.plate_name!r}; expected "
                f"every latent inside pyro.plate({self.plate_name!r}, N) (one value per data "
                "point); try conditioning on global variables (pyro.condition)")
        t = biject_to(site["fn"].support)
        return LatentSite(site["name"], t, _is_identity(t), frame.dim, len(site["fn"].event_shape))

    # -- states -------------------------------------------------------------------------------

    def expand_chains(self, site: LatentSite, value: torch.Tensor) -> torch.Tensor:
        """``value`` with all ``max_plate_nesting + 1`` batch dims, chains expanded."""
        want = self.max_plate_nesting + 1 + site.event_dim
        value = value.reshape((1,) * (want - value.dim()) + tuple(value.shape))
        return value.expand((self.num_chains,) + tuple(value.shape[1:]))

    def initial_state(self) -> State:
        """Unconstrained ``u_0`` with :math:`z_0 \\sim f_0`, drawn with torch's global RNG."""
        with poutine.block(), torch.no_grad():
            if self.init == "prior":
                trace = poutine.trace(self.model).get_trace(*self.args, **self.kwargs)
            else:
                trace = poutine.trace(self.guide).get_trace(*self.args, **self.kwargs)
                self._check_guide(trace)
        return self.unconstrain({s.name: trace.nodes[s.name]["value"] for s in self.sites})

    def _check_guide(self, trace: poutine.Trace) -> None:
        sampled = {n for n, s in trace.nodes.items()
                   if s["type"] == "sample" and not site_is_subsample(s) and not s["is_observed"]}
        missing, extra = set(self.names) - sampled, sampled - set(self.names)
        if missing or extra:
            raise InferenceError(
                f"expected the guide to sample exactly the model's latents {self.names}, got "
                f"{sorted(sampled)} (missing {sorted(missing)}, not in the model "
                f"{sorted(extra)}); try init='prior' or a guide over every latent")

    def unconstrain(self, values: dict[str, torch.Tensor]) -> State:
        """Constrained latent values ``{site: [C or 1, ..., N, ..., *event]}`` -> state."""
        return {s.name: self.expand_chains(s, values[s.name] if s.identity
                                   else s.transform.inv(values[s.name])).clone()
                for s in self.sites}

    def constrain(self, state: State) -> dict[str, torch.Tensor]:
        return {s.name: state[s.name] if s.identity else s.transform(state[s.name])
                for s in self.sites}

    def per_point(self, site: LatentSite, value: torch.Tensor) -> torch.Tensor:
        """``[C, N]``: a site-shaped tensor summed over everything but chains and data points."""
        if site.event_dim:
            value = value.sum(tuple(range(-site.event_dim, 0)))
        return per_point(value, site.plate_dim, self.max_plate_nesting)

    def invalid(self, state: State) -> torch.Tensor:
        """``[C, N]``: whether a chain-and-point's state is non-finite or maps onto the
        boundary of its support in floating point, i.e. does not map back to a finite value
        (e.g. ``exp(u)`` underflowing to 0, which a Gamma's closed support admits but a
        LogNormal guide's does not)."""
        bad = [self._site_invalid(s, state[s.name]) for s in self.sites]
        for site_bad in bad[1:]:
            bad[0] = bad[0] | site_bad
        return bad[0]

    def _site_invalid(self, site: LatentSite, u: torch.Tensor) -> torch.Tensor:
        """``[C, N]`` :meth:`invalid` of one site's values ``u``."""
        if not site.identity:
            u = site.transform.inv(site.transform(u))
        finite = torch.isfinite(u)
        if site.event_dim:  # one reduction over the event (all), not a cast and a sum
            finite = finite.flatten(-site.event_dim).all(-1)
        bad = self.per_point(site._replace(event_dim=0), finite.logical_not_())
        return bad if bad.dtype == torch.bool else bad > 0  # other plates summed as ints

    def align(self, site: LatentSite, per_cn: torch.Tensor) -> torch.Tensor:
        """``[C, N]`` or ``[N]`` reshaped to broadcast against the site's values."""
        trailing = (1,) * (-site.plate_dim - 1 + site.event_dim)
        if per_cn.dim() == 1:
            return per_cn.reshape(per_cn.shape + trailing)
        middle = (1,) * (self.max_plate_nesting + site.plate_dim)
        return per_cn.reshape((per_cn.shape[0],) + middle + (per_cn.shape[1],) + trailing)

    # -- densities ----------------------------------------------------------------------------

    def point(self, state: State) -> PathPoint:
        """The :class:`PathPoint` at ``state`` (differentiable in the state's tensors)."""
        mpn, plate = self.max_plate_nesting, self.plate_name
        z = self.constrain(state)
        model_trace = poutine.trace(poutine.condition(self.model, data=z)).get_trace(
            *self.args, **self.kwargs)
        log_prior = per_point_log_prob(model_trace, self.names, plate_name=plate,
                                       max_plate_nesting=mpn)
        log_lik = per_point_log_prob(model_trace, self.observed, plate_name=plate,
                                     max_plate_nesting=mpn) if self.observed else 0.0
        log_j: torch.Tensor | float = 0.0
        for s in self.sites:
            if not s.identity:
                lj = s.transform.log_abs_det_jacobian(state[s.name], z[s.name])
                extra = s.event_dim - s.transform.codomain.event_dim
                log_j = log_j + self.per_point(s._replace(event_dim=extra), lj)
        if self.init == "prior":
            base, ratio = log_prior, log_lik + torch.zeros_like(log_prior)
        else:
            guide_trace = self._guide_trace(z)
            base = per_point_log_prob(guide_trace, self.names, plate_name=plate,
                                      max_plate_nesting=mpn)
            ratio = log_prior + log_lik - base
        return PathPoint(base, ratio, log_j + torch.zeros_like(base))

    def _guide_trace(self, z: dict[str, torch.Tensor]) -> poutine.Trace:
        """The guide traced at the latent values ``z``.

        A guide with a single sample site draws it from a distribution that cannot depend on
        that site's value, only on the fixed arguments: it is traced once (without gradients,
        since only the latents' gradients are needed) and afterwards only the value is
        replaced. That saves the guide's network at every leapfrog step (on the digits VAE,
        half of the linear layers of each density evaluation).
        """
        if self._guide_site is None and len(self.sites) == 1:
            with torch.no_grad():
                trace = poutine.trace(poutine.condition(self.guide, data=z)).get_trace(
                    *self.args, **self.kwargs)
            sampled = [s for s in trace.nodes.values()
                       if s["type"] == "sample" and not site_is_subsample(s)]
            if len(sampled) != 1:
                return poutine.trace(poutine.condition(self.guide, data=z)).get_trace(
                    *self.args, **self.kwargs)
            self._guide_site = sampled[0]
        if self._guide_site is None:
            return poutine.trace(poutine.condition(self.guide, data=z)).get_trace(
                *self.args, **self.kwargs)
        trace = poutine.Trace()
        site = self._guide_site
        trace.add_node(site["name"], **{**site, "value": z[site["name"]]})
        return trace

    def point_and_grad(self, state: State, beta: float) -> tuple[PathPoint, State]:
        """:meth:`point` (detached) and :math:`\\nabla_u \\log \\pi_\\beta` per site."""
        leaves = {n: v.detach().requires_grad_() for n, v in state.items()}
        with torch.enable_grad():
            pt = self.point(leaves)
            grads = torch.autograd.grad(pt.log_density(beta).sum(), list(leaves.values()))
        return PathPoint(*(t.detach() for t in pt)), dict(zip(leaves, grads))

    def point_and_grad_parts(self, state: State) -> tuple[PathPoint, PathGrad]:
        """:meth:`point` (detached) and the :class:`PathGrad` at ``state``, from which
        :math:`\\nabla_u \\log \\pi_\\beta` follows for every :math:`\\beta`.

        One forward evaluation and two backward passes: the one of ``log_ratio`` (through the
        model) and the one of ``base + log_jacobian`` (through :math:`f_0` and the transforms
        only). A part that does not depend on a site has a zero gradient there.
        """
        leaves = {n: v.detach().requires_grad_() for n, v in state.items()}
        inputs = list(leaves.values())
        with torch.enable_grad():
            pt = self.point(leaves)
            fixed = pt.base + pt.log_jacobian
            ratio = _grad(pt.log_ratio, inputs, retain_graph=fixed.requires_grad)
            fixed = _grad(fixed, inputs, retain_graph=False)
        return (PathPoint(*(t.detach() for t in pt)),
                PathGrad(dict(zip(leaves, fixed)), dict(zip(leaves, ratio))))


class PathGrad(NamedTuple):
    """Gradients at one state, per site ``{site: [C, ..., N, ..., *event]}``:
    :math:`\\nabla_u \\log \\pi_\\beta = \\text{fixed} + \\beta \\cdot \\text{ratio}`.

    Attributes:
        fixed: :math:`\\nabla_u [\\log f_0(z) + \\log |\\det \\partial z / \\partial u|]`.
        ratio: :math:`\\nabla_u [\\log p(x, z) - \\log f_0(z)]`.
    """

    fixed: State
    ratio: State

    def at(self, beta: float) -> State:
        """:math:`\\nabla_u \\log \\pi_\\beta` per site."""
        return {n: torch.add(g, self.ratio[n], alpha=beta) for n, g in self.fixed.items()}


def _grad(output: torch.Tensor, inputs: list[torch.Tensor], *, retain_graph: bool
          ) -> tuple[torch.Tensor, ...]:
    """Gradients of ``output.sum()`` with respect to ``inputs`` (zeros where unused)."""
    if not output.requires_grad:
        return tuple(torch.zeros_like(t) for t in inputs)
    return torch.autograd.grad(output.sum(), inputs, retain_graph=retain_graph,
                               materialize_grads=True)
