"""Simulate data and latents from a Pyro model whose observation site can be left unobserved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..errors import InferenceError
from .ais import data_device, seeded
from .bounds import _check_count
from .weights import PARTICLE_PLATE, guess_max_plate_nesting

__all__ = ["simulate"]


def simulate(model: Callable, *args: Any, obs_site: str = "x", num_samples: int | None = None,
             seed: int = 0, **kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""Draw :math:`(x, z) \sim p(x, z)` by running ``model`` with ``obs_site`` unobserved.

    ``model(*args, **kwargs)`` is run under :class:`pyro.poutine.uncondition`, so the site
    ``obs_site`` is sampled from its distribution instead of being set to the observation; the
    arguments only fix the shapes (e.g. ``x [N, D]`` of any values gives ``N`` rows). The
    returned latents are exact posterior samples for the returned data, which is what
    :func:`pgm_lab.infer.bdmc` needs for its upper bound (Grosse, Ghahramani & Adams 2015).

    Args:
        obs_site: name of the observation site.
        num_samples: ``None`` for one run of the program, else that many runs drawn at once in
            an outermost plate (a leading dim ``[num_samples]`` on every value).
        seed: seeds torch's global RNGs for the draw (restored afterwards).

    Returns:
        ``(x, latents)``: the value of ``obs_site`` and ``{site: value}`` of every other
        unobserved sample site.

    Raises:
        InferenceError: ``obs_site`` is not a sample site of the model.
    """
    if num_samples is not None:
        _check_count("num_samples", num_samples)
    with seeded(seed, data_device(args)), torch.no_grad(), poutine.block():
        program = poutine.uncondition(model)
        if num_samples is not None:
            mpn = guess_max_plate_nesting(program, None, args, kwargs)
            program = pyro.plate(PARTICLE_PLATE, num_samples, dim=-(mpn + 1))(program)
        trace = poutine.trace(program).get_trace(*args, **kwargs)
    sites = {n: s for n, s in trace.nodes.items()
             if s["type"] == "sample" and not site_is_subsample(s)}
    if obs_site not in sites:
        raise InferenceError(f"obs_site {obs_site!r} is not a sample site of the model (sites: "
                             f"{sorted(sites)}); try obs_site=<your observation's site name>")
    latents = {n: s["value"] for n, s in sites.items() if n != obs_site and not s["is_observed"]}
    return sites[obs_site]["value"], latents

