r"""Persistent contrastive divergence in one tight loop, for any energy model.

:func:`persistent_cd` trains by stochastic gradient ascent on the log-likelihood with the
gradient split into a data ("positive") and a model ("negative") phase,

.. math:: \nabla_\theta \log p(v) = -\nabla_\theta F(v) + \mathbb{E}_{p}[\nabla_\theta E],

* **positive phase**: exact, :math:`-\nabla F(v)` (closed form when hidden units are
  independent given ``v``; by enumeration of the :math:`2^H` hidden states otherwise), or
  **mean field** when hidden units interact and enumeration is too costly: the gradient of
  :math:`-E(v, \mu)` at the fixed point :math:`\mu` of the model's ``mean_field``, which
  maximizes a lower bound of :math:`\log p(v)` (Salakhutdinov & Hinton 2009);
* **negative phase**: persistent chains (Tieleman 2008) advanced ``k`` Gibbs sweeps per update,
  or ``k`` steps of parallel tempering (PT-PCD; Desjardins et al. 2010), whose swap rates are
  reported per epoch.

For RBMs (``has_rbm_energy``) the gradient is written in closed form (no autograd graph, no
Pyro trace), optionally **centered** (Montavon & Müller 2012; Melchior, Fischer & Wiskott
2016): with offsets :math:`\mu` (visible data mean) and :math:`\lambda` (a running mean of the
hidden activations on data),

.. math:: \Delta W \propto \langle (v - \mu)(\hat h - \lambda)^\top \rangle_\text{data}
          - \langle (v - \mu)(\hat h - \lambda)^\top \rangle_\text{model}, \quad
          \Delta b \propto \nabla_b - \Delta W \lambda, \quad
          \Delta c \propto \nabla_c - \Delta W^\top \mu,

the gradient step of the centered energy :math:`-(v - \mu)^\top W (h - \lambda) - b_c^\top
(v - \mu) - c_c^\top (h - \lambda)`, mapped back to the plain parameters (the model itself is
the same RBM: see :func:`centered_parameters`).

This path skips :func:`pgm_lab.train.fit` (no per-step Pyro tracing, no checkpoints); use
``RBM.fit(..., engine="svi")`` for those.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .._threads import step_work, training_threads
from ..errors import ConfigError, TrainingError
from ..train import EpochRecord, History
from .numerics import phase_weights, softplus
from .tempering import ParallelTempering

if TYPE_CHECKING:
    from .energy import EnergyModel

__all__ = ["persistent_cd", "centered_parameters", "EXACT_POSITIVE_MAX_HIDDEN"]

#: ``positive="auto"`` enumerates coupled hidden units up to this many (2^10 states per
#: example), and uses mean field above.
EXACT_POSITIVE_MAX_HIDDEN = 10


def centered_parameters(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, mu: torch.Tensor,
                        lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Biases of the centered RBM equal to the plain one: ``(b_c, c_c)`` with
    :math:`b_c = b + W \lambda`, :math:`c_c = c + W^\top \mu`.

    Then :math:`-(v-\mu)^\top W (h-\lambda) - b_c^\top (v-\mu) - c_c^\top (h-\lambda)
    = E(v, h) + \text{const}`, so :math:`p(v, h)` is unchanged by centering.
    """
    return b + W @ lam, c + W.T @ mu


def _check_number(name: str, value: object, lo: float, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) \
            or value < lo:
        kind = "an int" if integer else "a finite number"
        raise ConfigError(f"{name} must be {kind} >= {lo}, got {value!r}")


class _NegativePhase:
    """Persistent chains ``(v [C, V], h [C, H])``, advanced by Gibbs sweeps or by PT."""

    def __init__(self, model: EnergyModel, init: torch.Tensor, sampler: str, betas: Any,
                 gen: torch.Generator) -> None:
        self.model, self.gen = model, gen
        self.pt = ParallelTempering(model, betas, init, generator=gen) if sampler == "pt" \
            else None
        self.v = init
        self.h = None if self.pt is not None else model.init_hidden(init, gen)

    def restart(self, v: torch.Tensor) -> None:
        """Start the (non-persistent) chains at ``v``."""
        self.v, self.h = v, None if self.model.hidden_factorized else \
            self.model.init_hidden(v, self.gen)

    def advance(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        for _ in range(k):
            if self.pt is not None:
                self.v, self.h = self.pt.step()
            else:
                self.v, self.h = self.model.sweep(self.v, self.h, self.gen)
        return self.v, self.h


def persistent_cd(
    model: EnergyModel,
    data: Any,
    *,
    epochs: int = 10,
    batch_size: int = 10,
    lr: float = 0.05,
    lr_final: float | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    k: int = 1,
    persistent: bool = True,
    num_chains: int | None = None,
    positive: str = "auto",
    sampler: str = "gibbs",
    betas: Any = None,
    num_temperatures: int = 10,
    centering: bool = False,
    mean_field_iters: int = 30,
    seed: int | None = 0,
    num_threads: int | None = None,
    callbacks: Sequence[Callable] = (),
) -> History:
    r"""Train ``model`` in place by PCD-k with SGD; returns the per-epoch :class:`History`.

    Args:
        model: an :class:`~pgm_lab.rbm.energy.EnergyModel` (RBM, BoltzmannMachine, ...).
        data: binary ``[N, V]``.
        epochs, batch_size: passes over the shuffled data and minibatch size.
        lr: learning rate; with ``lr_final`` it decays linearly from ``lr`` to ``lr_final``
            over the updates.
        momentum, weight_decay: SGD momentum; L2 decay of the weights and couplings (biases
            are not decayed).
        k: Gibbs sweeps (or PT steps) per update.
        persistent: PCD; ``False`` is CD-k (Hinton 2002): the negative chains restart at the
            minibatch at every update (``num_chains`` and ``sampler="pt"`` then do not apply).
        num_chains: persistent chains (default ``batch_size``), started at random data rows.
        positive: ``"exact"``, ``"mean-field"`` (needs the model's ``mean_field``) or
            ``"auto"``: exact unless hidden units interact and ``H`` exceeds
            ``EXACT_POSITIVE_MAX_HIDDEN``.
        sampler: ``"gibbs"`` or ``"pt"`` (parallel tempering; ``betas`` or
            ``num_temperatures`` evenly spaced in ``[0, 1]``).
        centering: centered gradient (RBMs only, see the module docstring).
        mean_field_iters: mean-field sweeps per positive phase.
        seed: seed of shuffling and sampling (``None``: torch's global RNG draws one).
        num_threads: torch threads while training (``None``: chosen from the step size).
        callbacks: ``cb(epoch, record)`` after each epoch (a
            :class:`pgm_lab.train.EpochRecord`); a truthy return stops training.

    Returns:
        :class:`pgm_lab.train.History`; ``loss`` is the mean of :math:`\bar F_\text{data} -
        \bar E_\text{model}` per epoch (a surrogate, not a likelihood). With ``sampler="pt"``
        ``history.swap_rates`` holds the ``[T - 1]`` swap acceptance rates of every epoch.

    Raises:
        TrainingError: the parameters became non-finite (the epoch and update are named).
    """
    for name, value, lo, integer in (("epochs", epochs, 1, True),
                                     ("batch_size", batch_size, 1, True), ("k", k, 1, True),
                                     ("lr", lr, 0, False), ("momentum", momentum, 0, False),
                                     ("weight_decay", weight_decay, 0, False),
                                     ("mean_field_iters", mean_field_iters, 1, True)):
        _check_number(name, value, lo, integer)
    if lr_final is not None:
        _check_number("lr_final", lr_final, 0)
    if not isinstance(persistent, bool):
        raise ConfigError(f"persistent must be True or False, got {persistent!r}")
    if num_chains is not None:
        if not persistent:
            raise ConfigError("num_chains only applies to persistent=True (PCD); CD starts "
                              "one chain per data point")
        _check_number("num_chains", num_chains, 1, True)
    if positive not in ("auto", "exact", "mean-field"):
        raise ConfigError(f"positive must be 'auto', 'exact' or 'mean-field', got {positive!r}")
    if sampler not in ("gibbs", "pt"):
        raise ConfigError(f"sampler must be 'gibbs' or 'pt', got {sampler!r}")
    if sampler == "pt" and not persistent:
        raise ConfigError("sampler='pt' needs persistent chains; use persistent=True")
    if positive == "auto":
        exact = model.hidden_factorized or model.n_hidden <= EXACT_POSITIVE_MAX_HIDDEN
        positive = "exact" if exact else "mean-field"
    if positive == "mean-field" and not callable(getattr(model, "mean_field", None)):
        raise ConfigError(f"positive='mean-field' needs a model with mean_field(v), got "
                          f"{type(model).__name__}; use positive='exact'")
    closed_form = bool(model.has_rbm_energy)
    if centering and not closed_form:
        raise ConfigError(f"centering is implemented for RBM energies, got "
                          f"{type(model).__name__} whose has_rbm_energy is false; try "
                          "centering=False")
    if sampler == "pt" and betas is None:
        _check_number("num_temperatures", num_temperatures, 2, True)
        betas = torch.linspace(0.0, 1.0, num_temperatures, dtype=torch.float64)

    # everything runs on the training threads: the data checks too (a handful of passes over
    # the data, slowed several-fold by idle OpenMP threads spinning on a busy machine)
    work = step_work(batch_size, model.parameters())
    with training_threads(num_threads, work), torch.no_grad():
        x = model.check_visible(data, name="data")
        n = x.shape[0]
        if seed is None:
            seed = int(torch.randint(2**62, ()).item())
        gen = torch.Generator(device=x.device).manual_seed(seed)
        chains = num_chains or min(batch_size, n)
        init = x[torch.randint(n, (chains,), generator=gen, device=x.device)].clone()

        optim = _SGD(model, momentum, weight_decay)
        steps_per_epoch = math.ceil(n / batch_size)
        total = epochs * steps_per_epoch
        history = History()
        history.swap_rates = []
        state = {"lam": None, "mu": x.mean(0)} if centering else None
        negative = _NegativePhase(model, init, sampler, betas, gen)
        step = 0
        for epoch in range(epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen, device=x.device)
            loss_sum = x.new_zeros(())
            for start in range(0, n, batch_size):
                v_pos = x[order[start:start + batch_size]]
                if not persistent:
                    negative.restart(v_pos)
                v_neg, h_neg = negative.advance(k)
                rate = lr if lr_final is None else lr + (lr_final - lr) * step / max(1, total - 1)
                if closed_form:
                    value = _rbm_gradient(optim.params, v_pos, v_neg, state)
                else:
                    optim.zero_grad()
                    value = _autograd_gradient(model, v_pos, v_neg, h_neg, positive,
                                               mean_field_iters)
                optim.step(rate)
                loss_sum += value * v_pos.shape[0]
                step += 1
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                raise TrainingError(f"non-finite parameters after epoch {epoch}; lower lr "
                                    f"(got {lr})")
            record = EpochRecord(epoch=epoch, loss=float(loss_sum) / n,
                                 seconds=time.perf_counter() - t0, steps=steps_per_epoch)
            history.epochs.append(record)
            if negative.pt is not None:
                history.swap_rates.append(negative.pt.swap_rates.tolist())
                negative.pt.reset_rates()
            with torch.enable_grad():
                if any([cb(epoch, record) for cb in callbacks]):
                    break
    return history


class _SGD:
    """SGD with momentum and L2 decay of the weights (``W``, ``U_upper``, ``P_upper``), on
    gradients in preallocated ``.grad`` buffers: the few in-place ops of ``torch.optim.SGD``
    without its per-step bookkeeping, which cost more than a small RBM's GEMMs."""

    DECAYED = ("W", "U_upper", "P_upper")

    def __init__(self, model: EnergyModel, momentum: float, weight_decay: float) -> None:
        self.params = dict(model.named_parameters())
        for p in self.params.values():
            p.grad = torch.zeros_like(p)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.buffers = {name: torch.zeros_like(p) for name, p in self.params.items()} \
            if momentum else {}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad.zero_()

    def step(self, lr: float) -> None:
        for name, p in self.params.items():
            if not p.requires_grad:
                continue
            g = p.grad
            if self.weight_decay and name in self.DECAYED:
                g.add_(p, alpha=self.weight_decay)
            if self.momentum:
                g = self.buffers[name].mul_(self.momentum).add_(g)
            p.sub_(g, alpha=lr)


def _rbm_gradient(params: dict[str, torch.Tensor], v_pos: torch.Tensor, v_neg: torch.Tensor,
                  state: dict | None) -> torch.Tensor:
    """Closed-form (optionally centered) PCD gradient of an RBM into ``.grad``; returns the
    surrogate value (a scalar tensor: no host sync per step). Both phases share one GEMM:
    rows ``x = [v_pos; v_neg]`` with weights ``w = (-1/|P|, ..., 1/|N|, ...)``. Call under
    ``torch.no_grad()``."""
    W, b, c = params["W"], params["b"], params["c"]
    x = torch.cat([v_pos, v_neg])
    w = phase_weights(v_pos.shape[0], v_neg.shape[0], x.dtype, x.device)
    a = torch.addmm(c, x, W)
    h = torch.sigmoid(a)
    value = (w @ x) @ b + w @ softplus(a).sum(1)
    if state is None:
        torch.mv(x.T, w, out=b.grad)
        torch.mv(h.T, w, out=c.grad)
        torch.mm(x.T, h.mul_(w.unsqueeze(1)), out=W.grad)
        return value
    mu = state["mu"]
    batch_mean = h[: v_pos.shape[0]].mean(0)
    lam = state["lam"] = batch_mean if state["lam"] is None else \
        0.99 * state["lam"] + 0.01 * batch_mean
    db, dc = w @ x, w @ h
    torch.mm((x - mu).T, (h - lam).mul_(w.unsqueeze(1)), out=W.grad)
    torch.sub(db, W.grad @ lam, out=b.grad)
    torch.sub(dc, W.grad.T @ mu, out=c.grad)
    return value


def _autograd_gradient(model: EnergyModel, v_pos: torch.Tensor, v_neg: torch.Tensor,
                       h_neg: torch.Tensor, positive: str, mean_field_iters: int
                       ) -> torch.Tensor:
    """PCD gradient by autograd of the surrogate :math:`\\bar F_+ - \\bar E_-` (or
    :math:`\\bar E(v, \\mu) - \\bar E_-` with mean field) into ``.grad``; returns the
    surrogate's value (a detached scalar tensor: no host sync per step)."""
    if positive == "mean-field":
        mu = model.mean_field(v_pos, num_iters=mean_field_iters)
    with torch.enable_grad():
        if positive == "mean-field":
            pos = model.energy(v_pos, mu).mean()
            neg = model.energy(v_neg, h_neg).mean()
        else:  # exact: F(v) marginalizes h in both phases (Rao-Blackwellized negative phase)
            pos = model.free_energy(v_pos).mean()
            neg = model.free_energy(v_neg).mean()
        value = pos - neg
        value.backward()
    return value.detach()
