r"""The Gaussian-Bernoulli RBM for real-valued data (Hinton 2010; Cho, Ilin & Raiko 2011).

.. math::

    E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2 \sigma_i^2} - c^\top h
              - \sum_{ij} \frac{v_i}{\sigma_i^2} W_{ij} h_j,

    p(v_i \mid h) = \mathcal{N}(b_i + W_{i,:} h,\ \sigma_i^2), \qquad
    p(h_j = 1 \mid v) = \sigma\Big(c_j + \sum_i \frac{v_i}{\sigma_i^2} W_{ij}\Big),

    F(v) = \sum_i \frac{(v_i - b_i)^2}{2 \sigma_i^2}
           - \sum_j \operatorname{softplus}\Big(c_j + \sum_i \frac{v_i}{\sigma_i^2} W_{ij}\Big),

    F(h) = -c^\top h - \sum_i \frac{(W_{i,:} h)^2 + 2 b_i W_{i,:} h}{2 \sigma_i^2}
           - \sum_i \log(\sqrt{2 \pi} \sigma_i),

the last one (the visible layer integrated out) giving the exact :math:`\log Z =
\operatorname{logsumexp}_h -F(h)` by enumeration of the hidden layer
(:func:`~pgm_lab.rbm.partition.exact_log_partition` asks the model, nothing else needed).
The variances are learned (parametrized by :math:`z_i = \log \sigma_i^2`, Cho et al. 2011) or
fixed. AIS anneals the interaction, :math:`E_\beta = E` with :math:`W \to \beta W`, from the
independent model at :math:`\beta = 0` (see :meth:`GaussianBernoulliRBM.annealing_path`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..data import check_data
from ..errors import ConfigError
from ..train import History
from .bernoulli import bernoulli_logits
from .energy import EnergyModel
from .numerics import softplus
from .pcd import persistent_cd

__all__ = ["GaussianBernoulliRBM"]


class GaussianBernoulliRBM(EnergyModel):
    r"""RBM with Gaussian visible units (real-valued data) and binary hidden units.

    Args:
        n_visible, n_hidden: layer sizes ``V`` and ``H``.
        learn_std: learn the visible standard deviations :math:`\sigma_i` (through
            ``log_var`` :math:`= \log \sigma_i^2`); otherwise they stay at their initial value.
        data: optional real data ``[N, V]``: ``b`` is set to its mean and :math:`\sigma` to its
            standard deviation (else ``b = 0``, :math:`\sigma = 1`; standardize data first).
        init_std: standard deviation of the initial weights.
        seed: seed of the weight initialization; dtype, name: as for the RBM.

    Parameters: ``W [V, H]``, ``b [V]``, ``c [H]``, ``log_var [V]``; ``std`` is
    :math:`e^{\text{log\_var} / 2}`. Training: :meth:`fit`, i.e.
    :func:`pgm_lab.rbm.pcd.persistent_cd` (gradients by autograd of the free energy). As
    Hinton (2010) advises, standardize the data; with learned variances use enough persistent
    chains (e.g. 100): with as many chains as a minibatch of 20 the variances collapsed in
    our runs (lr 0.02, 10 epochs, unstandardized bimodal data: mean log-likelihood -4.5 to -11).

    References:
        Hinton (2010), "A practical guide to training restricted Boltzmann machines"; Cho,
        Ilin & Raiko (2011), "Improved learning of Gaussian-Bernoulli restricted Boltzmann
        machines".
    """

    visible_factorized = True
    hidden_factorized = True
    visible_binary = False
    has_rbm_energy = False

    def __init__(self, n_visible: int, n_hidden: int, *, learn_std: bool = True,
                 data: Any = None, init_std: float = 0.01, seed: int | None = None,
                 dtype: torch.dtype = torch.float32, name: str = "gbrbm") -> None:
        super().__init__(n_visible, n_hidden, name=name)
        if not isinstance(learn_std, bool):
            raise ConfigError(f"learn_std must be True or False, got {learn_std!r}")
        self._init_bipartite(init_std, seed, dtype)
        self.log_var = nn.Parameter(torch.zeros(n_visible, dtype=dtype), requires_grad=learn_std)
        if data is not None:
            x = self.check_visible(data, name="data")
            with torch.no_grad():
                self.b.copy_(x.mean(0))
                self.log_var.copy_(x.var(0).clamp_min(1e-6).log())

    @property
    def std(self) -> torch.Tensor:
        """Visible standard deviations :math:`\\sigma` ``[V]``."""
        return torch.exp(0.5 * self.log_var)

    def check_visible(self, v: object, name: str = "v") -> torch.Tensor:
        """Validate real-valued visible data ``[N, V]`` (finite; any range)."""
        x = check_data(v, name=name, dim=self.n_visible, unit_interval=False)
        return x.to(dtype=self.W.dtype, device=self.W.device)

    # ---- energy, conditionals, free energies -------------------------------------------------

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        var = torch.exp(self.log_var)
        return (((v - self.b) ** 2 / (2 * var)).sum(-1) - h @ self.c
                - (((v / var) @ self.W) * h).sum(-1))

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return (v * torch.exp(-self.log_var)) @ self.W + self.c

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """Mean of :math:`p(v \\mid h)`: :math:`b + W h`, ``[..., H] -> [..., V]``."""
        return h @ self.W.T + self.b

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("Gaussian visible units have no logits; use visible_mean(h) "
                                  "and std")

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        var = torch.exp(self.log_var)
        return ((v - self.b) ** 2 / (2 * var)).sum(-1) - softplus(self.hidden_logits(v)).sum(-1)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        var = torch.exp(self.log_var)
        wh = h @ self.W.T
        return (-(h @ self.c) - ((wh**2 + 2 * self.b * wh) / (2 * var)).sum(-1)
                - (0.5 * math.log(2 * math.pi) + 0.5 * self.log_var).sum())

    # ---- sampling ----------------------------------------------------------------------------

    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None, *,
                 h: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
        with torch.no_grad():
            return bernoulli_logits(self.hidden_logits(v).mul_(beta), generator, inplace=True)

    def sample_v(self, h: torch.Tensor, v: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, beta: float = 1.0
                 ) -> torch.Tensor:
        r""":math:`v \sim p_\beta(v \mid h) = \mathcal{N}(b + W h, \sigma^2 / \beta)` (the
        tempered density is proper only for :math:`\beta > 0`)."""
        if not beta > 0:
            raise ConfigError(f"Gaussian visible units need beta > 0, got {beta!r}; use "
                              "inverse temperatures in (0, 1]")
        with torch.no_grad():
            mean = self.visible_mean(h)
            noise = torch.randn(mean.shape, dtype=mean.dtype, device=mean.device,
                                generator=generator)
            return mean + noise * (self.std / math.sqrt(beta))

    def fit(self, data: Any, **kwargs: Any) -> History:
        """Train by PCD, :func:`pgm_lab.rbm.pcd.persistent_cd` (keyword arguments go to it)."""
        return persistent_cd(self, data, **kwargs)

    # ---- annealed importance sampling --------------------------------------------------------

    def annealing_path(self, num_runs: int, generator: torch.Generator | None = None,
                       base_data: Any = None) -> tuple[_InteractionAnnealer, torch.Tensor]:
        r"""The AIS path :math:`W \to \beta W` and the exact :math:`\log Z_0` of its start.

        At :math:`\beta = 0` visible and hidden units are independent:
        :math:`Z_0 = \prod_i \sqrt{2\pi}\sigma_i \prod_j (1 + e^{c_j})`, sampled exactly.
        ``base_data`` is not used (the start is the model without interactions).
        Returns ``(annealer, log_z_0)``, float64.
        """
        w, b, c, log_var = (t.detach().to(torch.float64)
                            for t in (self.W, self.b, self.c, self.log_var))
        std = torch.exp(0.5 * log_var)
        log_z0 = (0.5 * math.log(2 * math.pi) + 0.5 * log_var).sum() + softplus(c).sum()
        v = b + std * torch.randn(num_runs, self.n_visible, dtype=torch.float64,
                                  device=w.device, generator=generator)
        return _InteractionAnnealer(w, b, c, std, v, generator), log_z0


class _InteractionAnnealer:
    r"""States ``v [M, V]`` of :math:`p^*_\beta(v) = e^{-\sum (v - b)^2 / 2\sigma^2} \prod_j
    (1 + e^{c_j + \beta (v / \sigma^2)^\top W_{:, j}})`; the interface of the AIS loop."""

    def __init__(self, w, b, c, std, v, gen) -> None:  # noqa: ANN001
        self.w, self.b, self.c, self.std, self.gen = w, b, c, std, gen
        self.set(v)

    def set(self, v: torch.Tensor) -> None:
        self.v = v.to(torch.float64)
        self.x = (self.v / self.std**2) @ self.w

    def log_ratio(self, beta_to: float, beta_from: float) -> torch.Tensor:
        return (softplus(self.c + beta_to * self.x) - softplus(self.c + beta_from * self.x)).sum(-1)

    def step(self, beta: float) -> None:
        h = torch.bernoulli(torch.sigmoid(self.c + beta * self.x), generator=self.gen)
        mean = self.b + beta * h @ self.w.T
        self.set(mean + self.std * torch.randn(mean.shape, dtype=mean.dtype,
                                               device=mean.device, generator=self.gen))
