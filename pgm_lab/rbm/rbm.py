"""The binary restricted Boltzmann machine (Smolensky 1986; Hinton 2002)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..distributed import launched
from ..errors import ConfigError, DataError
from .bernoulli import bernoulli_logits
from .energy import EnergyModel
from .numerics import phase_weights, softplus
from .pcd import persistent_cd

__all__ = ["RBM"]


def _check_dtype(x: torch.Tensor, p: torch.Tensor, name: str) -> None:
    """Refuse a tensor whose dtype differs from the parameters' (torch's own error names
    ``addmm`` / ``addmv``; the closed forms are not validated further, for speed)."""
    if x.dtype != p.dtype:
        raise DataError(f"expected {name} of the parameters' dtype {p.dtype}, got {x.dtype}; "
                        f"try {name}.to({p.dtype}) or model.check_visible(v)")


class RBM(EnergyModel):
    r"""Restricted Boltzmann machine with binary visible and hidden units.

    .. math::

        E(v, h) = -b^\top v - c^\top h - v^\top W h, \qquad
        p(h_j = 1 \mid v) = \sigma(c_j + v^\top W_{:, j}), \qquad
        p(v_i = 1 \mid h) = \sigma(b_i + W_{i, :} h),

    .. math::

        F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:, j}).

    Parameters (``torch.nn.Parameter``, registered in Pyro's param store as ``"<name>.W"``...
    when the module runs as a Pyro program): ``W [V, H]``, ``b [V]`` (visible bias),
    ``c [H]`` (hidden bias). Initialization follows Hinton (2010), "A practical guide to
    training restricted Boltzmann machines": :math:`W_{ij} \sim N(0, 0.01^2)`, ``c = 0`` and
    ``b_i = log(p_i / (1 - p_i))`` from the visible means ``p_i`` of ``data`` (else ``b = 0``).

    Args:
        n_visible, n_hidden: layer sizes ``V`` and ``H``.
        data: optional binary data ``[N, V]`` for the visible-bias initialization.
        init_std: standard deviation of the initial weights.
        seed: seed of the weight initialization (``None``: torch's global RNG).
        dtype: parameter dtype (``torch.float64`` for exact comparisons).
        name: prefix of the parameter names in Pyro's param store.

    Subclasses: the closed forms below (conditionals, free energies, their gradients, AIS)
    hold for this energy only. A subclass that overrides :meth:`energy` gets the generic
    :class:`~pgm_lab.rbm.energy.EnergyModel` forms derived from its own energy instead, with
    ``has_rbm_energy = False`` and ``visible_factorized = False`` (one-unit-at-a-time visible
    updates) unless its class body declares them again, e.g. ``visible_factorized = True``
    for an extra term without visible-visible interactions.

    References:
        Smolensky (1986), "Information processing in dynamical systems: foundations of harmony
        theory"; Hinton (2002), "Training products of experts by minimizing contrastive
        divergence"; Hinton (2010), "A practical guide to training restricted Boltzmann
        machines".
    """

    visible_factorized = True
    has_rbm_energy = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "energy" in cls.__dict__:  # a new energy: the closed forms no longer follow from it
            for capability in ("has_rbm_energy", "visible_factorized"):
                if capability not in cls.__dict__:
                    setattr(cls, capability, False)

    def __init__(self, n_visible: int, n_hidden: int, *, data: Any = None, init_std: float = 0.01,
                 seed: int | None = None, dtype: torch.dtype = torch.float32,
                 name: str = "rbm") -> None:
        super().__init__(n_visible, n_hidden, name=name)
        self._init_bipartite(init_std, seed, dtype)
        if data is not None:
            self.init_visible_bias(data)

    def init_visible_bias(self, data: Any, eps: float = 1e-3) -> None:
        r"""Set ``b_i = log(p_i / (1 - p_i))``, ``p_i`` the mean of unit ``i`` in ``data``.

        ``p_i`` is clipped to ``[eps, 1 - eps]`` so that always-off units stay finite.
        """
        x = self.check_visible(data, name="data")
        p = x.mean(0).clamp(eps, 1 - eps)
        with torch.no_grad():
            self.b.copy_(torch.log(p) - torch.log1p(-p))

    # ---- closed forms ------------------------------------------------------------------------

    def energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        _check_dtype(v, self.W, "v")
        _check_dtype(h, self.W, "h")
        return -(v @ self.b) - (h @ self.c) - ((v @ self.W) * h).sum(-1)

    def _wbc(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(W, b, c)``. Outside a running Pyro program they are read from ``_parameters``:
        PyroModule's attribute hook (which emits the ``pyro.param`` sites inside one) costs
        more than the GEMMs of a small minibatch."""
        if self._pyro_context.active:
            return self.W, self.b, self.c
        params = self._parameters
        return params["W"], params["b"], params["c"]

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        if not self.has_rbm_energy:
            return super().hidden_logits(v)
        W, _, c = self._wbc()
        _check_dtype(v, W, "v")
        if v.dim() == 2:  # one fused kernel (bias add inside the GEMM)
            return torch.addmm(c, v, W)
        return v @ W + c

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        if not self.has_rbm_energy:
            return super().visible_logits(h)
        W, b, _ = self._wbc()
        _check_dtype(h, W, "h")
        if h.dim() == 2:
            return torch.addmm(b, h, W.T)
        return h @ W.T + b

    # hidden_logits / visible_logits return fresh tensors, so sampling may overwrite them
    def sample_h(self, v: torch.Tensor, generator: torch.Generator | None = None, *,
                 h: torch.Tensor | None = None, beta: float = 1.0) -> torch.Tensor:
        if not self.hidden_factorized:
            return super().sample_h(v, generator, h=h, beta=beta)
        logits = self.hidden_logits(v)
        return bernoulli_logits(logits if beta == 1 else logits.mul_(beta), generator,
                                inplace=True)

    def sample_v(self, h: torch.Tensor, v: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, *, beta: float = 1.0
                 ) -> torch.Tensor:
        if not self.has_rbm_energy:
            return super().sample_v(h, v, generator, beta=beta)
        logits = self.visible_logits(h)
        return bernoulli_logits(logits if beta == 1 else logits.mul_(beta), generator,
                                inplace=True)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        if not self.has_rbm_energy:
            return super().free_energy(v)
        x = self.hidden_logits(v)  # checks the dtype first
        return -(v @ self.b) - softplus(x).sum(-1)

    def free_energy_difference(self, v_pos: torch.Tensor, v_neg: torch.Tensor, *,
                               grads: bool = True
                               ) -> tuple[torch.Tensor, dict[torch.nn.Parameter, torch.Tensor]]:
        r"""Closed form of :meth:`EnergyModel.free_energy_difference` (no autograd graph).

        With :math:`\hat h(v) = \sigma(c + W^\top v)`, :math:`\partial F / \partial W =
        -v \hat h^\top`, :math:`\partial F / \partial b = -v` and :math:`\partial F /
        \partial c = -\hat h` (Hinton 2002). Both batches go through one GEMM: with
        :math:`x` the stacked rows and weights :math:`w = (-1/|P|, \dots, 1/|N|, \dots)`,
        :math:`D = w^\top(x b) + w^\top \sum_j \operatorname{softplus}(a_{:, j})` with
        :math:`a = c + x W`, and :math:`\nabla_W D = x^\top (w \odot \hat h)`,
        :math:`\nabla_b D = w^\top x`, :math:`\nabla_c D = w^\top \hat h`.
        """
        if not self.has_rbm_energy:
            return super().free_energy_difference(v_pos, v_neg, grads=grads)
        W, b, c = self._wbc()
        with torch.no_grad():
            x = torch.cat([v_pos, v_neg])
            w = phase_weights(v_pos.shape[0], v_neg.shape[0], x.dtype, x.device)
            a = torch.addmm(c, x, W)
            db = w @ x
            value = db @ b + w @ softplus(a).sum(1)
            if not grads:
                return value, {}
            wh = torch.sigmoid(a).mul_(w.unsqueeze(1))
            return value, {W: x.T @ wh, b: db, c: wh.sum(0)}

    def hidden_free_energy(self, h: torch.Tensor) -> torch.Tensor:
        r""":math:`F(h) = -\log \sum_v e^{-E(v, h)} = -c^\top h - \sum_i
        \operatorname{softplus}(b_i + W_{i,:} h)`, ``[..., H] -> [...]``."""
        if not self.has_rbm_energy:
            return super().hidden_free_energy(h)
        return -(h @ self.c) - softplus(h @ self.W.T + self.b).sum(-1)

    def transform(self, v: Any) -> torch.Tensor:
        r"""Hidden activation probabilities :math:`\sigma(c + v^\top W)`, ``[N, V] -> [N, H]``.

        The same features as scikit-learn's ``BernoulliRBM.transform``.
        """
        with torch.no_grad():
            return torch.sigmoid(self.hidden_logits(self.check_visible(v)))

    # ---- scores ------------------------------------------------------------------------------

    def reconstruction_error(self, v: Any) -> torch.Tensor:
        r"""Mean-field reconstruction error per example, ``[N, V] -> [N]``.

        .. math:: \sum_i (v_i - \sigma(b_i + W_{i,:} \sigma(c + W^\top v)))^2
        """
        with torch.no_grad():
            v = self.check_visible(v)
            recon = torch.sigmoid(self.visible_logits(torch.sigmoid(self.hidden_logits(v))))
            return ((v - recon) ** 2).sum(-1)

    def pseudo_likelihood(self, v: Any, *, exact: bool = False,
                          generator: torch.Generator | None = None,
                          flip: torch.Tensor | None = None) -> torch.Tensor:
        r"""Pseudo-log-likelihood per example, ``[N, V] -> [N]`` (Besag 1975).

        .. math:: \mathrm{PL}(v) = \sum_i \log p(v_i \mid v_{-i})
                  = \sum_i \log \sigma\big(F(\tilde v^{(i)}) - F(v)\big),

        with :math:`\tilde v^{(i)}` equal to ``v`` with bit ``i`` flipped. ``exact=False`` is
        scikit-learn's ``BernoulliRBM.score_samples`` estimator: one random bit ``i`` per
        example (drawn with ``generator``, or given as ``flip [N]``), scaled by ``V`` --
        unbiased for ``PL(v)``.
        """
        with torch.no_grad():
            v = self.check_visible(v)
            fe = self.free_energy(v)
            n, d = v.shape
            if exact:
                idx = torch.arange(d, device=v.device)
                out = []
                # chunks of rows bound the [rows, V, V] tensor of flipped copies to ~2^22 floats
                for rows in torch.split(torch.arange(n, device=v.device), max(1, 2**22 // d**2)):
                    flipped = v[rows].unsqueeze(1).repeat(1, d, 1)  # [rows, V(flip), V]
                    flipped[:, idx, idx] = 1 - flipped[:, idx, idx]
                    out.append(F.logsigmoid(self.free_energy(flipped)
                                            - fe[rows].unsqueeze(1)).sum(1))
                return torch.cat(out)
            if flip is None:
                i = torch.randint(d, (n,), generator=generator).to(v.device)
            else:
                i = torch.as_tensor(flip, device=v.device)
                if i.is_floating_point() or i.is_complex() or i.dtype == torch.bool:
                    raise DataError(f"flip must hold integer unit indices, got dtype {i.dtype}; "
                                    "try flip.long() if the values are whole numbers")
                i = i.long()
                if i.shape != (n,) or (i < 0).any() or (i >= d).any():
                    raise DataError(f"flip must hold {n} unit indices in [0, {d}), got shape "
                                    f"{tuple(i.shape)}")
            flipped = v.clone()
            rows = torch.arange(n, device=v.device)
            flipped[rows, i] = 1 - flipped[rows, i]
            return d * F.logsigmoid(self.free_energy(flipped) - fe)

    # ---- training ----------------------------------------------------------------------------

    def fit(
        self,
        data: Any,
        *,
        method: str = "cd",
        k: int = 1,
        epochs: int = 10,
        batch_size: int = 10,
        lr: float = 0.05,
        momentum: float = 0.5,
        weight_decay: float = 0.0,
        num_chains: int | None = None,
        seed: int | None = 0,
        device: str | torch.device = "auto",
        checkpoint: str | os.PathLike | None = None,
        resume: bool | str = False,
        progress: bool | None = None,
        callbacks: Sequence[Callable] = (),
        num_threads: int | None = None,
        engine: str = "auto",
        lr_final: float | None = 0.0,
        centering: bool = False,
    ):
        r"""Train with CD-k or PCD-k and SGD, in a tight loop or through :func:`pgm_lab.train.fit`.

        The update per minibatch ``B`` is (Hinton 2002; Tieleman 2008)

        .. math:: \theta \leftarrow \theta - \eta\, \nabla_\theta\Big[\tfrac{1}{|B|}
                  \sum_{v \in B} F(v) - \tfrac{1}{C} \sum_{c} F(v^-_c)\Big]

        with SGD momentum and L2 ``weight_decay`` on ``W`` only (biases are not decayed, as
        Hinton 2010 recommends), applied by :class:`pgm_lab.optim.MultiTensorOptim` (a
        ``pyro.optim.PyroOptim`` with one ``torch.optim.SGD`` for all parameters).

        Args:
            data: binary ``[N, V]``.
            method: ``"cd"`` (chains restart at the data) or ``"pcd"`` (persistent chains).
            k: Gibbs steps per update.
            epochs, batch_size, lr, momentum, weight_decay: SGD settings.
            num_chains: persistent chains for PCD (default: ``batch_size``).
            seed, device, checkpoint, resume, progress, callbacks: see
                :func:`pgm_lab.train.fit` (checkpoints include the persistent chains;
                ``resume=True`` refuses a checkpoint written with other settings or data,
                ``resume="force"`` continues it with the new settings).
            num_threads: torch threads during training only (restored afterwards); ``None``
                lets :func:`pgm_lab.train.fit` choose from ``batch_size x parameters``, which
                gives one thread to RBMs of the usual sizes (their GEMMs are too small to
                split: with torch's default of one thread per core a 64x20 RBM trained 3-30x
                slower whenever other processes kept the cores busy).
            engine: ``"fast"``: :func:`pgm_lab.rbm.pcd.persistent_cd`, the closed-form update
                in one loop (no Pyro trace per step, gradients written into preallocated
                ``.grad``; no checkpoints or progress bar); ``"svi"``: :func:`pgm_lab.train.fit`
                with :class:`~pgm_lab.rbm.ContrastiveDivergence` (checkpoints, resume, progress,
                Pyro's param store; data-parallel under ``torchrun``); ``"auto"``: ``"svi"``
                when ``checkpoint``, ``resume`` or ``progress=True`` ask for it or the process
                was started by ``torchrun``, else ``"fast"``. Same algorithm and
                defaults, different random streams.
            lr_final: decay the learning rate linearly from ``lr`` to ``lr_final`` over the
                updates (the fast engine; per epoch on the SVI engine, where resuming a
                decayed run from a checkpoint is not bit-exact: the first resumed epoch runs
                at the previous epoch's rate); ``None``: constant. The defaults (``lr=0.05``
                decaying to 0, ``momentum=0.5``, ``batch_size=10``, ``num_chains =
                batch_size``, no centering) were chosen on the exact test log-likelihood of
                a 64x20 RBM on digits; the grid is in the README (bench section).
            centering: with the fast engine, the centered gradient (Melchior, Fischer &
                Wiskott 2016; see :mod:`pgm_lab.rbm.pcd`).

        Returns:
            :class:`pgm_lab.train.History`; its ``loss`` is the per-example CD objective.
        """
        from ..optim import MultiTensorOptim
        from ..train import fit
        from .cd import ContrastiveDivergence

        if method not in ("cd", "pcd"):
            raise ConfigError(f"method must be 'cd' or 'pcd', got {method!r}")
        if engine not in ("auto", "fast", "svi"):
            raise ConfigError(f"engine must be 'auto', 'fast' or 'svi', got {engine!r}")
        wants_svi = checkpoint is not None or bool(resume) or progress is True
        if engine == "auto":  # under torchrun: fit's data-parallel training
            engine = "svi" if wants_svi or launched() else "fast"
        if engine == "svi" and centering:
            raise ConfigError("centering needs engine='fast' (which has no checkpoints or "
                              "progress bar); drop it or the checkpoint / resume / progress "
                              "arguments")
        if engine == "fast" and wants_svi:
            raise ConfigError("checkpoint, resume and progress need engine='svi'; use "
                              "engine='auto' or 'svi'")
        for arg, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                           ("lr_final", 0.0 if lr_final is None else lr_final)):
            if isinstance(value, bool) or not (isinstance(value, (int, float))
                                               and np.isfinite(value) and value >= 0):
                raise ConfigError(f"{arg} must be a finite number >= 0, got {value!r}")
        if engine == "fast":
            from ..train import resolve_device

            self.to(resolve_device(device))
            return persistent_cd(self, data, epochs=epochs,
                                 batch_size=batch_size, lr=lr, lr_final=lr_final,
                                 momentum=momentum, weight_decay=weight_decay, k=k,
                                 persistent=method == "pcd", num_chains=num_chains,
                                 centering=centering, seed=seed, num_threads=num_threads,
                                 callbacks=callbacks)
        x = self.check_visible(data, name="data")
        loss = ContrastiveDivergence(k=k, persistent=method == "pcd", num_chains=num_chains,
                                     seed=seed)

        def optim_args(param_name: str) -> dict[str, float]:
            decay = weight_decay if param_name.rsplit(".", 1)[-1] == "W" else 0.0
            return {"lr": lr, "momentum": momentum, "weight_decay": decay}

        # One torch SGD for W, b and c (W in its own group if decayed), not pyro.optim.SGD's
        # three: each Optimizer.step has a fixed Python cost comparable to a small CD step.
        optim = MultiTensorOptim(torch.optim.SGD, optim_args)
        if lr_final is not None:
            callbacks = [_EpochLinearDecay(optim, lr, lr_final, epochs), *callbacks]
        return fit(self, None, x, loss=loss, optim=optim, epochs=epochs, batch_size=batch_size,
                   seed=seed, device=device, checkpoint=checkpoint, resume=resume,
                   progress=progress, callbacks=callbacks, desc=f"rbm {method}-{k}",
                   num_threads=num_threads)

    # ---- interop -----------------------------------------------------------------------------

    @classmethod
    def from_sklearn(cls, estimator: Any, *, dtype: torch.dtype = torch.float64,
                     name: str = "rbm") -> RBM:
        """An RBM with the parameters of a fitted ``sklearn.neural_network.BernoulliRBM``.

        ``W = components_.T``, ``b = intercept_visible_``, ``c = intercept_hidden_``.
        """
        missing = [a for a in ("components_", "intercept_visible_", "intercept_hidden_")
                   if not hasattr(estimator, a)]
        if missing:
            from ..errors import NotFittedError

            raise NotFittedError(f"expected a fitted sklearn BernoulliRBM, got "
                                 f"{type(estimator).__name__} without {missing}; call "
                                 "estimator.fit(X) first")
        comp = np.asarray(estimator.components_)
        if comp.ndim != 2:
            raise DataError(f"components_ must be 2-D [H, V], got shape {comp.shape}")
        n_hidden, n_visible = comp.shape
        b = np.asarray(estimator.intercept_visible_)
        c = np.asarray(estimator.intercept_hidden_)
        for attr, arr, size in (("intercept_visible_", b, n_visible),
                                ("intercept_hidden_", c, n_hidden)):
            if arr.shape != (size,):  # copy_ would broadcast e.g. a length-1 array silently
                raise DataError(f"{attr} must have shape ({size},) to match components_ "
                                f"{comp.shape}, got {arr.shape}")
        rbm = cls(n_visible, n_hidden, init_std=0.0, dtype=dtype, name=name)
        with torch.no_grad():
            rbm.W.copy_(torch.as_tensor(comp.T, dtype=dtype))
            rbm.b.copy_(torch.as_tensor(b, dtype=dtype))
            rbm.c.copy_(torch.as_tensor(c, dtype=dtype))
        return rbm

    def save(self, path: str | os.PathLike) -> None:
        """Write the parameters to a torch state file, atomically
        (:func:`pgm_lab.checkpoint.save_atomic`; a crash never leaves a half-written file).

        The file holds ``{"n_visible", "n_hidden", "name", "W" [V, H], "b" [V], "c" [H]}``
        (detached CPU tensors), so it loads with ``torch.load(path, weights_only=True)`` and
        any tool can recompute the energy from it. Read back with :meth:`load`.
        """
        from ..checkpoint import save_atomic

        save_atomic({"n_visible": self.n_visible, "n_hidden": self.n_hidden,
                     "name": self._pyro_name,
                     **{k: getattr(self, k).detach().cpu() for k in ("W", "b", "c")}}, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RBM:
        """The RBM saved by :meth:`save` at ``path``, in the saved dtype.

        Raises:
            CheckpointError: the file cannot be read, holds more than tensors and plain values,
                or is not an RBM state (missing keys, sizes that are not positive ints, or
                parameters of the wrong shape or dtype).
        """
        from ..checkpoint import load
        from ..errors import CheckpointError

        state = load(path)
        keys = ("n_visible", "n_hidden", "name", "W", "b", "c")
        if not isinstance(state, dict) or any(k not in state for k in keys):
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"expected an RBM state file with keys {list(keys)} in "
                                  f"{path}, got {got}; write one with RBM.save(path)")
        v, h = state["n_visible"], state["n_hidden"]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (v, h)):
            raise CheckpointError(f"expected positive int n_visible and n_hidden in {path}, "
                                  f"got {v!r} and {h!r}; write the file with RBM.save(path)")
        shapes = {"W": (v, h), "b": (v,), "c": (h,)}
        for k, shape in shapes.items():
            t = state[k]
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape \
                    or not t.is_floating_point() or t.dtype != state["W"].dtype:
                got = (f"shape {tuple(t.shape)}, dtype {t.dtype}" if isinstance(t, torch.Tensor)
                       else type(t).__name__)
                raise CheckpointError(f"expected {k} of shape {shape} (n_visible={v}, "
                                      f"n_hidden={h}) and W's floating dtype in {path}, got "
                                      f"{got}; write the file with RBM.save(path)")
        rbm = cls(v, h, init_std=0.0, dtype=state["W"].dtype, name=str(state["name"]))
        with torch.no_grad():
            for k in shapes:
                getattr(rbm, k).copy_(state[k])
        return rbm

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}"


class _EpochLinearDecay:
    """``fit`` callback of the SVI engine: after epoch ``e`` the learning rate becomes
    ``lr + (lr_final - lr) (e + 1) / (epochs - 1)``, so the last epoch runs at ``lr_final``
    (the fast engine decays per update)."""

    def __init__(self, optim: Any, lr: float, lr_final: float, epochs: int) -> None:
        self.optim, self.lr, self.lr_final, self.epochs = optim, lr, lr_final, epochs

    def __call__(self, epoch: int, record: Any) -> None:
        if self.optim.optimizer is None:
            return
        rate = self.lr + (self.lr_final - self.lr) * (epoch + 1) / max(1, self.epochs - 1)
        for group in self.optim.optimizer.param_groups:
            group["lr"] = max(min(rate, max(self.lr, self.lr_final)),
                              min(self.lr, self.lr_final))
