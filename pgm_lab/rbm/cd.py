"""Contrastive divergence (CD-k) and persistent CD (PCD-k) as a Pyro loss.

:class:`ContrastiveDivergence` plugs into :class:`pyro.infer.SVI` and
:func:`pgm_lab.train.fit` like an ELBO: ``loss_and_grads(model, guide, v)`` runs the model,
finds its observed :class:`~pgm_lab.rbm.energy.EnergyDistribution` sites (the module's
parameters are emitted as ``param`` sites, which is how SVI finds what to update), and
accumulates the CD gradient into ``.grad`` -- in closed form for the RBM
(:meth:`EnergyModel.free_energy_difference`), by autograd for other energies. It subclasses
:class:`pyro.infer.ELBO` because that is what SVI dispatches on to call ``loss_and_grads``,
but no ELBO is computed (no guide, no normalizer).
"""

from __future__ import annotations

from typing import Any

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..checkpoint import require
from ..distributed import current
from ..errors import CheckpointError, ConfigError
from .energy import EnergyDistribution, EnergyModel
from .gibbs import gibbs_step

__all__ = ["ContrastiveDivergence"]


class ContrastiveDivergence(ELBO):
    r"""CD-k (Hinton 2002) or persistent CD-k (Tieleman 2008) for energy models.

    For a minibatch :math:`B` of data and negative samples :math:`v^-_1..v^-_C`, the gradient
    written into ``.grad`` of the parameters is that of

    .. math:: L(\theta) = \frac{1}{|B|} \sum_{v \in B} F_\theta(v)
              - \frac{1}{C} \sum_{c=1}^{C} F_\theta(v^-_c),

    with :math:`v^-` held fixed: an estimate of :math:`-\nabla_\theta \frac{1}{N} \sum_n \log
    p(v_n)` (up to the CD bias). **Convention**: the gradient is the *minibatch mean*, as in
    Hinton (2010) and scikit-learn's ``BernoulliRBM``, whatever the data-plate scale
    (:func:`pgm_lab.train.fit` scales plate ``"data"`` by ``N / B``), so learning rates do not
    depend on ``N``. The returned loss *value* follows Pyro's convention instead -- ``L``
    times the scaled plate size (``N`` under ``fit``) -- so ``fit``'s history reports ``L``
    per example.

    Negative samples: CD-k starts ``C = |B|`` chains at the data and takes ``k`` block Gibbs
    steps; PCD-k keeps ``num_chains`` persistent chains (default: the first minibatch size,
    initialized at that minibatch) and advances them ``k`` steps per update.

    The loss holds state (persistent chains and its generator): :meth:`state_dict` /
    :meth:`load_state_dict` let :func:`pgm_lab.train.fit` checkpoint and resume exactly.

    Data-parallel (:func:`pgm_lab.train.fit` under ``torchrun``): each rank computes the
    statistics of its share of the minibatch with its own Gibbs noise (``seed + rank``) and,
    for PCD, its own ``num_chains`` persistent chains; ``fit`` averages the gradients over
    ranks (the minibatch mean when the shares are equal) and checkpoints every rank's chains.

    Args:
        k: Gibbs steps per update (``>= 1``).
        persistent: PCD instead of CD.
        num_chains: number of persistent chains (PCD only).
        seed: seed of the sampler's generator; ``None`` draws one seed from torch's global RNG
            at the first call.

    References:
        Hinton (2002), "Training products of experts by minimizing contrastive divergence";
        Tieleman (2008), "Training restricted Boltzmann machines using approximations to the
        likelihood gradient".
    """

    def __init__(self, k: int = 1, persistent: bool = False, num_chains: int | None = None,
                 seed: int | None = None) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k must be an int >= 1, got {k!r}")
        if num_chains is not None:
            if not persistent:
                raise ConfigError("num_chains only applies to persistent=True (PCD); CD "
                                  "starts one chain per data point")
            if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
                raise ConfigError(f"num_chains must be a positive int, got {num_chains!r}")
        super().__init__(num_particles=1, max_plate_nesting=1)
        self.k = k
        self.persistent = persistent
        self.num_chains = num_chains
        self.seed = seed
        self.chains: torch.Tensor | None = None
        self._generator: torch.Generator | None = None

    # ---- state -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Persistent chains and generator state (for checkpoints): tensors, a device name."""
        return {"chains": None if self.chains is None else self.chains.clone(),
                "generator": None if self._generator is None else self._generator.get_state(),
                "device": None if self._generator is None else str(self._generator.device)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`.

        Raises:
            CheckpointError: a missing or malformed entry (named as ``loss.<key>``, its place in
                a :func:`pgm_lab.train.fit` checkpoint), or persistent chains of another count
                than ``num_chains``.
        """
        chains = require(state, "chains", (torch.Tensor, type(None)),
                         "None or a float tensor [C, V] of persistent chains", "loss")
        gen_state = require(state, "generator", (torch.Tensor, type(None)),
                            "None or a uint8 tensor (generator state)", "loss")
        device = require(state, "device", (str, type(None)), "None or a device name", "loss")
        if chains is not None and (chains.dim() != 2 or not chains.is_floating_point()):
            raise CheckpointError(f"checkpoint key 'loss.chains': expected a float tensor "
                                  f"[C, V] of persistent chains, got {chains.dtype} of shape "
                                  f"{tuple(chains.shape)}; the file is damaged, start afresh")
        if chains is not None and self.num_chains is not None and \
                chains.shape[0] != self.num_chains:
            raise CheckpointError(f"expected {self.num_chains} persistent chains "
                                  f"(num_chains), got {chains.shape[0]} in the checkpoint; "
                                  f"resume with num_chains={chains.shape[0]} or start afresh")
        generator = None
        if gen_state is not None:
            try:
                generator = torch.Generator(device=device or "cpu")
                generator.set_state(gen_state)
            except (RuntimeError, TypeError) as exc:
                raise CheckpointError(f"checkpoint key 'loss.generator': expected the state of "
                                      f"a torch.Generator on {device!r}, got one that is "
                                      f"refused ({exc}); start afresh") from exc
        self.chains = chains
        self._generator = generator

    def _gen(self, device: torch.device) -> torch.Generator:
        if self._generator is None:
            seed = self.seed if self.seed is not None else int(torch.randint(2**62, ()).item())
            ctx = current()
            if ctx is not None and self.seed is not None:  # each rank its own Gibbs noise
                seed += ctx.rank
            self._generator = torch.Generator(device=device).manual_seed(seed)
        return self._generator

    # ---- the loss ----------------------------------------------------------------------------

    def _get_trace(self, model, guide, args, kwargs):  # noqa: ANN001, ANN202
        """Guide trace, then the model's trace replayed against it (as in Trace_ELBO).

        Not used by the loss itself (see :meth:`_sites`); kept for ELBO's interface.
        """
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs)
        return model_trace, guide_trace

    def _sites(self, model, guide, *args, **kwargs) -> list[dict]:  # noqa: ANN001
        """The model's observed EnergyDistribution sites (messages, with their final scale).

        The guide must have no latent sites, so replaying the model against it would change
        nothing: the model runs once, under :class:`_SampleSites` instead of a full trace.
        """
        guide_sites = _SampleSites()
        guide_sites(guide)(*args, **kwargs)
        latent = [m["name"] for m in guide_sites.sites if not m["is_observed"]]
        if latent:
            raise ConfigError(f"ContrastiveDivergence needs no guide, but the guide samples "
                              f"{latent}; pass guide=None")
        model_sites = _SampleSites()
        model_sites(model)(*args, **kwargs)
        for site in model_sites.sites:
            fn = site["fn"]
            if not (site["is_observed"] and isinstance(fn, EnergyDistribution)):
                raise ConfigError(f"ContrastiveDivergence expected only observed "
                                  f"EnergyDistribution sites, got site {site['name']!r} with "
                                  f"{type(fn).__name__}; use an EnergyModel's forward, e.g. "
                                  "RBM(...)(v)")
        if not model_sites.sites:
            raise ConfigError("the model has no observed EnergyDistribution site; pass an "
                              "EnergyModel such as pgm_lab.rbm.RBM as the model")
        return model_sites.sites

    def negative_samples(self, model: EnergyModel, v_data: torch.Tensor) -> torch.Tensor:
        """Negative-phase visible states ``[C, V]`` (advances PCD chains in place)."""
        gen = self._gen(v_data.device)
        with torch.no_grad():
            if not self.persistent:
                v = v_data.detach()
            else:
                if self.chains is None:
                    c = self.num_chains or v_data.shape[0]
                    init = v_data.detach()
                    if c != v_data.shape[0]:  # resample the minibatch to c chains
                        idx = torch.randint(v_data.shape[0], (c,), generator=gen,
                                            device=gen.device)
                        init = init[idx.to(v_data.device)]
                    self.chains = init.clone()
                if self.chains.shape[-1] != v_data.shape[-1]:
                    raise ConfigError(f"persistent chains have {self.chains.shape[-1]} units, "
                                      f"data has {v_data.shape[-1]}; use a new loss object")
                v = self.chains.to(v_data)
            for _ in range(self.k):
                v, _h = gibbs_step(model, v, gen)
            if self.persistent:
                self.chains = v
        return v

    def _run(self, model, guide, args, kwargs, grads: bool) -> torch.Tensor:  # noqa: ANN001
        """The loss value (a detached 0-d float64 tensor on the data's device); with
        ``grads``, accumulate the CD gradient into ``.grad``."""
        value = torch.zeros((), dtype=torch.float64)
        for site in self._sites(model, guide, *args, **kwargs):
            energy_model = site["fn"].model
            v = site["value"].reshape(-1, energy_model.n_visible)
            v_neg = self.negative_samples(energy_model, v)
            diff, param_grads = energy_model.free_energy_difference(v, v_neg, grads=grads)
            for p, g in param_grads.items():  # accumulate, as backward() would
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
            scale = site["scale"]
            scale = scale.mean().double() if torch.is_tensor(scale) else float(scale)
            value = value + scale * v.shape[0] * diff.detach().double()
        return value

    def loss(self, model, guide, *args, **kwargs) -> float:  # noqa: ANN001
        """The loss value only (advances persistent chains like a step would)."""
        with torch.no_grad():
            return float(self._run(model, guide, args, kwargs, grads=False))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:  # noqa: ANN001
        """Accumulate the CD gradient into the parameters' ``.grad``; return the value.

        The gradient comes from :meth:`EnergyModel.free_energy_difference` (closed form for
        the RBM, autograd otherwise), the same as back-propagating the surrogate ``L``.
        """
        return float(self.loss_and_grads_on_device(model, guide, *args, **kwargs))

    def loss_and_grads_on_device(self, model, guide, *args, **kwargs) -> torch.Tensor:  # noqa: ANN001
        """:meth:`loss_and_grads` with the value as a detached 0-d tensor on the data's
        device: no host read (:func:`pgm_lab.train.fit` sums it there)."""
        return self._run(model, guide, args, kwargs, grads=True)


class _SampleSites(Messenger):
    """Collects the sample sites of one run (subsample sites excluded).

    Written here instead of using :func:`pyro.poutine.trace` because the loss needs only these
    messages: trace's per-site copies, input/return nodes and graph bookkeeping cost as much as
    the model itself at small batch sizes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[dict] = []

    def _pyro_post_sample(self, msg: dict) -> None:
        if not site_is_subsample(msg):
            self.sites.append(msg)
