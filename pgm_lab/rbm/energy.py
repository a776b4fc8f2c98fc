"""Energy-based models over binary visible and hidden units, and their Pyro observation site.

:class:`EnergyModel` is the small abstract base that :class:`~pgm_lab.rbm.RBM` fills in. A
subclass only has to define :meth:`EnergyModel.energy`; conditionals, free energy, block Gibbs
sampling (:mod:`pgm_lab.rbm.gibbs`), contrastive divergence (:mod:`pgm_lab.rbm.cd`) and exact
log-partition functions then work unchanged. Closed-form overrides (as in the RBM) only make
them faster.

The energy must be affine in each single unit (true of any binary energy that is a
polynomial of degree two, such as the Boltzmann machine's). Units in a layer may interact:
a model with visible-visible terms sets ``visible_factorized = False``, one with hidden-hidden
terms ``hidden_factorized = False``; that layer is then resampled one unit at a time and its
free energy is summed by enumeration.

Generic code asks the model what it can do instead of checking its class:
``visible_factorized`` / ``hidden_factorized`` (units of that layer independent given the
other layer: block sampling, closed-form free energy of the other layer; :mod:`partition
<pgm_lab.rbm.partition>` enumerates the layer whose complement factorizes),
:meth:`EnergyModel.sweep` (one Gibbs sweep at inverse temperature ``beta``, what the samplers
call) and ``has_rbm_energy`` (the energy is exactly the RBM's in parameters ``W, b, c``, which
annealed importance sampling needs).
"""

from __future__ import annotations

import pyro
import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroModule
from torch import nn

from ..errors import ConfigError, DataError
from . import gibbs as _gibbs
from . import partition as _partition
from .bernoulli import bernoulli_logits
from .numerics import softplus
from .states import MAX_EXACT_UNITS, check_enumerable, logsumexp_states

__all__ = ["EnergyModel", "EnergyDistribution", "softplus"]


class EnergyModel(PyroModule):
    r"""Base class of binary energy models :math:`p(v, h) = e^{-E(v, h)} / Z`.

    .. math::

        v \in \{0, 1\}^V, \quad h \in \{0, 1\}^H, \quad
        Z = \sum_{v, h} e^{-E(v, h)}, \quad
        F(v) = -\log \sum_h e^{-E(v, h)}.

    Subclasses implement :meth:`energy` and may override :meth:`hidden_logits`,
    :meth:`visible_logits` and :meth:`free_energy` with closed forms. Calling the module,
    ``model(v)``, runs the Pyro program that observes ``v [N, V]`` at site ``"v"`` in plate
    ``"data"`` with the unnormalized density :math:`e^{-F(v)}` (see :class:`EnergyDistribution`).

    Args:
        n_visible: number of visible units ``V``.
        n_hidden: number of hidden units ``H``.
        name: prefix of the parameter names in Pyro's param store (``"<name>.W"``...).
    """

    #: whether visible units are independent given ``h`` (then :meth:`visible_logits` is
    #: defined and :meth:`hidden_free_energy` has a closed form).
    visible_factorized: bool = False
    #: whether hidden units are independent given ``v`` (then :meth:`hidden_logits` is
    #: defined and :meth:`free_energy` has a closed form).
    hidden_factorized: bool = True
    #: whether visible units are binary, so the visible layer can be enumerated (false for
    #: Gaussian visible units, whose :meth:`hidden_free_energy` integrates them out).
    visible_binary: bool = True
    #: whether :meth:`energy` is exactly :math:`-b^\top v - c^\top h - v^\top W h` in
    #: parameters ``W [V, H]``, ``b [V]``, ``c [H]`` (what annealed importance sampling uses).
    has_rbm_energy: bool = False

    def __init__(self, n_visible: int, n_hidden: int, *, name: str = "rbm") -> None:
        for arg, value in (("n_visible", n_visible), ("n_hidden", n_hidden)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{arg} must be a positive int, got {value!r}")
        # PyroModule's metaclass is not ABCMeta, so abstractness is checked here.
        if type(self).energy is EnergyModel.energy:
            raise TypeError(f"{type(self).__name__} must define energy(v, h); EnergyModel is "
                            "an abstract base, e.g. use pgm_lab.rbm.RBM")
        super().__init__(name=name)
        self.n_visible = n_visible
        self.n_hidden = n_hidden

    def _init_bipartite(self, init_std: float, seed: int | None,
                        dtype: torch.dtype) -> torch.Generator | None:
        """Create ``W [V, H]`` with entries ``init_std * N(0, 1)`` and zero ``b [V]``, ``c [H]``.

        The draws come from a generator seeded with ``seed`` (``None``: torch's global RNG),
        returned so that a model can draw further parameters from the same stream.
        """
        if not init_std >= 0:
            raise ConfigError(f"init_std must be >= 0, got {init_std!r}")
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(init_std * torch.randn(self.n_visible, self.n_hidden,
                                                     generator=gen, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(self.n_visible, dtype=dtype))
        self.c = nn.Parameter(torch.zeros(self.n_hidden, dtype=dtype))
        return gen

    # ---- the energy and what follows from it -------------------------------------------------

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Energy :math:`E(v, h)`: ``v [..., V]``, ``h [..., H]`` (broadcast) -> ``[...]``."""
        raise NotImplementedError

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        r"""Logits of :math:`p(h_j = 1 \mid v)`, ``[..., V] -> [..., H]``.

        Generic form from energy differences, exact because the energy is affine in each
        :math:`h_j`: :math:`\ell_j(v) = E(v, 0) - E(v, e_j)`. Only defined when
        :attr:`hidden_factorized` is true.
        """
        if not self.hidden_factorized:
            raise NotImplementedError(f"{type(self).__name__} has coupled hidden units; use "
                                      "sample_h(v, h=h), which updates one unit at a time")
        eye = torch.eye(self.n_hidden, dtype=v.dtype, device=v.device)
        zero = torch.zeros(self.n_hidden, dtype=v.dtype, device=v.device)
        e0 = self.energy(v, zero)
        ej = self.energy(v.unsqueeze(-2), eye)  # [..., H]
        return e0.unsqueeze(-1) - ej

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        r"""Logits of :math:`p(v_i = 1 \mid h)` when visible units are conditionally independent.

        Only defined when :attr:`visible_factorized` is true; otherwise
        :meth:`sample_v` resamples visible units one at a time. Generic form, ``[..., H] ->
        [..., V]``: :math:`\ell_i(h) = E(0, h) - E(e_i, h)`.
        """
        if not self.visible_factorized:
            raise NotImplementedError(f"{type(self).__name__} has coupled visible units; use "
                                      "sample_v(h, v), which updates one unit at a time")
        eye = torch.eye(self.n_visible, dtype=h.dtype, device=h.device)
        zero = torch.zeros(self.n_visible, dtype=h.dtype, device=h.device)
        e0 = self.energy(zero, h)
        ei = self.energy(eye, h.unsqueeze(-2))  # [..., V]
        return e0.unsqueeze(-1) - ei

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        r"""Free energy :math:`F(v) = -\log \sum_h e^{-E(v, h)}`, ``v [..., V] -> [...]``.

        With :attr:`hidden_factorized`, :math:`F(v) = E(v, 0) - \sum_j
        \operatorname{softplus}(\ell_j(v))`; otherwise the sum runs over all :math:`2^H`
        hidden states (refused above ``2^25``).
        """
        if not self.hidden_factorized:
            return -self._enumerate_layer(v, self.n_hidden, lambda s, x: -self.energy(x, s))
        zero = torch.zeros(self.n_hidden, dtype=v.dtype, device=v.device)
        return self.energy(v, zero) - softplus(self.hidden_logits(v)).sum(-1)

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        r"""Free energy of the hidden layer, :math:`F(h) = -\log \sum_v e^{-E(v, h)}`,
        ``[..., H] -> [...]``.

        With :attr:`visible_factorized`, :math:`F(h) = E(0, h) - \sum_i
        \operatorname{softplus}(\ell_i(h))` (see :meth:`visible_logits`); otherwise the sum
        runs over all :math:`2^V` visible states (refused above ``2^25``).
        """
        if not self.visible_factorized:
            return -self._enumerate_layer(h, self.n_visible, lambda s, x: -self.energy(s, x))
        zero = torch.zeros(self.n_visible, dtype=h.dtype, device=h.device)
        return self.energy(zero, h) - softplus(self.visible_logits(h)).sum(-1)

    def _enumerate_layer(self, x: torch.Tensor, n: int, neg_energy) -> torch.Tensor:  # noqa: ANN001
        r""":math:`\log \sum_s e^{-E}` over the ``2^n`` states ``s`` of the other layer, for
        every row of ``x [..., D]``; ``neg_energy(s [S, 1.., n], x) -> [S, ...]``."""
        check_enumerable(n, MAX_EXACT_UNITS, "a free energy of a coupled layer")
        batch = x.shape[:-1]

        def log_f(s: torch.Tensor) -> torch.Tensor:
            return neg_energy(s.reshape(s.shape[0], *([1] * len(batch)), n), x)

        chunk = max(1, 2**20 // max(1, batch.numel()))
        return logsumexp_states(log_f, n, dtype=x.dtype, device=x.device, chunk_size=chunk)

    def free_energy_difference(self, v_pos: torch.Tensor, v_neg: torch.Tensor, *,
                               grads: bool = True
                               ) -> tuple[torch.Tensor, dict[torch.nn.Parameter, torch.Tensor]]:
        r"""The contrastive-divergence objective and its parameter gradients.

        .. math:: D(\theta) = \frac{1}{|P|} \sum_{v \in P} F_\theta(v)
                  - \frac{1}{|N|} \sum_{v \in N} F_\theta(v)

        for ``v_pos [P, V]`` and ``v_neg [N, V]`` (held fixed). Returns the detached scalar
        :math:`D` and ``{parameter: dD/dparameter}`` (empty if ``grads=False``; parameters
        that do not require gradients are left out). This generic version differentiates
        :meth:`free_energy` by autograd; subclasses may override it with closed forms.
        """
        if not grads:
            with torch.no_grad():
                return self.free_energy(v_pos).mean() - self.free_energy(v_neg).mean(), {}
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            value = self.free_energy(v_pos).mean() - self.free_energy(v_neg).mean()
            if not value.requires_grad:
                return value.detach(), {}
            gs = torch.autograd.grad(value, params, allow_unused=True)
        return value.detach(), {p: g for p, g in zip(params, gs) if g is not None}

    # ---- sampling ----------------------------------------------------------------------------

    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None, *,
                 h: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
        r"""Draw :math:`h \sim p_\beta(h \mid v) \propto e^{-\beta E(v, h)}`, ``[..., V] ->
        [..., H]`` (float 0/1).

        With coupled hidden units (:attr:`hidden_factorized` false) this is one
        systematic-scan sweep of single-unit updates from the current state ``h`` (required
        then), with :math:`p(h_j = 1 \mid h_{-j}, v) = \sigma(\beta (E(v, h^{j \to 0}) -
        E(v, h^{j \to 1})))`.
        """
        if self.hidden_factorized:
            return bernoulli_logits(beta * self.hidden_logits(v), generator, inplace=True)
        if h is None:
            raise ConfigError(f"{type(self).__name__} has coupled hidden units, so sample_h "
                              "needs the current hidden state: sample_h(v, h=h)")
        return _single_site_sweep(h, lambda x: self.energy(v, x), beta, generator)

    def sample_v(self, h: torch.Tensor, v: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, beta: float = 1.0
                 ) -> torch.Tensor:
        r"""Draw :math:`v \sim p_\beta(v \mid h) \propto e^{-\beta E(v, h)}`, ``[..., H] ->
        [..., V]``.

        With coupled visible units this is one systematic-scan sweep of single-unit Gibbs
        updates starting from the current state ``v`` (required then), with
        :math:`p(v_i = 1 \mid v_{-i}, h) = \sigma(\beta (E(v^{i \to 0}, h) -
        E(v^{i \to 1}, h)))`.
        """
        if self.visible_factorized:
            return bernoulli_logits(beta * self.visible_logits(h), generator, inplace=True)
        if v is None:
            raise ConfigError(f"{type(self).__name__} has coupled visible units, so sample_v "
                              "needs the current visible state: sample_v(h, v)")
        return _single_site_sweep(v, lambda x: self.energy(x, h), beta, generator)

    def init_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
        r"""A hidden state to start a chain at ``v [..., V]``: :math:`h \sim p(h \mid v)`,
        or, with coupled hidden units, uniform random bits followed by one :meth:`sample_h`
        sweep."""
        if self.hidden_factorized:
            return self.sample_h(v, generator)
        h0 = torch.rand((*v.shape[:-1], self.n_hidden), dtype=v.dtype, device=v.device,
                        generator=generator).lt_(0.5).to(v.dtype)
        return self.sample_h(v, generator, h=h0)

    def sweep(self, v: torch.Tensor, h: torch.Tensor | None = None,
              generator: torch.Generator | None = None, *, beta: float = 1.0
              ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""One Gibbs sweep of :math:`p_\beta(v, h) \propto e^{-\beta E(v, h)}`: ``(v, h) ->
        (v', h')`` with :math:`h' \sim p_\beta(h \mid v, h)`, then :math:`v' \sim
        p_\beta(v \mid h', v)` (block updates for factorized layers, unit by unit
        otherwise). ``h`` (the current hidden state) is needed only for coupled hidden
        units; ``None`` starts them with :meth:`init_hidden`. What every sampler of this
        package calls."""
        if not self.hidden_factorized and h is None:
            h = self.init_hidden(v, generator)
        h = self.sample_h(v, generator, h=h, beta=beta)
        return self.sample_v(h, v, generator, beta=beta), h

    def gibbs(self, v0: torch.Tensor, num_steps: int, **kwargs):  # noqa: ANN201
        """Block Gibbs chains from ``v0 [C, V]``; see :func:`pgm_lab.rbm.gibbs.gibbs`."""
        return _gibbs.gibbs(self, v0, num_steps, **kwargs)

    # ---- normalizer and likelihood -----------------------------------------------------------

    def log_partition(self, method: str = "exact", **kwargs) -> torch.Tensor:
        """Scalar ``log Z``; see :func:`pgm_lab.rbm.partition.log_partition`."""
        return _partition.log_partition(self, method=method, **kwargs)

    def log_prob(self, v: torch.Tensor, log_z: object = None) -> torch.Tensor:
        r"""Normalized :math:`\log p(v) = -F(v) - \log Z`, ``[N, V] -> [N]``.

        ``log_z`` (a number, scalar tensor or :class:`~pgm_lab.rbm.AISResult`, whose
        ``log_z`` is used) defaults to the exact :meth:`log_partition` (refused for large
        models: pass an AIS estimate then). Computed in the parameters' dtype, without
        gradients (``log Z`` is not differentiated; train with
        :class:`~pgm_lab.rbm.ContrastiveDivergence`).
        """
        v = self.check_visible(v)
        if log_z is None:
            log_z = self.log_partition("exact")
        elif isinstance(log_z, _partition.AISResult):
            log_z = log_z.log_z
        elif not (isinstance(log_z, (int, float)) and not isinstance(log_z, bool)
                  or torch.is_tensor(log_z) and log_z.numel() == 1):
            raise ConfigError(f"log_z must be a number, a scalar tensor or an AISResult, got "
                              f"{type(log_z).__name__}; try model.log_partition('ais')")
        with torch.no_grad():
            return -self.free_energy(v) - torch.as_tensor(log_z, dtype=v.dtype, device=v.device)

    # ---- validation and the Pyro program -----------------------------------------------------

    def check_visible(self, v: object, name: str = "v") -> torch.Tensor:
        """Validate binary visible data ``[N, V]`` (see :func:`pgm_lab.data.check_data`)."""
        from ..data import check_data

        x = check_data(v, name=name, dim=self.n_visible, binary=True)
        p = next(self.parameters(), None)
        return x if p is None else x.to(dtype=p.dtype, device=p.device)

    def declare_params(self) -> None:
        """Register this module's parameters in Pyro's param store under its own names.

        The module is the source of truth: if another model left a different tensor under the
        same name in the store, it is replaced by this module's tensor (otherwise
        ``pyro.param`` would hand back the stale one and the optimizer would update a tensor
        the model does not use). Must run inside ``forward`` so the param sites are traced.
        """
        store = pyro.get_param_store()
        prefix = self._pyro_name
        module_local = pyro.settings.get("module_local_params")
        for name, p in self.named_parameters():
            full = f"{prefix}.{name}" if prefix else name
            if full not in store or store.get_param(full) is not p:
                store[full] = p
            if not module_local:
                # the site PyroModule's attribute hook would emit, without its per-access
                # settings lookups (a sizable share of a small training step)
                pyro.param(full, p)
                continue
            # module-local param mode: let the attribute hook emit its own kind of site
            obj = self
            for part in name.split(".")[:-1]:
                obj = getattr(obj, part)
            getattr(obj, name.rsplit(".", 1)[-1])

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """Pyro program: observe ``v [N, V]`` at site ``"v"`` under :math:`e^{-F(v)}`."""
        self.declare_params()
        with pyro.plate("data", v.shape[0]):
            return pyro.sample("v", EnergyDistribution(self, v.shape[:-1]), obs=v)


def _single_site_sweep(x: torch.Tensor, energy_of, beta: float,  # noqa: ANN001
                       generator: torch.Generator | None) -> torch.Tensor:
    r"""Update the units of ``x [..., D]`` one after another (systematic scan), each from its
    conditional :math:`\sigma(\beta (E(x^{i \to 0}) - E(x^{i \to 1})))`; returns a new
    tensor."""
    x = x.clone()
    for i in range(x.shape[-1]):
        x0, x1 = x.clone(), x.clone()
        x0[..., i] = 0.0
        x1[..., i] = 1.0
        logit = energy_of(x0) - energy_of(x1)
        x[..., i] = bernoulli_logits(beta * logit, generator)
    return x


class EnergyDistribution(TorchDistribution):
    r"""Unnormalized density :math:`e^{-F(v)}` of an :class:`EnergyModel` over ``v [V]``.

    ``log_prob(v) = -F(v)`` **omits** :math:`-\log Z`, so it is only meaningful for losses that
    do not need the normalizer, such as :class:`~pgm_lab.rbm.ContrastiveDivergence`, which
    finds these sites by type in a trace of the model. ``sample`` is not available: use
    :meth:`EnergyModel.gibbs` or :class:`~pgm_lab.rbm.GibbsKernel`.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, model: EnergyModel, batch_shape: tuple[int, ...] = (),
                 validate_args: bool | None = None) -> None:
        self.model = model
        super().__init__(torch.Size(batch_shape), torch.Size([model.n_visible]),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):  # noqa: ANN001 -- torch signature
        return EnergyDistribution(self.model, torch.Size(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if value.shape[-1] != self.model.n_visible:
            raise DataError(f"expected visible vectors of size {self.model.n_visible}, got "
                            f"shape {tuple(value.shape)}")
        return -self.model.free_energy(value)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        raise NotImplementedError("EnergyDistribution cannot be sampled directly; use "
                                  "model.gibbs(v0, num_steps) or pyro.infer.MCMC(GibbsKernel)")
