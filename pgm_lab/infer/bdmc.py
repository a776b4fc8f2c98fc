"""Bidirectional Monte Carlo (BDMC): a sandwich of :math:`\\log p(x_n)` on simulated data.

Grosse, Ghahramani & Adams (2015, "Sandwiching the marginal likelihood using bidirectional
Monte Carlo"); Wu, Burda, Salakhutdinov & Grosse (2017) use it to validate AIS on decoder
models. Forward AIS from the base :math:`f_0` is a stochastic lower bound; reverse AIS, started
from an exact posterior sample and annealed back to :math:`f_0`, has weights with
:math:`\\mathbb E\\, w = 1 / p(x)`, so :math:`-\\log \\frac1C \\sum_c w_c` is a stochastic upper
bound. Exact posterior samples exist for data simulated from the model: the latents that
generated them (:func:`pgm_lab.infer.simulate`, :meth:`pgm_lab.models.VAE.simulate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch

from ..errors import DataError
from .ais import (
    TARGET_ACCEPT,
    AISEstimate,
    _log_mean_and_stderr,
    anneal,
    check_settings,
    concat_estimates,
    data_device,
    default_chunk_size,
    seeded,
    sigmoid_schedule,
)
from .bounds import _batched
from .path import AnnealingPath, State

__all__ = ["BDMCResult", "bdmc"]


class BDMCResult(NamedTuple):
    """Result of :func:`bdmc`; every tensor ``[N]``.

    Attributes:
        lower: forward AIS estimate of :math:`\\log p(x_n)` (:math:`\\mathbb E \\le \\log p`).
        upper: reverse AIS estimate (:math:`\\mathbb E \\ge \\log p`).
        lower_stderr, upper_stderr: their delta-method standard errors.
        forward, reverse: the two :class:`~pgm_lab.infer.ais.AISEstimate` runs (the reverse
            one's ``log_px`` is :math:`\\log \\frac1C \\sum_c w_c = -\\text{upper}`).
    """

    lower: torch.Tensor
    upper: torch.Tensor
    lower_stderr: torch.Tensor
    upper_stderr: torch.Tensor
    forward: AISEstimate
    reverse: AISEstimate

    @property
    def gap(self) -> torch.Tensor:
        """``upper - lower`` ``[N]``: an estimate of how far both bounds are from the truth."""
        return self.upper - self.lower


def _exact_state(path: AnnealingPath, latents: dict[str, torch.Tensor]) -> State:
    if set(latents) != set(path.names):
        raise DataError(f"latents must give every latent site of the model {path.names}, got "
                        f"{sorted(latents)}; try the latents returned by simulate()")
    for s in path.sites:
        want = path.expand_chains(s, path.prior_trace.nodes[s.name]["value"]).shape[1:]
        got = path.expand_chains(s, torch.as_tensor(latents[s.name])).shape[1:]
        if got != want:
            raise DataError(f"latents[{s.name!r}] must have shape {tuple(want)} (one value per "
                            f"data point), got {tuple(latents[s.name].shape)}")
    dtype = path.prior_trace.nodes[path.names[0]]["value"].dtype
    return path.unconstrain({n: torch.as_tensor(v, dtype=dtype) for n, v in latents.items()})


def bdmc(model: Callable, guide: Callable | None, *args: Any, latents: dict[str, torch.Tensor],
         num_steps: int = 1000, num_chains: int = 16, leapfrog_steps: int = 10,
         init: str = "guide", seed: int = 0, step_size: float = 0.1,
         target_accept: float = TARGET_ACCEPT, adapt_step_size: bool = True,
         tuning_chains: int = 2, chunk_size: int | None = None, plate_name: str = "data",
         **kwargs: Any) -> BDMCResult:
    r"""Sandwich :math:`\mathbb E\,\text{lower} \le \log p(x_n) \le \mathbb E\,\text{upper}`.

    ``x`` (in ``args``) must be simulated from the model with ``latents`` the values that
    generated it (one exact posterior sample per data point, shapes as the model's latent
    sites without the chain dim, e.g. ``{"z": [N, Z]}``). Forward AIS runs as in
    :func:`pgm_lab.infer.ais`; reverse AIS starts all ``C`` chains of point ``n`` at its exact
    sample and anneals along the reversed schedule :math:`\beta_T = 1 \to \beta_0 = 0`:

    .. math::

        \text{upper}_n = -\log \frac1C \sum_c w^{\mathrm{rev}}_{cn}, \qquad
        \log w^{\mathrm{rev}} = \sum_{t=T}^{1} (\beta_{t-1} - \beta_t)\,[\log p(x, z_t) -
        \log f_0(z_t)].

    The gap ``upper - lower`` bounds the error of both, and shrinks to 0 as ``num_steps`` grows
    (Grosse et al. 2015). Settings as in :func:`pgm_lab.infer.ais`; both directions share
    them, and each adapts its step sizes on its own tuning chains (which, in reverse, also
    start at the exact samples).

    Raises:
        DataError: ``latents`` missing a latent site or with the wrong shapes.
        ConfigError, InferenceError: as :func:`pgm_lab.infer.ais`.
    """
    tuning = check_settings(num_steps, num_chains, leapfrog_steps, step_size, target_accept,
                            tuning_chains if adapt_step_size else 0)
    names = sorted(latents)
    base = guide if init == "guide" else None
    if chunk_size is None:
        chunk_size = default_chunk_size(model, base, args, kwargs, num_chains + tuning)
    settings = dict(leapfrog_steps=leapfrog_steps, step_size=step_size,
                    target_accept=target_accept, tuning_chains=tuning)

    def run(*a: Any) -> tuple[AISEstimate, AISEstimate]:
        a, exact = a[:len(args)], dict(zip(names, a[len(args):]))
        path = AnnealingPath(model, base, a, kwargs, num_chains=num_chains + tuning,
                             init=init, plate_name=plate_name)
        betas = sigmoid_schedule(num_steps)
        out = []
        for start, schedule in ((path.initial_state(), betas),
                                (_exact_state(path, exact), betas.flip(0))):
            log_w, acceptance, eps, state = anneal(path, start, schedule, **settings)
            log_mean, stderr = _log_mean_and_stderr(log_w)
            out.append(AISEstimate(log_mean, stderr, log_w, acceptance, eps,
                                   path.constrain(state)))
        return tuple(out)

    values = tuple(torch.as_tensor(latents[n]) for n in names)
    if args and isinstance(args[0], torch.Tensor) and any(
            v.dim() == 0 or v.shape[0] != args[0].shape[0] for v in values):
        raise DataError(f"latents must have one row per data point ({args[0].shape[0]}), got "
                        f"shapes { {n: tuple(v.shape) for n, v in zip(names, values)} }")
    with seeded(seed, data_device(args)):
        parts = _batched(run, args + values, chunk_size)
    forward = concat_estimates([p[0] for p in parts])
    reverse = concat_estimates([p[1] for p in parts])
    return BDMCResult(forward.log_px, -reverse.log_px, forward.stderr, reverse.stderr,
                      forward, reverse)

