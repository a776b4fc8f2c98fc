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
from .numerics import softplus
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
    zero and not parameters; with neither the model is an RBM (``has_rbm_energy``: AIS anneals
    the RBM's free energy). With couplings AIS anneals joint states (:meth:`annealing_path`).

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
        self.visible_couplings = visible_couplings
        self.hidden_couplings = hidden_couplings
        self.visible_factorized = not visible_couplings
        self.hidden_factorized = not hidden_couplings
        self.has_rbm_energy = not (visible_couplings or hidden_couplings)
        gen = self._init_bipartite(init_std, seed, dtype)

        def randn(*shape: int) -> torch.Tensor:
            return init_std * torch.randn(*shape, generator=gen, dtype=dtype)

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

    # ---- annealed importance sampling --------------------------------------------------------

    def annealing_path(self, num_runs: int, generator: torch.Generator | None = None,
                       base_data: Any = None) -> tuple[_JointAnnealer, torch.Tensor]:
        r"""The AIS path over joint states and the exact :math:`\log Z_A` of its start.

        The base model keeps only biases, :math:`E_A(v, h) = -b_A^\top v - c^\top h`
        (independent units, :math:`Z_A = \prod_i (1 + e^{b_{A,i}}) \prod_j (1 + e^{c_j})`,
        sampled exactly), with :math:`b_A` the log-odds of ``base_data``'s visible means
        (clamped to ``[1e-3, 1 - 1e-3]``) or else the model's own ``b``. The intermediate
        distributions are :math:`p^*_\beta(v, h) = e^{-(1 - \beta) E_A - \beta E}`, so one
        AIS term is :math:`(\beta_k - \beta_{k-1})(E_A - E)(v, h)` and a transition is the
        machine's unit-by-unit Gibbs sweep at :math:`\beta` (no free energy of a coupled layer
        is needed). Returns ``(annealer, log_z_a)``, float64. Used by
        :func:`pgm_lab.rbm.partition.ais` when the machine has couplings (without, it is an
        RBM and AIS anneals the RBM's free energy instead).
        """
        w, b, c = (t.detach().to(torch.float64) for t in (self.W, self.b, self.c))
        u2 = 2 * self.U.detach().to(torch.float64) if self.visible_couplings else None
        p2 = 2 * self.P.detach().to(torch.float64) if self.hidden_couplings else None
        if base_data is not None:
            p = self.check_visible(base_data, name="base_data").to(torch.float64).mean(0)
            p = p.clamp(1e-3, 1 - 1e-3)
            b_base = torch.log(p) - torch.log1p(-p)
        else:
            b_base = b.clone()
        log_z_base = softplus(b_base).sum() + softplus(c).sum()
        v = torch.bernoulli(torch.sigmoid(b_base).expand(num_runs, -1), generator=generator)
        h = torch.bernoulli(torch.sigmoid(c).expand(num_runs, -1), generator=generator)
        return _JointAnnealer(w, b, c, u2, p2, b_base, v, h, generator), log_z_base

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
          generator: torch.Generator | None, offset: torch.Tensor | None = None
          ) -> torch.Tensor:
    r"""One systematic scan over the units of ``x [..., D]``: unit ``i`` is drawn from
    :math:`\sigma(a_i + \beta(\text{field}_i + x^\top C_{:, i}))` with the current ``x``
    (``C`` = twice the symmetric coupling, zero diagonal; ``a`` = ``offset [D]``, default 0);
    returns a new tensor."""
    x = x.clone()
    for i in range(x.shape[-1]):
        logit = (field[..., i] + x @ coupling2[:, i]).mul_(beta)
        if offset is not None:
            logit.add_(offset[i])
        x[..., i] = bernoulli_logits(logit, generator, inplace=True)
    return x


class _JointAnnealer:
    r"""Joint states ``(v [M, V], h [M, H])`` of the tempered machine

    .. math:: \log p^*_\beta(v, h) = -(1 - \beta) E_A(v, h) - \beta E(v, h), \qquad
              E_A = -b_A^\top v - c^\top h,

    the interface of the AIS loop (``v``, ``set``, ``log_ratio``, ``step``). A step is the
    machine's Gibbs sweep at :math:`\beta` (hidden layer, then visible layer; coupled layers
    unit by unit) with every logit :math:`(1 - \beta)\,\text{base logit} + \beta\,
    \text{model logit}`, which leaves :math:`p_\beta` invariant.
    """

    def __init__(self, w, b, c, u2, p2, b_base, v, h, gen) -> None:  # noqa: ANN001
        self.w, self.b, self.c, self.u2, self.p2 = w, b, c, u2, p2
        self.b_base, self.gen = b_base, gen
        self.set(v, h)

    def _interaction(self) -> torch.Tensor:
        # E_A - E = (b - b_A).v + v.W.h + v.U.v + h.P.h   ([M])
        v, h = self.v, self.h
        out = v @ (self.b - self.b_base) + ((v @ self.w) * h).sum(-1)
        if self.u2 is not None:
            out = out + 0.5 * ((v @ self.u2) * v).sum(-1)
        if self.p2 is not None:
            out = out + 0.5 * ((h @ self.p2) * h).sum(-1)
        return out

    def _sample_h(self, beta: float) -> torch.Tensor:
        # logits c + beta (v W + 2 P h): the base's c and the model's c agree
        x = self.v @ self.w
        if self.p2 is None:
            return torch.bernoulli(torch.sigmoid(self.c + beta * x), generator=self.gen)
        return _scan(self.h, x, self.p2, beta, self.gen, offset=self.c)

    def _sample_v(self, beta: float) -> torch.Tensor:
        # logits (1 - beta) b_A + beta (b + W h + 2 U v)
        x, a = self.h @ self.w.T + self.b, (1 - beta) * self.b_base
        if self.u2 is None:
            return torch.bernoulli(torch.sigmoid(a + beta * x), generator=self.gen)
        return _scan(self.v, x, self.u2, beta, self.gen, offset=a)

    def set(self, v: torch.Tensor, h: torch.Tensor | None = None) -> None:
        r"""Set the visible states; hidden states ``h``, or else uncoupled hidden units
        drawn from :math:`p(h \mid v)` (coupled ones: uniform bits, then one scan at
        :math:`\beta = 1`)."""
        self.v = v.to(torch.float64)
        if h is None:
            self.h = torch.bernoulli(torch.full((v.shape[0], self.c.numel()), 0.5,
                                                dtype=torch.float64, device=v.device),
                                     generator=self.gen)
            h = self._sample_h(1.0)
        self.h = h
        self.delta = self._interaction()

    def log_ratio(self, beta_to: float, beta_from: float) -> torch.Tensor:
        return (beta_to - beta_from) * self.delta

    def step(self, beta: float) -> None:
        self.h = self._sample_h(beta)
        self.v = self._sample_v(beta)
        self.delta = self._interaction()
