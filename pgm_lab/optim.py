"""A :class:`pyro.optim.PyroOptim` that steps every parameter with ONE torch optimizer.

Pyro's ``PyroOptim`` creates one ``torch.optim.Optimizer`` per parameter and calls their
``step()`` one after the other. Each ``Optimizer.step`` carries a fixed Python cost (profiler
hooks, grad-mode switching, state lookup) and cannot use torch's multi-tensor (``foreach``) or
fused kernels across parameters; and SVI then refills every gradient with a freshly allocated
zero tensor. :class:`MultiTensorOptim` steps each param group with torch's fused kernel where
every parameter of the group supports it (floating point, on a device with fused kernels:
the CPU and CUDA for Adam, AdamW and SGD), else with the multi-tensor (``foreach``) kernel;
on the 8 tensors of the 784-400-20 VAE of ``bench/vae.py`` one fused Adam step takes about a
third of the time of the ``foreach`` one on a CPU. :class:`MultiTensorOptim` keeps Pyro's
interface (``__call__(params)``, ``get_state``/``set_state``, lazily seen parameters, per-param
``optim_args`` and ``clip_args``, usable by :class:`pyro.infer.SVI` and
:func:`pgm_lab.train.fit`) and puts all parameters into the param groups of a single optimizer.

The update is the same algorithm (same formulas, same hyperparameters); only the kernel that
applies it differs, so results agree with ``pyro.optim`` to floating-point rounding.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import pyro
import torch
from pyro.optim import PyroOptim
from torch.optim import optimizer as torch_optimizer

from .errors import ConfigError

__all__ = ["MultiTensorOptim", "Adam"]

# Group entries that choose the implementation, not the update: not part of a saved state.
_IMPL_KEYS = ("foreach", "fused", "capturable", "differentiable")

# Optimizers whose fused kernel runs the same algorithm as their for-loop and foreach ones,
# with the device types it supports (torch >= 2.4; earlier versions fuse on CUDA only, see
# _fused_device_types).
_FUSED_DEVICES = {torch.optim.Adam: ("cpu", "cuda"), torch.optim.AdamW: ("cpu", "cuda"),
                  torch.optim.SGD: ("cpu", "cuda"), torch.optim.Adagrad: ("cpu",)}


def _fused_device_types(constructor: type[torch.optim.Optimizer]) -> frozenset[str]:
    """Device types on which ``constructor(..., fused=True)`` runs, for this torch version.

    Empty unless the constructor takes ``fused`` and is one of ``_FUSED_DEVICES`` (a subclass
    may change the update the fused kernel computes). The devices are intersected with
    torch's own list of devices with fused optimizer kernels, where torch has that list.
    """
    devices = _FUSED_DEVICES.get(constructor)
    if devices is None or "fused" not in inspect.signature(constructor).parameters:
        return frozenset()
    supported = getattr(torch_optimizer, "_get_fused_kernels_supported_devices", None)
    if supported is None:  # a torch without the list (or that renamed it): CUDA only
        return frozenset(devices) & {"cuda"}
    return frozenset(devices) & set(supported())


class MultiTensorOptim(PyroOptim):
    """One ``optim_constructor`` instance for all parameters Pyro hands to the optimizer.

    A parameter seen for the first time joins the param group whose hyperparameters equal its
    own (``optim_args``, or those restored by :meth:`set_state`) and whose kernel it can use,
    or a new group. Unless ``optim_args`` choose the kernel (``foreach``, ``fused`` or
    ``differentiable`` given), a group is stepped by torch's fused kernel when its parameters
    support it (floating point on a device the optimizer fuses on: CPU and CUDA for
    ``torch.optim.Adam``, ``AdamW`` and ``SGD``, the CPU for ``Adagrad``), else by the
    multi-tensor kernel (``foreach=True``). With dict ``optim_args`` and the parameters on one
    device every parameter therefore sits in one group, stepped by one kernel call.
    Parameters that do not take part in a call keep their values and optimizer state, as with
    ``pyro.optim`` (their gradients are hidden from the step). After the step the
    gradients of the stepped parameters are set to ``None`` (torch's
    ``zero_grad(set_to_none=True)``) instead of Pyro's zero tensors.

    :meth:`get_state` returns Pyro's per-parameter format ``{param_name: state_dict of a
    one-parameter optimizer}``, so checkpoints move freely between ``pyro.optim`` optimizers
    and this one (e.g. a run started with ``pyro.optim.Adam`` resumes with :func:`Adam`). A
    kernel chosen here is not recorded in it: those entries hold the optimizer's defaults, as
    in a state saved by ``pyro.optim``; kernel choices given in ``optim_args`` are.

    Args:
        optim_constructor: a ``torch.optim.Optimizer`` subclass, e.g. ``torch.optim.Adam``.
        optim_args: keyword arguments of the optimizer (e.g. ``{"lr": 1e-3}``), or a callable
            ``f(param_name) -> dict`` for per-parameter arguments, as in ``pyro.optim``. The
            kernel is chosen as above unless ``foreach``, ``fused`` or ``differentiable`` is
            given (e.g. ``{"fused": False}``: torch's default kernel).
        clip_args: ``{"clip_norm": ..., "clip_value": ...}`` (or a callable), applied per
            parameter before the step exactly as ``pyro.optim`` does.

    Raises:
        ConfigError: ``optim_constructor`` is not a torch optimizer class (learning-rate
            schedulers: use ``pyro.optim``'s scheduler wrappers).
    """

    def __init__(self, optim_constructor: type[torch.optim.Optimizer],
                 optim_args: dict[str, Any] | Callable[..., dict[str, Any]],
                 clip_args: dict[str, Any] | Callable[..., dict[str, Any]] | None = None
                 ) -> None:
        if not (isinstance(optim_constructor, type)
                and issubclass(optim_constructor, torch.optim.Optimizer)):
            raise ConfigError(f"expected a torch.optim.Optimizer subclass, got "
                              f"{optim_constructor!r}; try torch.optim.Adam")
        if not (callable(optim_args) or isinstance(optim_args, dict)):
            raise ConfigError(f"optim_args must be a dict or a callable returning one, got "
                              f"{type(optim_args).__name__}; try {{'lr': 1e-3}}")
        super().__init__(optim_constructor, optim_args, clip_args)
        self.optimizer: torch.optim.Optimizer | None = None
        # Per param group: (its hyperparameters with the kernel choices given by the user,
        # the kernel entries chosen here): a parameter joins the group with both equal.
        self._group_keys: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self._fused_devices = _fused_device_types(optim_constructor)

    def __call__(self, params: Iterable[torch.Tensor], *args: Any, **kwargs: Any) -> None:
        """One optimizer step on ``params`` (registering unseen ones first)."""
        params = params if isinstance(params, (set, frozenset)) else set(params)
        for p in params:
            if p not in self.optim_objs:
                self._add(p)
            if self.grad_clip[p] is not None:
                self.grad_clip[p](p)
        # pyro.infer.SVI zeroes gradients instead of deleting them; a parameter absent from
        # this step would otherwise be moved by its momentum, which pyro.optim never does.
        idle = [p for p in self.optim_objs if p not in params and p.grad is not None]
        grads = [p.grad for p in idle]
        for p in idle:
            p.grad = None
        try:
            if self.optimizer is not None:
                self.optimizer.step(*args, **kwargs)
        finally:
            for p, g in zip(idle, grads):
                p.grad = g
        # Release the used gradients like torch's zero_grad(set_to_none=True). SVI's
        # zero_grads, which follows, then skips them instead of allocating and filling zero
        # tensors that the next backward adds into (for the 784-400-20 VAE ~10% of a step,
        # mostly page faults of the fresh allocations). The next gradients are the same.
        for p in params:
            p.grad = None

    def _add(self, p: torch.Tensor) -> None:
        name = pyro.get_param_store().param_name(p)
        group_args = dict(self._get_optim_args(p))
        saved = self._state_waiting_to_be_consumed.pop(name, None)
        if saved is not None:  # saved hyperparameters win, as in torch's load_state_dict
            saved_group = saved["param_groups"][0]
            group_args.update({k: v for k, v in saved_group.items()
                               if k != "params" and k not in _IMPL_KEYS})
        group_args = {k: tuple(v) if isinstance(v, list) else v for k, v in group_args.items()}
        key = (group_args, self._kernel(p, group_args))
        if self.optimizer is None:
            self.optimizer = self.pt_optim_constructor([{"params": [p], **key[0], **key[1]}])
            self._group_keys.append(key)
        elif key in self._group_keys:
            # Joining an existing group: Optimizer.step reads group["params"] on every call.
            self.optimizer.param_groups[self._group_keys.index(key)]["params"].append(p)
        else:
            self.optimizer.add_param_group({"params": [p], **key[0], **key[1]})
            self._group_keys.append(key)
        self.optim_objs[p] = self.optimizer
        self.grad_clip[p] = self._get_grad_clip(p)
        if saved is not None and saved["state"]:
            group = self.optimizer.param_groups[self._group_index(p)]
            on_device = bool(group.get("fused") or group.get("capturable"))
            self.optimizer.state[p] = {
                k: _cast(v, p, k, on_device) for k, v in saved["state"][0].items()}

    def _kernel(self, p: torch.Tensor, group_args: dict[str, Any]) -> dict[str, Any]:
        """The kernel entries to add for ``p``: ``{"fused": True}`` where ``p`` supports the
        fused kernel, else ``{"foreach": True}``; none where ``group_args`` choose."""
        if any(k in group_args for k in ("foreach", "fused", "differentiable")):
            return {}
        if p.is_floating_point() and p.device.type in self._fused_devices:
            return {"fused": True}
        return {"foreach": True}

    def get_state(self) -> dict[str, dict[str, Any]]:
        """``{param_name: {"state": {0: ...}, "param_groups": [{..., "params": [0]}]}}``.

        Pyro's per-parameter format; states passed to :meth:`set_state` whose parameters have
        not been seen yet are included unchanged.
        """
        store = pyro.get_param_store()
        out = dict(self._state_waiting_to_be_consumed)
        if self.optimizer is None:
            return out
        defaults = self.optimizer.defaults
        for group, (_, chosen) in zip(self.optimizer.param_groups, self._group_keys):
            hyper = {k: defaults.get(k) if k in chosen else v
                     for k, v in group.items() if k != "params"}
            for p in group["params"]:
                state = self.optimizer.state.get(p)
                out[store.param_name(p)] = {"state": {0: dict(state)} if state else {},
                                            "param_groups": [{**hyper, "params": [0]}]}
        return out

    def set_state(self, state_dict: dict[str, dict[str, Any]]) -> None:
        """Load states from :meth:`get_state` (or from a ``pyro.optim`` optimizer).

        A parameter not seen yet takes its state when first seen (Pyro's lazy semantics); one
        already being optimized takes it now, with the saved hyperparameters.
        """
        store = pyro.get_param_store()
        live = {store.param_name(p): p for p in self.optim_objs}
        self._state_waiting_to_be_consumed.update(state_dict)
        for name in state_dict:
            if name in live:
                self._remove(live[name])
                self._add(live[name])

    def _group_index(self, p: torch.Tensor) -> int:
        return next(i for i, g in enumerate(self.optimizer.param_groups)
                    if any(q is p for q in g["params"]))

    def _remove(self, p: torch.Tensor) -> None:
        i = self._group_index(p)
        params = self.optimizer.param_groups[i]["params"]
        params.pop(next(j for j, q in enumerate(params) if q is p))
        if not params:
            del self.optimizer.param_groups[i]
            del self._group_keys[i]
        self.optimizer.state.pop(p, None)
        del self.optim_objs[p]


def _cast(value: Any, p: torch.Tensor, key: str, on_device: bool) -> Any:
    """A copy of a saved state entry placed like torch's ``Optimizer.load_state_dict`` does:
    floating tensors to the parameter's dtype and device; ``step`` stays a float32 tensor on
    the CPU unless the group is fused or capturable."""
    if not isinstance(value, torch.Tensor):
        return value
    if key == "step":
        return value.to(dtype=torch.float32, device=p.device, copy=True) if on_device \
            else value.clone()
    if value.is_floating_point():
        return value.to(dtype=p.dtype, device=p.device, copy=True)
    return value.to(device=p.device, copy=True)


def Adam(optim_args: dict[str, Any] | Callable[..., dict[str, Any]],  # noqa: N802 -- as pyro
         clip_args: dict[str, Any] | Callable[..., dict[str, Any]] | None = None
         ) -> MultiTensorOptim:
    r"""Adam (Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization") for all
    parameters in one ``torch.optim.Adam``; a drop-in for ``pyro.optim.Adam(optim_args)``.

    .. math::

        m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t, \quad
        v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2, \quad
        \theta_t = \theta_{t-1} - \eta\, \frac{m_t / (1 - \beta_1^t)}
            {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}

    Example::

        svi = pyro.infer.SVI(vae.model, guide, pgm_lab.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    """
    return MultiTensorOptim(torch.optim.Adam, optim_args, clip_args)
