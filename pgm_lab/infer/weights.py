"""Per-particle, per-data-point log importance weights from one vectorized Pyro trace.

Pyro's own importance machinery (``vectorized_importance_weights``, ``RenyiELBO``) sums the
log weight over the whole batch before the logsumexp. Importance-weighted bounds are per data
point, so here the log densities of the sites inside the data plate are kept separate per
data point: ``local[k, n]``. This is the shared core of :class:`pgm_lab.infer.IWAE` and the
estimators :func:`pgm_lab.infer.elbo` / :func:`pgm_lab.infer.iwae`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import detach
from pyro.poutine.util import site_is_subsample

from ..errors import InferenceError

__all__ = ["PARTICLE_PLATE", "LogWeights", "guess_max_plate_nesting", "vectorized_traces",
           "log_weights", "per_point", "per_point_log_prob"]

PARTICLE_PLATE = "num_particles_vectorized"  # the name Pyro's ELBO uses for the same plate


class LogWeights(NamedTuple):
    """Log importance weights split into data-point-local and global parts.

    Attributes:
        local: ``[K, N]`` :math:`\\sum_{s \\in \\text{data plate}} \\log p_s - \\log q_s` per
            particle ``k`` and data point ``n``, *unscaled*.
        glob: ``[K]`` scaled :math:`\\sum_{s \\notin \\text{data plate}} \\log p_s - \\log q_s`.
        scale: the common scale (float) of the data-plate sites, e.g. ``N / B`` under
            minibatching; 1.0 when there is none.
        local_latents: guide latent sites in the data plate as ``(value, plate_dim,
            event_dim)``, for estimators that reweight gradients per particle (DReG).
        has_global_sample_sites: whether any sample site lies outside the data plate.
        particle_global_sites: sites outside the data plate whose log density differs
            between particles (global latents, or observations depending on latents).
    """

    local: torch.Tensor
    glob: torch.Tensor
    scale: float
    local_latents: list[tuple[torch.Tensor, int, int]]
    has_global_sample_sites: bool
    particle_global_sites: tuple[str, ...] = ()


def probe_traces(model: Callable, guide: Callable | None, args: tuple,
                 kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """One ``(guide_trace, model_trace)`` pair, leaving torch's RNG state untouched.

    Restoring the RNG keeps the draws of the first step identical to those of an objective
    that does not probe (e.g. ``Trace_ELBO``), so results do not depend on the probe. With
    ``guide=None`` the model runs alone (its latents from the prior) and the guide trace is
    empty.
    """
    rng = torch.get_rng_state()
    try:
        with poutine.block():
            guide_trace = poutine.Trace() if guide is None else \
                poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs)
    finally:
        torch.set_rng_state(rng)
    return guide_trace, model_trace


def guess_max_plate_nesting(model: Callable, guide: Callable | None, args: tuple,
                            kwargs: dict[str, Any]) -> int:
    """Run guide and model once (see ``probe_traces``) to find the deepest plate."""
    guide_trace, model_trace = probe_traces(model, guide, args, kwargs)
    dims = [frame.dim for tr in (model_trace, guide_trace) for site in tr.nodes.values()
            if site["type"] == "sample" for frame in site["cond_indep_stack"] if frame.vectorized]
    return -min(dims) if dims else 0


def vectorized_traces(model: Callable, guide: Callable, args: tuple, kwargs: dict[str, Any],
                      num_particles: int, max_plate_nesting: int
                      ) -> tuple[poutine.Trace, poutine.Trace]:
    """Model and guide traces with ``num_particles`` particles in an outermost plate.

    The particle plate sits at ``dim = -(max_plate_nesting + 1)``, as in Pyro's
    ``ELBO._vectorized_num_particles``. With one particle no plate is added (as in Pyro), which
    draws the same numbers; :func:`log_weights` treats the missing dim as size 1.
    """
    if num_particles > 1:
        dim = -(max_plate_nesting + 1)
        guide = pyro.plate(PARTICLE_PLATE, num_particles, dim=dim)(guide)
        model = pyro.plate(PARTICLE_PLATE, num_particles, dim=dim)(model)
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs)
    return model_trace, guide_trace


def _site_scale(site: dict[str, Any]) -> float:
    scale = site["scale"]
    if isinstance(scale, torch.Tensor):
        if scale.numel() != 1:
            raise InferenceError(
                f"site {site['name']!r} has a tensor scale of shape {tuple(scale.shape)}; "
                "expected one scale for the whole data plate (e.g. N / B); try a scalar "
                "poutine.scale or pgm_lab.train.scale_plate")
        scale = float(scale)
    return float(scale)


def _accumulate(total: torch.Tensor | float, term: torch.Tensor, sign: float
                ) -> torch.Tensor:
    """``total + sign * term`` without the kernels of adding to 0 and multiplying by 1."""
    if isinstance(total, float) and total == 0.0:
        return term if sign > 0 else -term
    return total + term if sign > 0 else total - term


def log_weights(model_trace: poutine.Trace, guide_trace: poutine.Trace, *,
                plate_name: str = "data", max_plate_nesting: int,
                detach_guide: bool = False) -> LogWeights:
    """Split :math:`\\log p(x, z_k) - \\log q(z_k)` into per-data-point and global parts.

    Model latent sites missing from the guide are drawn from their prior when the model is
    replayed, so their density ratio is 1 and they are left out.
    ``detach_guide=True`` evaluates :math:`\\log q` with the guide's distribution parameters
    detached (the value ``z`` keeps its reparameterization path): the "path derivative" used by
    the STL and DReG estimators (Roeder et al. 2017; Tucker et al. 2019).

    Raises:
        InferenceError: a latent guide site is not reparameterizable (use Pyro's RenyiELBO or
            TraceGraph_ELBO) or not in the model, no site lies in plate ``plate_name``, or the
            data-plate sites carry different scales.
    """
    local: torch.Tensor | float = 0.0
    glob: torch.Tensor | float = 0.0
    scales: set[float] = set()
    latents: list[tuple[torch.Tensor, int, int]] = []
    has_global = False
    particle_global: list[str] = []
    num_particles = None
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            if sign > 0 and not site["is_observed"] and name not in guide_trace.nodes:
                # Drawn from its prior during replay: the proposal is the prior, ratio 1.
                continue
            fn = site["fn"]
            is_guide_latent = sign < 0 and not site["is_observed"]
            if is_guide_latent and name not in model_trace.nodes:
                # Its log q would enter the weight without a matching log p: a wrong bound.
                raise InferenceError(
                    f"guide site {name!r} is not a site of the model (model sample sites: "
                    f"{_sample_sites(model_trace)}); expected matching site names; try "
                    "the guide's site=<name> argument")
            if is_guide_latent and not getattr(fn, "has_rsample", False):
                raise InferenceError(
                    f"guide site {name!r} ({type(fn).__name__}) is not reparameterizable; "
                    "importance-weighted objectives here need reparameterized guides; try "
                    "pyro.infer.RenyiELBO or pyro.infer.TraceGraph_ELBO")
            if is_guide_latent and detach_guide:
                fn = detach(fn)
            lp = _site_log_prob(name, site, fn, max_plate_nesting)
            num_particles = lp.shape[0] if lp.shape[0] > 1 else num_particles
            frame = next((f for f in site["cond_indep_stack"] if f.name == plate_name), None)
            if frame is None:
                has_global = True
                # The particle plate broadcasts every site; only values that differ count.
                if lp.shape[0] > 1 and name not in particle_global \
                        and not bool((lp == lp[:1]).all()):
                    particle_global.append(name)
                glob = _accumulate(glob, _site_scale(site) * lp.reshape(lp.shape[0], -1).sum(-1),
                                   sign)
                continue
            local = _accumulate(local, per_point(lp, frame.dim, max_plate_nesting), sign)
            scales.add(_site_scale(site))
            if is_guide_latent:
                latents.append((site["value"], frame.dim, len(fn.event_shape)))
    if not isinstance(local, torch.Tensor):
        # Without any site in the data plate the logsumexp over particles would run over a
        # constant: IWAE would silently degrade to an ELBO.
        raise InferenceError(
            f"no sample site lies in a plate named {plate_name!r} (model sample sites: "
            f"{_sample_sites(model_trace)}); expected the local latents and observations in "
            f"pyro.plate({plate_name!r}, N); try plate_name=<your data plate's name>")
    if len(scales) > 1:
        raise InferenceError(
            f"sites in plate {plate_name!r} have different scales {sorted(scales)}; expected "
            "one scale for the whole data plate so it can be applied outside the logsumexp")
    k = num_particles or 1
    local_t = local.expand(k, local.shape[1]) if local.shape[0] != k else local
    if isinstance(glob, torch.Tensor):
        glob_t = glob.expand(k) if glob.shape[0] != k else glob
    else:  # no site outside the data plate
        glob_t = local_t.new_zeros(k)
    return LogWeights(local_t, glob_t, scales.pop() if scales else 1.0, latents, has_global,
                      tuple(particle_global))


def _site_log_prob(name: str, site: dict[str, Any], fn: Any,
                   max_plate_nesting: int) -> torch.Tensor:
    """Masked log density of a site, reshaped to ``max_plate_nesting + 1`` dims (particles first).

    Raises:
        InferenceError: the log density has more dims than plates, or a dim no plate declares.
    """
    total = max_plate_nesting + 1
    lp = fn.log_prob(site["value"], *site["args"], **site["kwargs"])
    if site["mask"] is not None:
        lp = torch.where(torch.as_tensor(site["mask"]), lp, lp.new_zeros(()))
    if lp.dim() > total:
        raise InferenceError(
            f"site {name!r} has batch shape {tuple(lp.shape)} with more dims than "
            f"plates ({max_plate_nesting}); declare its batch dims with pyro.plate "
            "or .to_event()")
    _check_plate_dims(name, lp, site["cond_indep_stack"])
    return lp.reshape((1,) * (total - lp.dim()) + tuple(lp.shape))


def per_point(lp: torch.Tensor, plate_dim: int, max_plate_nesting: int) -> torch.Tensor:
    """``[K, N]``: a ``max_plate_nesting + 1``-dim log density (particles first) summed over
    every plate but the particles' and the data plate's (at ``plate_dim``, negative)."""
    source = max_plate_nesting + 1 + plate_dim
    # A move to where it already is would still add a view (and its backward node).
    keep = lp if source == 1 else lp.movedim(source, 1)
    if keep.dim() > 2:  # other plates than particles and data: sum them out
        keep = keep.reshape(keep.shape[0], keep.shape[1], -1).sum(-1)
    return keep


def per_point_log_prob(trace: poutine.Trace, names: Iterable[str], *, plate_name: str = "data",
                       max_plate_nesting: int) -> torch.Tensor:
    r"""``[K, N]`` unscaled :math:`\sum_{s \in \text{names}} \log p_s` per particle and data point.

    The same per-point bookkeeping as :func:`log_weights` (masks, plate checks, other plates
    summed out) for a chosen set of sites of one trace, e.g. the latents or the observations
    of a model traced at given latent values; ``K`` is 1 when the trace has no particle plate.

    Raises:
        InferenceError: a named site is not in ``trace`` or not inside plate ``plate_name``.
    """
    total: torch.Tensor | float = 0.0
    for name in names:
        site = trace.nodes.get(name)
        if site is None or site["type"] != "sample":
            raise InferenceError(f"expected a sample site {name!r}, got the sites "
                                 f"{_sample_sites(trace)}; check the site names")
        frame = next((f for f in site["cond_indep_stack"] if f.name == plate_name), None)
        if frame is None:
            raise InferenceError(
                f"site {name!r} is outside plate {plate_name!r}; expected one value per data "
                f"point in pyro.plate({plate_name!r}, N); try conditioning on global variables "
                "(pyro.condition) or plate_name=<your data plate's name>")
        lp = _site_log_prob(name, site, site["fn"], max_plate_nesting)
        total = _accumulate(total, per_point(lp, frame.dim, max_plate_nesting), 1.0)
    if not isinstance(total, torch.Tensor):
        raise InferenceError("expected at least one site name, got none")
    return total


def _sample_sites(trace: poutine.Trace) -> list[str]:
    return [n for n, s in trace.nodes.items()
            if s["type"] == "sample" and not site_is_subsample(s)]


def _check_plate_dims(name: str, lp: torch.Tensor, frames: Any) -> None:
    """Every batch dim of size > 1 must belong to an enclosing plate of that size.

    Shape-only (no kernels). A dim no plate declares would be summed into the wrong
    per-particle or per-point term, e.g. a site outside the data plate whose batch dim
    ``-1`` runs over particles made the bound grow with ``K``.
    """
    sizes = {f.dim: f.size for f in frames if f.vectorized}
    for i, size in enumerate(lp.shape):
        d = i - lp.dim()
        if size != 1 and sizes.get(d) != size:
            raise InferenceError(
                f"site {name!r} has log-density shape {tuple(lp.shape)}: dim {d} of size "
                f"{size} is not declared by an enclosing plate (plates: "
                f"{ {f.name: (f.dim, f.size) for f in frames if f.vectorized} }); expected "
                "batch dims that match pyro.plate dims; try .to_event() for event dims or a "
                "keepdim reduction")
