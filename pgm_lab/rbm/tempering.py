r"""Parallel tempering (replica exchange) for energy models, with swap-rate reporting.

``T`` replicas of ``C`` chains each sample :math:`p_\beta(v, h) \propto e^{-\beta E(v, h)}` at
inverse temperatures :math:`0 \le \beta_1 < \dots < \beta_T = 1`. One step is a Gibbs sweep of
every replica (the model's :meth:`~pgm_lab.rbm.energy.EnergyModel.sweep` at its
:math:`\beta`), then proposed swaps of the states of neighbouring temperatures -- the even
pairs :math:`(1, 2), (3, 4), \dots` on even steps, the odd pairs on odd steps -- accepted with
probability

.. math:: \min\Big(1, \exp\big((\beta_t - \beta_{t+1})(E(x_t) - E(x_{t+1}))\big)\Big),

the Metropolis ratio of the product distribution :math:`\prod_t p_{\beta_t}(x_t)`, which is
therefore left invariant. Hot replicas cross energy barriers and hand their states down to
the :math:`\beta = 1` replica, whose chains are the samples.

Reference: Desjardins, Courville, Bengio, Vincent & Delalleau (2010), "Tempered Markov chain
Monte Carlo for training of restricted Boltzmann machines".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from ..errors import ConfigError

if TYPE_CHECKING:  # the sampler only calls the model's sweep / energy / init_hidden
    from .energy import EnergyModel

__all__ = ["ParallelTempering", "PTResult", "parallel_tempering", "swap_log_acceptance"]


def swap_log_acceptance(beta_i: torch.Tensor | float, beta_j: torch.Tensor | float,
                        energy_i: torch.Tensor, energy_j: torch.Tensor) -> torch.Tensor:
    r"""Log Metropolis ratio of swapping states :math:`x_i \leftrightarrow x_j` between
    inverse temperatures :math:`\beta_i, \beta_j`: :math:`(\beta_i - \beta_j)(E(x_i) -
    E(x_j))` (the swap is accepted when ``log u`` is below it)."""
    return (beta_i - beta_j) * (energy_i - energy_j)


def _check_betas(betas: object) -> torch.Tensor:
    b = torch.as_tensor(betas, dtype=torch.float64)
    if b.dim() != 1 or b.numel() < 2 or not (b[0] >= 0) or b[-1] != 1 \
            or not (b.diff() > 0).all():
        raise ConfigError(f"betas must increase from a value >= 0 to 1 (at least two), got "
                          f"{b.tolist() if b.numel() < 20 else tuple(b.shape)}; try "
                          "torch.linspace(0.5, 1, 10)")
    return b


class PTResult(NamedTuple):
    """Output of :func:`parallel_tempering`.

    Attributes:
        v, h: final states of the :math:`\\beta = 1` chains, ``[C, V]`` and ``[C, H]``.
        samples: ``[num_steps, C, V]`` visible states of the :math:`\\beta = 1` chains if
            recorded, else ``None``.
        swap_rates: ``[T - 1]`` fraction of accepted swaps between temperatures ``t, t + 1``.
        betas: the inverse temperatures ``[T]``.
    """

    v: torch.Tensor
    h: torch.Tensor
    samples: torch.Tensor | None
    swap_rates: torch.Tensor
    betas: torch.Tensor


class ParallelTempering:
    r"""Replica-exchange sampler state: ``v [T, C, V]``, ``h [T, C, H]`` and swap counts.

    Args:
        model: the energy model.
        betas: increasing inverse temperatures ending at 1, ``[T]``.
        init: visible start states ``[C, V]``, copied to every temperature.
        generator: randomness (``None``: torch's global RNG).

    :meth:`step` advances every replica once and proposes swaps; :attr:`swap_rates` reports
    the accepted fraction per neighbouring pair since construction (or :meth:`reset_rates`).
    """

    def __init__(self, model: EnergyModel, betas: object, init: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> None:
        self.model = model
        self.generator = generator
        v = model.check_visible(init, name="init")
        self.betas = _check_betas(betas).to(v.device)
        self._beta_list = self.betas.tolist()
        t = len(self._beta_list)
        with torch.no_grad():
            self.v = v.unsqueeze(0).repeat(t, 1, 1)
            self.h = torch.stack([model.init_hidden(v, generator) for _ in range(t)])
        self._parity = 0
        self.accepted = torch.zeros(t - 1, dtype=torch.float64)
        self.attempted = torch.zeros(t - 1, dtype=torch.float64)

    @property
    def swap_rates(self) -> torch.Tensor:
        """Accepted / proposed swaps per pair of neighbouring temperatures, ``[T - 1]`` (NaN
        for a pair never proposed)."""
        return self.accepted / self.attempted

    def reset_rates(self) -> None:
        self.accepted.zero_()
        self.attempted.zero_()

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One sweep of every replica, then swaps of the pairs of this step's parity; returns
        the :math:`\\beta = 1` state ``(v [C, V], h [C, H])``."""
        model, gen = self.model, self.generator
        with torch.no_grad():
            for t, beta in enumerate(self._beta_list):
                self.v[t], self.h[t] = model.sweep(self.v[t], self.h[t], gen, beta=beta)
            self._swap()
        return self.v[-1], self.h[-1]

    def _swap(self) -> None:
        lo = torch.arange(self._parity, len(self._beta_list) - 1, 2, device=self.v.device)
        self._parity ^= 1
        if lo.numel() == 0:
            return
        hi = lo + 1
        energy = self.model.energy(self.v, self.h)  # [T, C]
        beta = self.betas.to(energy.dtype)
        log_a = swap_log_acceptance(beta[lo, None], beta[hi, None], energy[lo], energy[hi])
        u = torch.rand(log_a.shape, dtype=log_a.dtype, device=log_a.device,
                       generator=self.generator)
        accept = torch.log(u) < log_a  # [pairs, C]
        for state in (self.v, self.h):
            a = accept.unsqueeze(-1)
            low, high = state[lo], state[hi]
            state[lo] = torch.where(a, high, low)
            state[hi] = torch.where(a, low, high)
        self.accepted[lo.cpu()] += accept.double().sum(1).cpu()
        self.attempted[lo.cpu()] += accept.shape[1]


def parallel_tempering(
    model: EnergyModel,
    v0: torch.Tensor,
    num_steps: int,
    *,
    betas: object = None,
    num_temperatures: int = 10,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    record_samples: bool = False,
) -> PTResult:
    r"""Run parallel tempering for ``num_steps`` steps from ``v0 [C, V]`` at every temperature.

    Args:
        model: the energy model (any :class:`~pgm_lab.rbm.energy.EnergyModel`).
        v0: binary start states ``[C, V]``.
        num_steps: replica sweeps (each followed by swaps).
        betas: inverse temperatures ``[T]``, increasing to 1; default ``num_temperatures``
            values evenly spaced in ``[0, 1]`` (:math:`\beta = 0` is the uniform distribution).
        generator, seed: randomness, as in :func:`pgm_lab.rbm.gibbs`.
        record_samples: keep the :math:`\beta = 1` visible states of every step.

    Returns:
        :class:`PTResult` with the swap acceptance rates per neighbouring pair.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
        raise ConfigError(f"num_steps must be an int >= 0, got {num_steps!r}")
    if betas is None:
        if isinstance(num_temperatures, bool) or not isinstance(num_temperatures, int) \
                or num_temperatures < 2:
            raise ConfigError(f"num_temperatures must be an int >= 2, got "
                              f"{num_temperatures!r}")
        betas = torch.linspace(0.0, 1.0, num_temperatures, dtype=torch.float64)
    if seed is not None:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
    pt = ParallelTempering(model, betas, v0, generator=generator)
    samples = []
    for _ in range(num_steps):
        v, _ = pt.step()
        if record_samples:
            samples.append(v.clone())
    return PTResult(v=pt.v[-1].clone(), h=pt.h[-1].clone(),
                    samples=torch.stack(samples) if samples else (
                        pt.v.new_zeros(0, *pt.v.shape[1:]) if record_samples else None),
                    swap_rates=pt.swap_rates, betas=pt.betas)
