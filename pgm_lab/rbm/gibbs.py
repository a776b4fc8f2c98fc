"""Block Gibbs sampling for energy models: a batched sampler and a Pyro MCMC kernel.

One Gibbs step resamples the hidden layer given the visible one, then the visible layer given
the hidden one -- at once for a factorized layer (an RBM), one unit at a time for a coupled
layer (a Boltzmann machine); the model says which through :meth:`EnergyModel.sweep
<pgm_lab.rbm.energy.EnergyModel.sweep>`:

.. math:: h^{(t)} \\sim p(h \\mid v^{(t-1)}, h^{(t-1)}), \\qquad
          v^{(t)} \\sim p(v \\mid h^{(t)}, v^{(t-1)}).

:func:`gibbs` runs many chains at once (a batch dimension) and can record free-energy traces;
:class:`GibbsKernel` wraps the same step as a :class:`pyro.infer.mcmc.MCMCKernel` so that
:class:`pyro.infer.MCMC` drives it (warmup, chains, progress, ``get_samples``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

import torch
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel

from ..errors import ConfigError

if TYPE_CHECKING:  # the models import this module; it only calls their sweep / init_hidden
    from .energy import EnergyModel

__all__ = ["GibbsResult", "gibbs", "gibbs_step", "GibbsKernel"]


class GibbsResult(NamedTuple):
    """Output of :func:`gibbs`.

    Attributes:
        v: final visible states ``[C, V]``.
        h: final hidden states ``[C, H]`` (those that generated ``v``).
        free_energy: ``[num_steps, C]`` trace of :math:`F(v^{(t)})` if recorded, else ``None``.
        samples: ``[num_steps // thin, C, V]`` recorded visible states if requested, else
            ``None``.
    """

    v: torch.Tensor
    h: torch.Tensor
    free_energy: torch.Tensor | None
    samples: torch.Tensor | None


def gibbs_step(model: EnergyModel, v: torch.Tensor, generator: torch.Generator | None = None,
               h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gibbs step ``(v, h) -> (v', h')`` for a batch of chains ``v [..., V]``.

    ``h [..., H]``, the current hidden state, matters only for coupled hidden units (``None``
    starts them afresh); see :meth:`EnergyModel.sweep <pgm_lab.rbm.energy.EnergyModel.sweep>`.
    """
    return model.sweep(v, h, generator)


def _check_steps(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def gibbs(
    model: EnergyModel,
    v0: torch.Tensor,
    num_steps: int,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    record_free_energy: bool = False,
    record_samples: bool = False,
    thin: int = 1,
) -> GibbsResult:
    """Run ``C`` block Gibbs chains for ``num_steps`` steps from ``v0 [C, V]``.

    Args:
        model: the energy model (e.g. :class:`~pgm_lab.rbm.RBM`).
        v0: binary start states ``[C, V]`` (validated), e.g. data or random bits.
        num_steps: full steps ``v -> h -> v``.
        generator, seed: randomness; ``seed`` makes a fresh generator, otherwise ``generator``
            or torch's global RNG is used.
        record_free_energy: keep :math:`F(v^{(t)})` for every step (``[num_steps, C]``).
        record_samples: keep every ``thin``-th visible state.

    Returns:
        :class:`GibbsResult`. Runs without gradients.
    """
    _check_steps("num_steps", num_steps, 0)
    _check_steps("thin", thin, 1)
    v = model.check_visible(v0, name="v0")
    if seed is not None:
        generator = torch.Generator(device=v.device).manual_seed(seed)
    fes, samples = [], []
    with torch.no_grad():
        h = model.init_hidden(v, generator)
        for t in range(num_steps):
            v, h = gibbs_step(model, v, generator, h)
            if record_free_energy:
                fes.append(model.free_energy(v))
            if record_samples and (t + 1) % thin == 0:
                samples.append(v)
    return GibbsResult(
        v=v,
        h=h,
        free_energy=torch.stack(fes) if fes else (v.new_zeros(0, v.shape[0])
                                                  if record_free_energy else None),
        samples=torch.stack(samples) if samples else (v.new_zeros(0, *v.shape)
                                                      if record_samples else None),
    )


class GibbsKernel(MCMCKernel):
    r"""Block Gibbs sampling of :math:`p(v, h)` as a :class:`pyro.infer.mcmc.MCMCKernel`.

    The state is ``{"v": [*batch_shape, V], "h": [*batch_shape, H]}``; each call to
    :meth:`sample` is one block Gibbs step. ``batch_shape`` runs independent chains inside one
    kernel (vectorized), which is much faster than ``MCMC(num_chains=...)``, whose chains run
    in separate processes or one after the other::

        mcmc = pyro.infer.MCMC(GibbsKernel(rbm, batch_shape=(100,)), num_samples=500,
                               warmup_steps=100)
        mcmc.run()
        v = mcmc.get_samples()["v"]            # [500, 100, V]
        idata = pgm_lab.rbm.diagnostics.to_inference_data(mcmc, rbm)

    Args:
        model: the energy model.
        batch_shape: shape of the batch of chains in one kernel (default: a single chain).
        init: initial visible state ``[*batch_shape, V]`` of every chain (each :meth:`setup`;
            ``MCMC(initial_params=...)`` replaces it per chain); default: uniform random bits
            drawn at every :meth:`setup` (so each MCMC chain starts elsewhere).
        seed: seed of the kernel's generator (``None``: torch's global RNG). Chains drawn
            one after another share the generator, so each continues the stream. Chains that
            ``MCMC(num_chains=...)`` runs in worker processes each receive a copy of the
            kernel: there the generator is seeded from ``seed`` *and* the worker's torch seed
            (which Pyro sets to the parent's initial seed plus the chain id), so the chains
            differ and stay reproducible under ``pyro.set_rng_seed``.
    """

    def __init__(self, model: EnergyModel, *, batch_shape: tuple[int, ...] = (),
                 init: torch.Tensor | None = None, seed: int | None = None) -> None:
        if not all(callable(getattr(model, m, None))
                   for m in ("sweep", "init_hidden", "check_visible")):
            raise ConfigError(f"expected an EnergyModel such as pgm_lab.rbm.RBM, got "
                              f"{type(model).__name__}")
        self.model = model
        self.batch_shape = torch.Size(batch_shape)
        self.seed = seed
        # The state is already in its support: no unconstraining transforms for MCMC to apply.
        self.transforms: dict = {}
        self._generator: torch.Generator | None = None
        self._owner_pid = os.getpid()
        self._init = None if init is None else self._check_state(init)
        self._state: dict[str, torch.Tensor] | None = None

    def _check_state(self, v: torch.Tensor) -> torch.Tensor:
        shape = (*self.batch_shape, self.model.n_visible)
        v = torch.as_tensor(v)
        if tuple(v.shape) != shape:
            raise ConfigError(f"expected an initial visible state of shape {shape}, got "
                              f"{tuple(v.shape)}")
        return self.model.check_visible(v.reshape(-1, shape[-1]), name="init").reshape(shape)

    def _param(self) -> torch.Tensor:
        return next(self.model.parameters())

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        """Start a chain (called by MCMC once per chain): seed the generator on first use and
        draw the initial state -- ``init`` / the last ``initial_params`` set, else uniform
        random bits -- with ``h ~ p(h | v)``. Block Gibbs has nothing to adapt, so
        ``warmup_steps`` (and the model arguments) are unused; warmup draws are only
        discarded by MCMC."""
        p = self._param()
        if self._generator is None and self.seed is not None:
            seed = self.seed
            if os.getpid() != self._owner_pid:
                # a copy of the kernel in an MCMC worker process: without the worker's own
                # torch seed every parallel chain would replay the same stream (R-hat = 1)
                seed = (seed * 1_000_003 + torch.initial_seed()) % 2**63
            self._generator = torch.Generator(device=p.device).manual_seed(seed)
        if self._init is not None:
            v = self._init
        else:
            probs = p.new_full((*self.batch_shape, self.model.n_visible), 0.5)
            v = torch.bernoulli(probs, generator=self._generator)
        with torch.no_grad():
            self._state = {"v": v, "h": self.model.init_hidden(v, self._generator)}

    @property
    def initial_params(self) -> dict[str, torch.Tensor]:
        """The current state ``{"v": [*batch_shape, V], "h": [*batch_shape, H]}``
        (set up on first access). Setting it (``{"v": ...}``, validated) fixes the start
        state of every following :meth:`setup` and of the next read."""
        if self._state is None:
            self.setup(0)
        return self._state

    @initial_params.setter
    def initial_params(self, params: dict[str, torch.Tensor]) -> None:
        self._init = self._check_state(params["v"])
        self._state = None  # the next read of initial_params starts from it

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One block Gibbs step from ``params["v"]``: returns the new ``{"v", "h"}``
        (always accepted, no gradients)."""
        with torch.no_grad():
            v, h = gibbs_step(self.model, params["v"], self._generator, params.get("h"))
        self._state = {"v": v, "h": h}
        return self._state
