"""The training engine: one SVI loop shared by every trainer in pgm_lab.

:func:`fit` wraps :class:`pyro.infer.SVI` with what a real training run needs: seeded
minibatching, correct ``N / B`` scaling of the sites in the data plate, device placement,
a progress bar, NaN detection, atomic checkpoints and exact resumption.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.poutine.messenger import Messenger
from tqdm import tqdm

from .errors import CheckpointError, ConfigError, DataError, TrainingError
from .optim import Adam

__all__ = [
    "fit",
    "History",
    "EpochRecord",
    "resolve_device",
    "scale_plate",
    "progress_enabled",
    "save_checkpoint_atomic",
]

CHECKPOINT_VERSION = 1


@dataclass
class EpochRecord:
    """One epoch of training: ``loss`` is the mean SVI loss per data point (nats)."""

    epoch: int
    loss: float
    seconds: float
    steps: int


@dataclass
class History:
    """Per-epoch training record returned by :func:`fit` (and saved as JSON)."""

    epochs: list[EpochRecord] = field(default_factory=list)

    @property
    def loss(self) -> list[float]:
        """Per-epoch mean loss per data point."""
        return [r.loss for r in self.epochs]

    @property
    def seconds(self) -> float:
        """Total training wall time over all recorded epochs."""
        return float(sum(r.seconds for r in self.epochs))

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": [asdict(r) for r in self.epochs]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls([EpochRecord(**r) for r in d["epochs"]])


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else goes to ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"unknown device {device!r}; expected 'auto', 'cpu' or 'cuda[:i]'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use 'auto'")
    return dev


def progress_enabled(progress: bool | None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else only on a TTY outside CI."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")


class _PlateScaleMessenger(Messenger):
    def __init__(self, plate_name: str, scale: float):
        super().__init__()
        self.plate_name = plate_name
        self.scale = scale

    def _process_message(self, msg: dict) -> None:
        if any(f.name == self.plate_name for f in msg["cond_indep_stack"]):
            msg["scale"] = self.scale * msg["scale"]


def scale_plate(fn: Callable, plate_name: str, scale: float) -> Callable:
    """Multiply the log density of every site inside plate ``plate_name`` by ``scale``.

    With a minibatch of ``B`` of ``N`` data points and ``scale = N / B``, the ELBO of the
    minibatch is an unbiased estimate of the full-data ELBO; global sites outside the plate
    keep scale 1 (unlike ``poutine.scale``, which would scale them too).
    """
    return _PlateScaleMessenger(plate_name, scale)(fn)


def _no_guide(*args: Any, **kwargs: Any) -> None:
    return None


def _as_tensors(data: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    tensors = (data,) if isinstance(data, torch.Tensor) else tuple(data)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise DataError("data must be a tensor [N, ...] or a sequence of tensors with equal N")
    n = tensors[0].shape[0] if tensors[0].dim() else 0
    if n == 0:
        raise DataError(f"data is empty (shape {tuple(tensors[0].shape)})")
    if any(t.dim() == 0 or t.shape[0] != n for t in tensors):
        shapes = [tuple(t.shape) for t in tensors]
        raise DataError(f"all data tensors must share the first dimension N; got shapes {shapes}")
    for t in tensors:
        if t.dtype.is_floating_point and not torch.isfinite(t).all():
            raise DataError("data contains NaN or infinity")
    return tensors


def _modules_of(*fns: Callable | None) -> list[torch.nn.Module]:
    mods = []
    for fn in fns:
        obj = getattr(fn, "__self__", fn)
        if isinstance(obj, torch.nn.Module) and all(obj is not m for m in mods):
            mods.append(obj)
    return mods


def save_checkpoint_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then ``os.replace``.

    A crash at any point leaves either the previous file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _history_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".history.json")


def fit(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor | Sequence[torch.Tensor],
    *,
    loss: pyro.infer.ELBO | None = None,
    optim: pyro.optim.PyroOptim | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    seed: int | None = 0,
    device: str | torch.device = "auto",
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[Callable[[int, EpochRecord], bool | None]] = (),
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    plate_name: str = "data",
    shuffle: bool = True,
    desc: str = "fit",
    num_threads: int | None = None,
) -> History:
    """Train ``model``/``guide`` with :class:`pyro.infer.SVI` on minibatches of ``data``.

    Each step calls ``model(*batch)`` and ``guide(*batch)`` with ``batch`` the rows of each data
    tensor selected for the step. Sites inside plate ``plate_name`` are scaled by ``N / B``
    (see :func:`scale_plate`), so the step loss estimates the full-data loss without bias.

    Args:
        model, guide: Pyro callables; ``guide=None`` uses an empty guide (for losses that do not
            need one, e.g. :class:`pgm_lab.rbm.ContrastiveDivergence`).
        data: tensor ``[N, ...]`` or a sequence of tensors sharing ``N``.
        loss: a :class:`pyro.infer.ELBO` (default ``Trace_ELBO()``); any object with
            ``loss_and_grads(model, guide, *args)`` works. If it has ``state_dict()`` /
            ``load_state_dict()`` (e.g. persistent chains) that state is checkpointed too.
        optim: a :class:`pyro.optim.PyroOptim` (default :func:`pgm_lab.optim.Adam` with
            ``lr=1e-3``: the same updates as ``pyro.optim.Adam``, stepping all parameters with
            one multi-tensor optimizer).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: minibatch size ``B`` (the last batch of an epoch may be smaller).
        seed: seeds torch, numpy, python ``random`` and the shuffling generator; ``None`` keeps
            the global RNG state as is.
        device: ``"auto"`` (CUDA if available else CPU), ``"cpu"``, ``"cuda"``...
        checkpoint: path of the checkpoint file, rewritten atomically after every epoch, with a
            ``<stem>.history.json`` beside it.
        resume: continue from ``checkpoint`` if it exists (params, optimizer and RNG states,
            epoch); the result equals an uninterrupted run with the same seed.
        progress: show a tqdm bar; ``None`` -> only on a terminal and not when ``CI`` is set.
        callbacks: ``cb(epoch, record)`` after each epoch; a truthy return stops training.
        transform: ``transform(x, generator)`` applied to the first data tensor of each batch,
            e.g. :func:`pgm_lab.data.dynamic_binarize`.
        plate_name: name of the data plate to scale.
        shuffle: reshuffle the data each epoch.
        desc: label of the progress bar.
        num_threads: torch CPU threads while training, restored afterwards (``None`` keeps
            torch's setting). Small networks train fastest with 1 thread: with more, the
            per-op thread synchronization costs more than the arithmetic.

    Returns:
        :class:`History` of per-epoch mean loss per data point and wall time.

    Raises:
        TrainingError: the loss became NaN or infinite (names epoch and step; the last good
            checkpoint stays on disk).
        CheckpointError: ``resume=True`` and the checkpoint cannot be loaded.
    """
    if not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=<path>")
    if num_threads is not None and (isinstance(num_threads, bool)
                                    or not isinstance(num_threads, int) or num_threads < 1):
        raise ConfigError(f"num_threads must be a positive int or None, got {num_threads!r}")
    if num_threads is not None:
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        try:
            return fit(model, guide, data, loss=loss, optim=optim, epochs=epochs,
                       batch_size=batch_size, seed=seed, device=device, checkpoint=checkpoint,
                       resume=resume, progress=progress, callbacks=callbacks,
                       transform=transform, plate_name=plate_name, shuffle=shuffle, desc=desc)
        finally:
            torch.set_num_threads(saved_threads)
    dev = resolve_device(device)
    tensors = tuple(t.to(dev) for t in _as_tensors(data))
    n = tensors[0].shape[0]
    guide = _no_guide if guide is None else guide
    for mod in _modules_of(model, guide):
        mod.to(dev)
    loss = Trace_ELBO() if loss is None else loss
    optim = Adam({"lr": 1e-3}) if optim is None else optim
    if seed is not None:
        pyro.set_rng_seed(seed)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if seed is None else seed)

    def scaled(fn: Callable, b: int) -> Callable:
        return scale_plate(fn, plate_name, n / b)

    history = History()
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path)
        # Materialize every parameter (PyroModule params enter the param store lazily) before
        # restoring values in place, so tensors shared by modules and the store stay shared.
        first = [t[: min(batch_size, n)] for t in tensors]
        if transform is not None:  # the model sees transformed data (e.g. binarized) only
            first[0] = transform(first[0], torch.Generator().manual_seed(0))
        _materialize_params(model, guide, tuple(first), loss)
        _restore(state, optim, loss, gen, _modules_of(model, guide))
        history = History.from_dict(state["history"])
        start_epoch = state["epoch"]

    svi = SVI(model, guide, optim, loss)
    show = progress_enabled(progress)
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(0, epochs - start_epoch) * steps_per_epoch
    with tqdm(total=total, disable=not show, desc=desc, leave=False, dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
            order = order.to(dev)
            epoch_loss = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * batch_size : (step + 1) * batch_size]
                batch = [t[idx] for t in tensors]
                if transform is not None:
                    batch[0] = transform(batch[0], gen)
                b = int(idx.shape[0])
                svi.model, svi.guide = scaled(model, b), scaled(guide, b)
                where = f"epoch {epoch}, step {step}"
                kept = f"; last good checkpoint: {ckpt_path}" if ckpt_path else ""
                try:
                    step_loss = svi.step(*batch)
                except ValueError as exc:
                    # Pyro's validation raises ValueError on a NaN distribution parameter.
                    bad = _non_finite_params()
                    first_line = str(exc).splitlines()[0] if str(exc) else ""
                    if not bad and "invalid values" not in first_line:
                        raise
                    what = f"parameters {bad} became NaN or infinite" if bad else first_line
                    raise TrainingError(f"{what} at {where}{kept}. Lower the learning rate "
                                        "or check the model's scales") from exc
                if not math.isfinite(step_loss):
                    raise TrainingError(f"loss is {step_loss} at {where}{kept}. Lower the "
                                        "learning rate or check the model's scales")
                epoch_loss += step_loss
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{step_loss / n:.4g}")
            record = EpochRecord(epoch=epoch, loss=epoch_loss / steps_per_epoch / n,
                                 seconds=time.perf_counter() - t0, steps=steps_per_epoch)
            history.epochs.append(record)
            if ckpt_path is not None:
                _save(ckpt_path, epoch + 1, history, optim, loss, gen, _modules_of(model, guide))
            stop = [cb(epoch, record) for cb in callbacks]
            if any(stop):
                break
    return history


def _non_finite_params() -> list[str]:
    store = pyro.get_param_store()
    return [name for name, value in store.named_parameters() if not torch.isfinite(value).all()]


def _materialize_params(model: Callable, guide: Callable, batch: tuple, loss: Any) -> None:
    rng = torch.get_rng_state()
    with torch.no_grad(), pyro.poutine.block():
        guide_trace = pyro.poutine.trace(guide).get_trace(*batch)
        pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    torch.set_rng_state(rng)


def _rng_states(gen: torch.Generator) -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 -- pyro seeds the legacy global RNG
        "python": random.getstate(),
        "shuffle": gen.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _save(path: Path, epoch: int, history: History, optim: Any, loss: Any,
          gen: torch.Generator, modules: list[torch.nn.Module]) -> None:
    state = {
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "param_store": pyro.get_param_store().get_state(),
        "modules": [m.state_dict() for m in modules],
        "optim": optim.get_state(),
        "loss": loss.state_dict() if hasattr(loss, "state_dict") else None,
        "rng": _rng_states(gen),
        "history": history.to_dict(),
    }
    save_checkpoint_atomic(state, path)
    _write_json_atomic(history.to_dict(), _history_path(path))


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 -- any unpickling failure means a bad file
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a pgm_lab checkpoint (version "
                              f"{CHECKPOINT_VERSION} expected)")
    return state


def _restore(state: dict[str, Any], optim: Any, loss: Any, gen: torch.Generator,
             modules: list[torch.nn.Module]) -> None:
    if len(state["modules"]) != len(modules):
        raise CheckpointError(f"checkpoint has {len(state['modules'])} modules, the model and "
                              f"guide have {len(modules)}; resume with the same model and guide")
    with torch.no_grad():
        for mod, sd in zip(modules, state["modules"]):
            try:
                mod.load_state_dict(sd)
            except RuntimeError as exc:
                raise CheckpointError(f"checkpoint does not match {type(mod).__name__}: "
                                      f"{exc}") from exc
        store = pyro.get_param_store()
        saved = state["param_store"]
        for name, value in saved["params"].items():
            if name in store._params:
                store._params[name].copy_(value)
            else:
                store._params[name] = value.clone().requires_grad_()
                store._constraints[name] = saved["constraints"][name]
    optim.set_state(state["optim"])
    if state["loss"] is not None and hasattr(loss, "load_state_dict"):
        loss.load_state_dict(state["loss"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])  # noqa: NPY002
    random.setstate(rng["python"])
    gen.set_state(rng["shuffle"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
