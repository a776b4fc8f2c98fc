"""The general binary Boltzmann machine: visible-visible and hidden-hidden couplings.

Ackley, Hinton & Sejnowski (1985); the semi-restricted machine (visible couplings only) of
Osindero & Hinton (2008) and the RBM are its special cases.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..train import History
from .bernoulli import bernoulli_logits
from .energy import EnergyModel
from .pcd import persistent_cd

__all__ = ["BoltzmannMachine"]


class BoltzmannMachine(EnergyModel):
    r"""Boltzmann machine with binary visible and hidden units and lateral couplings.

    .. math::

        E(v, h) = -b^\top v - c^\top h - v^\top W h - v^\top U v - h^\top P h

    with ``U [V, V]`` and ``P [H, H]`` symmetric and zero on the diagonal. **Convention**: the
    quadratic forms are taken literally, so a pair :math:`i \ne k` contributes
    :math:`2 U_{ik} v_i v_k` (each pair is counted twice). The conditionals of single units are

    .. math::

        p(h_j = 1 \mid v, h_{-j}) = \sigma\big(c_j + v^\top W_{:, j} + 2 P_{j,:} h\big),
        \qquad
        p(v_i = 1 \mid h, v_{-i}) = \sigma\big(b_i + W_{i,:} h + 2 U_{i,:} v\big),

    so with couplings a layer is no longer independent given the other one: Gibbs sampling
    (:meth:`sweep`) updates a coupled layer one unit at a time (systematic scan, batched over
    chains) and the exact free energy of a coupled layer sums over its :math:`2^n` states.
    Exact :math:`\log Z` (:meth:`log_partition`) enumerates the visible layer if hidden units
    are uncoupled, the hidden layer if visible units are uncoupled, else all :math:`2^{V + H}`
    joint states; each is refused above :math:`2^{25}` states
    (:data:`pgm_lab.rbm.states.MAX_EXACT_UNITS`).

    ``U`` and ``P`` are properties built from unconstrained parameters ``U_upper [V, V]`` /
    ``P_upper [H, H]`` of which only the strict upper triangle is used
    (:math:`U = T + T^\top` with :math:`T = \operatorname{triu}_1(U_\text{upper})`),
    so any gradient step keeps them symmetric with zero diagonal. Without couplings they are
    zero and not parameters; with neither the model is an RBM (``has_rbm_energy``, so AIS
    applies).

    Args:
        n_visible, n_hidden: layer sizes ``V`` and ``H``.
        visible_couplings: learn ``U`` (else ``U = 0``).
        hidden_couplings: learn ``P`` (else ``P = 0``).
        seed: seed of the initialization (``None``: torch's global RNG): weights and coupling
            entries :math:`\sim N(0, \text{init\_std}^2)`, biases zero.
        init_std: standard deviation of the initial weights and couplings.
        dtype: parameter dtype.
        name: prefix of the parameter names in Pyro's param store.

    References:
        Ackley, Hinton & Sejnowski (1985), "A learning algorithm for Boltzmann machines";
        Osindero & Hinton (2008), "Modeling image patches with a directed hierarchy of Markov
        random fields"; Salakhutdinov & Hinton (2009), "Deep Boltzmann machines".
    """

    def __init__(self, n_visible: int, n_hidden: int, *, visible_couplings: bool = True,
                 hidden_couplings: bool = True, seed: int | None = None, init_std: float = 0.01,
                 dtype: torch.dtype = torch.float32, name: str = "bm") -> None:
        super().__init__(n_visible, n_hidden, name=name)
        for arg, value in (("visible_couplings", visible_couplings),
                           ("hidden_couplings", hidden_couplings)):
            if not isinstance(value, bool):
                raise ConfigError(f"{arg} must be True or False, got {value!r}")
        if not init_std >= 0:
            raise ConfigError(f"init_std must be >= 0, got {init_std!r}")
        self.visible_couplings = visible_couplings
        self.hidden_couplings = hidden_couplings
        self.visible_factorized = not visible_couplings
        self.hidden_factorized = not hidden_couplings
        self.has_rbm_energy = not (visible_couplings or hidden_couplings)
        gen = None if seed is None else torch.Generator().manual_seed(seed)

        def randn(*shape: int) -> torch.Tensor:
            return init_std * torch.randn(*shape, generator=gen, dtype=dtype)

        self.W = nn.Parameter(randn(n_visible, n_hidden))
        self.b = nn.Parameter(torch.zeros(n_visible, dtype=dtype))
        self.c = nn.Parameter(torch.zeros(n_hidden, dtype=dtype))
        if visible_couplings:
            self.U_upper = nn.Parameter(randn(n_visible, n_visible).triu(1))
        if hidden_couplings:
            self.P_upper = nn.Parameter(randn(n_hidden, n_hidden).triu(1))

    # ---- parameters --------------------------------------------------------------------------

    @staticmethod
    def _symmetric(upper: torch.Tensor) -> torch.Tensor:
        u = upper.triu(1)
        return u + u.T

    @property
    def U(self) -> torch.Tensor:
        """Visible couplings ``[V, V]``: symmetric, zero diagonal (zero without couplings)."""
        if not self.visible_couplings:
            return self.W.new_zeros(self.n_visible, self.n_visible)
        return self._symmetric(self.U_upper)

    @property
    def P(self) -> torch.Tensor:
        """Hidden couplings ``[H, H]``: symmetric, zero diagonal (zero without couplings)."""
        if not self.hidden_couplings:
            return self.W.new_zeros(self.n_hidden, self.n_hidden)
        return self._symmetric(self.P_upper)

    def set_couplings(self, U: torch.Tensor | None = None, P: torch.Tensor | None = None) -> None:
        """Set ``U`` and/or ``P`` (symmetric with zero diagonal, checked) in place."""
        for key, value, flag, param in (("U", U, self.visible_couplings, "U_upper"),
                                        ("P", P, self.hidden_couplings, "P_upper")):
            if value is None:
                continue
            if not flag:
                raise ConfigError(f"{key} is fixed at zero in this model; construct it with "
                                  f"{'visible' if key == 'U' else 'hidden'}_couplings=True")
            target = getattr(self, param)
            value = torch.as_tensor(value, dtype=target.dtype, device=target.device)
            if value.shape != target.shape or not torch.allclose(value, value.T) or \
                    value.diagonal().abs().max() > 0:
                raise DataError(f"{key} must be a symmetric {tuple(target.shape)} matrix with "
                                f"zero diagonal, got shape {tuple(value.shape)}; try "
                                f"(A + A.T).fill_diagonal_(0)")
            with torch.no_grad():
                target.copy_(value.triu(1))

    # ---- energy and conditionals -------------------------------------------------------------

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        e = -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)
        if self.visible_couplings:
            e = e - ((v @ self.U) * v).sum(-1)
        if self.hidden_couplings:
            e = e - ((h @ self.P) * h).sum(-1)
        return e

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        r""":math:`c + v^\top W` -- the conditional logits of the hidden units when they are
        uncoupled, and their input from ``v`` otherwise (``[..., V] -> [..., H]``)."""
        if not self.hidden_factorized:
            return super().hidden_logits(v)  # raises: no factorized conditional
        return v @ self.W + self.c

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`b + W h` for uncoupled visible units (``[..., H] -> [..., V]``)."""
        if not self.visible_factorized:
            return super().visible_logits(h)  # raises
        return h @ self.W.T + self.b

    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None, *,
                 h: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
        with torch.no_grad():
            x = v @ self.W + self.c
            if self.hidden_factorized:
                return bernoulli_logits(x.mul_(beta), generator, inplace=True)
            if h is None:
                raise ConfigError("BoltzmannMachine has coupled hidden units, so sample_h "
                                  "needs the current hidden state: sample_h(v, h=h)")
            return _scan(h, x, 2 * self.P, beta, generator)

    def sample_v(self, h: torch.Tensor, v: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, beta: float = 1.0
                 ) -> torch.Tensor:
        with torch.no_grad():
            x = h @ self.W.T + self.b
            if self.visible_factorized:
                return bernoulli_logits(x.mul_(beta), generator, inplace=True)
            if v is None:
                raise ConfigError("BoltzmannMachine has coupled visible units, so sample_v "
                                  "needs the current visible state: sample_v(h, v)")
            return _scan(v, x, 2 * self.U, beta, generator)

    # ---- mean field --------------------------------------------------------------------------

    def mean_field(self, v: torch.Tensor, *, num_iters: int = 100, tol: float = 1e-6
                   ) -> torch.Tensor:
        r"""Mean-field hidden marginals :math:`\mu \approx p(h = 1 \mid v)`, ``[N, V] -> [N, H]``.

        The fully factorized :math:`q(h) = \prod_j \mathrm{Bern}(h_j; \mu_j)` minimizing
        :math:`\mathrm{KL}(q \,\|\, p(h \mid v))` satisfies the fixed point

        .. math:: \mu_j = \sigma\big(c_j + v^\top W_{:, j} + 2 \textstyle\sum_k P_{jk} \mu_k\big),

        reached here by coordinate ascent (units updated in turn, each update lowering
        :meth:`mean_field_free_energy`, so it converges) from :math:`\sigma(c + v^\top W)`, until
        no :math:`\mu_j` moves more than ``tol`` or after ``num_iters`` sweeps. Exact when
        ``P = 0``. No gradients (Salakhutdinov & Hinton 2009, "Deep Boltzmann machines").
        """
        with torch.no_grad():
            x = v @ self.W + self.c
            mu = torch.sigmoid(x)
            if not self.hidden_couplings:
                return mu
            p2 = 2 * self.P
            for _ in range(num_iters):
                old = mu.clone()
                for j in range(self.n_hidden):
                    mu[..., j] = torch.sigmoid(x[..., j] + mu @ p2[:, j])
                if (mu - old).abs().max() <= tol:
                    break
            return mu

    def mean_field_free_energy(self, v: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        r"""Variational free energy :math:`F_q(v) = \mathbb{E}_q[E(v, h)] - \mathcal{H}(q)
        \ge F(v)` of :math:`q = \prod_j \mathrm{Bern}(\mu_j)`, ``[N, V], [N, H] -> [N]``.

        :math:`\mathbb{E}_q[E(v, h)] = E(v, \mu)` exactly, because ``P`` has a zero diagonal.
        """
        mu_c = mu.clamp(torch.finfo(mu.dtype).tiny, 1 - torch.finfo(mu.dtype).eps)
        entropy = -(mu_c * mu_c.log() + (1 - mu_c) * torch.log1p(-mu_c)).sum(-1)
        return self.energy(v, mu) - entropy

    # ---- training ----------------------------------------------------------------------------

    def fit(self, data: Any, **kwargs: Any) -> History:
        """Train by PCD with :func:`pgm_lab.rbm.pcd.persistent_cd` (keyword arguments go to
        it): exact positive phase while the hidden layer is uncoupled or small, mean field
        otherwise; ``sampler="pt"`` for parallel tempering in the negative phase."""
        return persistent_cd(self, data, **kwargs)

    def extra_repr(self) -> str:
        return (f"n_visible={self.n_visible}, n_hidden={self.n_hidden}, visible_couplings="
                f"{self.visible_couplings}, hidden_couplings={self.hidden_couplings}")


def _scan(x: torch.Tensor, field: torch.Tensor, coupling2: torch.Tensor, beta: float,
          generator: torch.Generator | None) -> torch.Tensor:
    r"""One systematic scan over the units of ``x [..., D]``: unit ``i`` is drawn from
    :math:`\sigma(\beta(\text{field}_i + x^\top C_{:, i}))` with the current ``x`` (``C`` =
    twice the symmetric coupling, zero diagonal); returns a new tensor."""
    x = x.clone()
    for i in range(x.shape[-1]):
        logit = field[..., i] + x @ coupling2[:, i]
        x[..., i] = bernoulli_logits(logit.mul_(beta), generator, inplace=True)
    return x
