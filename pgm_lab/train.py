"""The training engine: one SVI loop shared by every trainer in pgm_lab.

:func:`fit` wraps :class:`pyro.infer.SVI` with what a real training run needs: seeded
minibatching, correct ``N / B`` scaling of the sites in the data plate, device placement,
a progress bar, NaN detection, atomic checkpoints and exact resumption. Checkpoint files
are written and read by :mod:`pgm_lab.checkpoint` (tensors and plain values only, loaded with
``weights_only=True``, validated key by key, refused if the configuration or data changed).
Started by ``torchrun``, :func:`fit` trains data-parallel on :mod:`torch.distributed`
(helpers in :mod:`pgm_lab.distributed`); for a step that is deterministic given the data the
result is that of one process, up to float round-off.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.params.param_store import (
    module_from_param_with_module_name,
    normalize_param_name,
    user_param_name,
)
from pyro.poutine.messenger import Messenger
from tqdm import tqdm

from . import checkpoint as checkpoint_io
from . import distributed as dist_io
from ._deferred import DeferredCheck, deferring, pending
from ._progress import progress_enabled
from ._threads import check_num_threads, step_work, training_threads
from .errors import CheckpointError, ConfigError, DataError, PgmLabError, TrainingError
from .infer.device_loss import device_loss_and_grads
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

CUDA_CHECK_EVERY = 50  # steps between reads of the loss on CUDA (one host sync each)
CHECKPOINT_VERSION = 2  # 1 held numpy arrays and python tuples: it needed unsafe loading


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


save_checkpoint_atomic = checkpoint_io.save_atomic

# ELBO attributes Pyro fills in at the first step (run state, not configuration).
_LOSS_RUN_STATE = ("max_plate_nesting",)


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
    resume: bool | str = False,
    progress: bool | None = None,
    callbacks: Sequence[Callable[[int, EpochRecord], bool | None]] = (),
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    plate_name: str = "data",
    shuffle: bool = True,
    desc: str = "fit",
    num_threads: int | None = None,
    distributed: bool | str = "auto",
    check_every: int | None = None,
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
            one torch optimizer, on its fused kernel where the device has one).
        epochs: total number of epochs (a resumed run continues up to this number).
        batch_size: minibatch size ``B`` (the last batch of an epoch may be smaller).
        seed: seeds torch, numpy, python ``random`` and the shuffling generator; ``None`` keeps
            the global RNG state as is.
        device: ``"auto"`` (CUDA if available else CPU), ``"cpu"``, ``"cuda"``...
        checkpoint: path of the checkpoint file, rewritten atomically after every epoch, with a
            ``<stem>.history.json`` beside it. It is checked to be writable before the first
            step, and temporary files left beside it by a killed run are deleted. The file
            holds only tensors and plain values: it loads with
            ``torch.load(path, weights_only=True)``, and is never loaded any other way.
        resume: ``True``: continue from ``checkpoint`` if it exists (params, optimizer, loss
            and RNG states, epoch); the result equals an uninterrupted run with the same seed.
            The checkpoint records the configuration (loss and optimizer settings,
            ``batch_size``, ``seed``, ``shuffle``, ``plate_name``, ``transform``) and a
            fingerprint of ``data`` (shapes, dtypes, SHA-256 of the bytes); resuming with any
            of them changed is refused with a list of the differences. ``epochs`` may change:
            training continues up to the new number. ``"force"``: resume despite such
            differences, continuing with the new settings (the new optimizer hyperparameters
            replace the saved ones). ``False``: start afresh, overwriting the checkpoint.
        progress: show a tqdm bar; ``None`` -> only on a terminal and not when ``CI`` is set.
        callbacks: ``cb(epoch, record)`` after each epoch; a truthy return stops training.
        transform: ``transform(x, generator)`` applied to the first data tensor of each batch,
            e.g. :func:`pgm_lab.data.dynamic_binarize`.
        plate_name: name of the data plate to scale.
        shuffle: reshuffle the data each epoch.
        desc: label of the progress bar.
        num_threads: torch CPU threads while training, restored afterwards. ``None``
            chooses from the work of one step, ``batch_size x parameters x num_particles``:
            one thread per 2^32 multiply-adds, at least 1 and at most torch's current
            setting. The small models this library trains thus run on one thread: their
            kernels are too small to split, and with torch's default of a thread per core an
            RBM 64x20 or a VAE 64-128-8 trained 3-30x slower whenever other processes kept
            the cores busy. Pass a count to use more threads for a large model on an idle
            machine.
        distributed: ``"auto"``: when started by ``torchrun`` (``RANK`` and ``WORLD_SIZE``
            set) join the process group (gloo on CPU, NCCL on CUDA; an existing group is
            reused) and train data-parallel; ``True``: require that; ``False``: never touch
            :mod:`torch.distributed`. With ``W`` processes ``batch_size`` is the global
            minibatch: every rank draws the same seeded permutation (and applies
            ``transform`` to the whole minibatch) and takes its contiguous share, its data
            plate scaled by ``W N / B`` so that the gradients averaged over ranks are those
            of the single-process step (global sites counted once). Parameters are created on
            every rank and broadcast from rank 0 before the first step; gradients are averaged
            in flat buckets (:func:`pgm_lab.distributed.average_gradients`) together with the
            loss, so every rank sees the same loss and stops at the same NaN. Each rank draws
            its own random numbers (torch seeded with ``seed + rank``): a model whose step is
            deterministic given the data trains to the single-process result up to float
            round-off, a stochastic one to a result with the same distribution. Rank 0 alone
            writes the checkpoint (with every rank's RNG and loss state) and shows progress;
            every rank resumes from it. A rank that dies makes the others raise
            :class:`TrainingError` within the group's timeout
            (:data:`pgm_lab.distributed.DEFAULT_TIMEOUT`).
        check_every: read the loss to the host, and check that it is finite, every
            ``check_every`` steps (and at the end of each epoch). ``None``: every step on the
            CPU, every 50 steps on CUDA. In between, the losses of Pyro's ``Trace_ELBO`` (the
            default), of :class:`pgm_lab.infer.IWAE` and of
            :class:`pgm_lab.rbm.ContrastiveDivergence` are summed on the device
            (:func:`pgm_lab.infer.device_loss.device_loss_and_grads`; other losses return
            floats, read every step), and only the first step of each window runs with
            Pyro's validation as set: the others run without it, since its checks read
            tensors to the host. So a step waits for the GPU once per window, not several
            times per step. A non-finite sum names the window of steps it covers;
            Pyro's argument checks run on the window's first step, and data checks that a
            model defers to the read (the VAE's finite and binary
            checks) raise their error, naming the step, at the window's end. Distributed, a
            rank whose step raises stops, with every other rank, at the end of the window.

    Returns:
        :class:`History` of per-epoch mean loss per data point and wall time.

    Raises:
        TrainingError: the loss became NaN or infinite (names epoch and step; the last good
            checkpoint stays on disk).
        CheckpointError: ``checkpoint`` is not a writable file path; or, resuming, the file
            cannot be read, holds anything but tensors and plain values (refused without
            running it), is malformed (names the key), does not match the model, guide or
            optimizer, or was written with another configuration or data.
    """
    _check_arguments(epochs, batch_size, checkpoint, resume, num_threads)
    if check_every is not None and (isinstance(check_every, bool)
                                    or not isinstance(check_every, int) or check_every < 1):
        raise ConfigError(f"check_every must be a positive int or None, got {check_every!r}; "
                          "try None (every step on the CPU, every 50 on CUDA)")
    if not (distributed is True or distributed is False or distributed == "auto"):
        raise ConfigError(f"distributed must be 'auto', True or False, got {distributed!r}")
    params = [p for mod in _modules_of(model, guide) for p in mod.parameters()]
    with training_threads(num_threads, step_work(batch_size, params, loss)):
        run = _prepare(model, guide, data, loss=loss, optim=optim, batch_size=batch_size,
                       seed=seed, device=device, checkpoint=checkpoint, transform=transform,
                       plate_name=plate_name, shuffle=shuffle, distributed=distributed)
        if check_every is not None:
            run.check_every = check_every
        elif run.device.type == "cuda":
            run.check_every = CUDA_CHECK_EVERY
        history, start_epoch = History(), 0
        resuming = bool(resume) and run.checkpoint is not None and run.checkpoint.exists()
        if run.ctx is not None:  # rank 0's file decides: other nodes may not see it
            resuming = dist_io.broadcast_object(run.ctx, resuming, "deciding whether to resume")
        if resuming:
            history, start_epoch = _restore(run, force=resume == "force")
        if run.ctx is not None:
            _share_params(run)
        return _train(run, history, start_epoch, epochs, progress=progress,
                      callbacks=callbacks, desc=desc)


def _check_arguments(epochs: Any, batch_size: Any, checkpoint: Any, resume: Any,
                     num_threads: Any) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"epochs must be a non-negative int, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (resume is True or resume is False or resume == "force"):
        raise ConfigError(f"resume must be False, True or 'force', got {resume!r}")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=<path>")
    check_num_threads(num_threads)


@dataclass
class _Run:
    """What one call of :func:`fit` trains with, built by :func:`_prepare`."""

    model: Callable
    guide: Callable
    tensors: tuple[torch.Tensor, ...]
    loss: Any
    optim: Any
    gen: torch.Generator  # shuffling and ``transform``
    device: torch.device
    batch_size: int
    transform: Callable | None
    plate_name: str
    shuffle: bool
    checkpoint: Path | None
    settings: dict[str, Any]  # the configuration fingerprint, less the optimizer's
    ctx: dist_io.Context | None  # None: a single process
    seed: int | None
    shared: set[str] = field(default_factory=set)  # params given rank 0's values (by name)
    check_every: int = 1  # steps between reads (and finiteness checks) of the loss
    failure: tuple[Exception, str] | None = None  # this rank's failed step, raised at the read
    # distributed: the fractions of failed ranks of this window's steps, summed on the device
    window_failures: float | torch.Tensor = 0.0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints and shows progress (rank 0)."""
        return self.ctx is None or self.ctx.is_main

    @property
    def n(self) -> int:
        return int(self.tensors[0].shape[0])

    def modules(self) -> list[torch.nn.Module]:
        return _modules_of(self.model, self.guide)

    def config(self, param_names: Iterable[str]) -> dict[str, Any]:
        """The configuration fingerprint stored in, and compared with, the checkpoint."""
        return {**self.settings, "optim": _describe_optim(self.optim, param_names)}


def _prepare(model: Callable, guide: Callable | None, data: Any, *, loss: Any, optim: Any,
             batch_size: int, seed: int | None, device: str | torch.device,
             checkpoint: str | os.PathLike | None, transform: Callable | None,
             plate_name: str, shuffle: bool, distributed: bool | str = False) -> _Run:
    """Validate data and checkpoint path, join the process group, move data and modules to
    the device, seed RNGs (torch's global RNG with ``seed + rank``)."""
    dev = resolve_device(device)
    ctx = dist_io.context(distributed, dev)
    if dev.type == "cuda" and ctx is not None:
        dev = torch.device("cuda", torch.cuda.current_device())
    if ctx is not None and batch_size < ctx.world_size:
        raise ConfigError(f"batch_size is the global minibatch, shared by {ctx.world_size} "
                          f"processes: expected at least {ctx.world_size}, got {batch_size}")
    cpu_tensors = _as_tensors(data)
    ckpt_path = None
    if checkpoint is not None and (ctx is None or ctx.is_main):
        ckpt_path = checkpoint_io.check_writable(checkpoint)
        for path in (ckpt_path, _history_path(ckpt_path)):
            checkpoint_io.remove_stale_temporaries(path)
    elif checkpoint is not None:
        ckpt_path = Path(checkpoint)
    guide = _no_guide if guide is None else guide
    for mod in _modules_of(model, guide):
        mod.to(dev)
    loss = Trace_ELBO() if loss is None else loss
    optim = Adam({"lr": 1e-3}) if optim is None else optim
    settings = {}
    if ckpt_path is not None:
        settings = {"batch_size": batch_size, "seed": seed, "shuffle": bool(shuffle),
                    "plate_name": plate_name, "transform": checkpoint_io.qualname(transform),
                    "loss": checkpoint_io.describe(loss, skip=_LOSS_RUN_STATE),
                    "data": checkpoint_io.data_fingerprint(cpu_tensors)}
    if seed is not None:
        pyro.set_rng_seed(seed + (0 if ctx is None else ctx.rank))
    gen = torch.Generator(device="cpu")
    gen.manual_seed(0 if seed is None else seed)
    return _Run(model=model, guide=guide, tensors=tuple(t.to(dev) for t in cpu_tensors),
                loss=loss, optim=optim, gen=gen, device=dev, batch_size=batch_size,
                transform=transform, plate_name=plate_name, shuffle=shuffle,
                checkpoint=ckpt_path, settings=settings, ctx=ctx, seed=seed)


def _first_batch(run: _Run) -> tuple[torch.Tensor, ...]:
    """This rank's share of the first rows, as the model sees them (transformed)."""
    first = [t[: min(run.batch_size, run.n)] for t in run.tensors]
    if run.transform is not None:  # the model sees transformed data (e.g. binarized) only
        first[0] = run.transform(first[0], torch.Generator().manual_seed(0))
    rows = dist_io.shard(first[0].shape[0], run.ctx)
    return tuple(t[rows] for t in first)


def _share_params(run: _Run) -> None:
    """Create every parameter on every rank, then give all of them rank 0's values."""
    _materialize_params(run.model, run.guide, _first_batch(run), run.loss)
    tensors, seen = [], set()
    for mod in run.modules():
        for t in mod.state_dict(keep_vars=True).values():
            if id(t) not in seen:
                seen.add(id(t))
                tensors.append(t)
    for name, t in sorted(pyro.get_param_store().named_parameters()):
        run.shared.add(name)
        if id(t) not in seen:
            seen.add(id(t))
            tensors.append(t)
    dist_io.broadcast_(run.ctx, tensors)


def _train(run: _Run, history: History, start_epoch: int, epochs: int, *,
           progress: bool | None, callbacks: Sequence[Callable], desc: str) -> History:
    """Epochs ``start_epoch .. epochs - 1``, each followed by a checkpoint and the callbacks."""
    svi = SVI(run.model, run.guide, run.optim, run.loss)
    total = max(0, epochs - start_epoch) * math.ceil(run.n / run.batch_size)
    show = progress_enabled(progress) and run.is_main
    with tqdm(total=total, disable=not show, desc=desc, leave=False, dynamic_ncols=True) as bar:
        for epoch in range(start_epoch, epochs):
            record = _train_epoch(run, svi, epoch, bar)
            history.epochs.append(record)
            if run.checkpoint is not None:
                _save_checkpoint(run, epoch + 1, history)
            stop = any([cb(epoch, record) for cb in callbacks])
            if run.ctx is not None:  # every rank stops at the same epoch
                stop = dist_io.any_rank(run.ctx, stop, f"the callbacks of epoch {epoch}")
            if stop:
                break
    return history


def _train_epoch(run: _Run, svi: SVI, epoch: int, bar: tqdm) -> EpochRecord:
    """One pass over the data in (shuffled) minibatches, in windows of ``run.check_every``
    steps: the first step of a window runs with Pyro's validation as set, the others without
    (its checks read tensors to the host), and the window's summed loss is read once."""
    t0 = time.perf_counter()
    n, b = run.n, run.batch_size
    steps = math.ceil(n / b)
    order = torch.randperm(n, generator=run.gen) if run.shuffle else torch.arange(n)
    order = order.to(run.device)
    epoch_loss, window, first = 0.0, 0.0, 0  # window: the loss of steps first..step, unread
    checks: list[tuple[str, DeferredCheck]] = []  # the window's deferred data checks
    for step in range(steps):
        idx = order[step * b : (step + 1) * b]
        batch = [t[idx] for t in run.tensors]
        if run.transform is not None:
            batch[0] = run.transform(batch[0], run.gen)
        if run.ctx is not None:  # the same global minibatch on every rank: take this share
            rows = dist_io.shard(int(idx.shape[0]), run.ctx)
            batch = [t[rows] for t in batch]
        where = f"epoch {epoch}, step {step}"
        with _validation(step == first) as deferred:
            step_loss = _step(run, svi, batch, where, int(idx.shape[0]))
        checks += [(where, c) for c in deferred]
        # float64 on the device, as the host sums the floats of losses read every step
        window = window + (step_loss.double() if isinstance(step_loss, torch.Tensor)
                           else step_loss)
        bar.update(1)
        if step + 1 - first == run.check_every or step == steps - 1:
            value = _read_window(run, window, where if first == step else
                                 f"epoch {epoch}, steps {first}-{step}", step > first, checks)
            bar.set_postfix(epoch=epoch, loss=f"{value / (step + 1 - first) / n:.4g}")
            epoch_loss, window, first, checks = epoch_loss + value, 0.0, step + 1, []
    return EpochRecord(epoch=epoch, loss=epoch_loss / steps / n,
                       seconds=time.perf_counter() - t0, steps=steps)


@contextlib.contextmanager
def _validation(as_set: bool) -> Iterator[list[DeferredCheck]]:
    """Pyro's validation as the user set it (``as_set``; yields ``[]``), or off for this step,
    collecting the data checks that the model defers (``pgm_lab._deferred``)."""
    if as_set:
        yield []
        return
    with pyro.validation_enabled(False), deferring() as deferred:
        yield deferred


def _read_window(run: _Run, window: float | torch.Tensor, where: str, summed: bool,
                 checks: Sequence[tuple[str, DeferredCheck]] = ()) -> float:
    """The summed loss of a window of steps and its deferred checks' flags, read to the host
    in one synchronisation; raises this rank's failure, its first failed check (naming the
    step), another rank's failure (distributed: ``window`` holds the failure flags in its
    second entry), or a non-finite loss."""
    values, failed = _read_together(window, [c.failed for _where, c in checks])
    run.window_failures = 0.0
    if run.failure is not None:
        exc, step = run.failure
        run.failure = None
        if not isinstance(exc, _AnotherRankFailed):
            error = _explained(run, exc, step)
            if error is None:
                raise exc
            raise error from exc
    for (step, deferred), bad in zip(checks, failed):
        if bad:
            try:
                deferred.check()
            except PgmLabError as exc:
                raise type(exc)(f"at {step} (a step run without Pyro's validation, its data "
                                f"checked at the window's end): {exc}") from exc
    if len(values) > 1 and values[1] > 0:
        raise TrainingError(f"rank {run.ctx.rank} of {run.ctx.world_size}: another rank "
                            f"failed at {where} (its log names the error); every rank stops")
    if not math.isfinite(values[0]):
        what = " (their summed loss)" if summed else ""
        raise TrainingError(f"loss is {values[0]} at {where}{what}{_kept(run)}. Lower the "
                            "learning rate or check the model's scales")
    return values[0]


def _read_together(window: float | torch.Tensor, flags: list[torch.Tensor]
                   ) -> tuple[list[float], list[bool]]:
    """``window`` (a float, or a 0-d / 1-d tensor) and the bool ``flags`` read to the host
    with one transfer."""
    if not isinstance(window, torch.Tensor):
        return [window], [bool(f) for f in torch.stack(flags).tolist()] if flags else []
    part = window.detach().double().reshape(-1)
    values = torch.cat([part, *(f.to(part).reshape(1) for f in flags)]).tolist()
    return values[:part.numel()], [v != 0 for v in values[part.numel():]]


def _kept(run: _Run) -> str:
    """The error-message tail naming the last good checkpoint, if there is one."""
    return (f"; last good checkpoint: {run.checkpoint}"
            if run.checkpoint and os.path.exists(run.checkpoint) else "")


def _step(run: _Run, svi: SVI, batch: list[torch.Tensor], where: str,
          global_size: int) -> float | torch.Tensor:
    """One SVI step on ``batch`` with the plate scaled by ``N / B``; a NaN parameter or
    distribution argument -> TrainingError (a NaN loss is caught by :func:`_train_epoch`).

    ``B`` is ``global_size``, the minibatch of all ranks together; with ``W`` ranks each
    scales its share by ``W N / B`` and the gradients are averaged.
    """
    scale = run.n / global_size * (1 if run.ctx is None else run.ctx.world_size)
    svi.model = scale_plate(run.model, run.plate_name, scale)
    svi.guide = scale_plate(run.guide, run.plate_name, scale)
    if run.ctx is not None:
        svi.model, svi.guide = _ShareNewParams(run)(svi.model), _ShareNewParams(run)(svi.guide)
        return _parallel_step(run, svi, batch, where)
    try:
        return _svi_step(run, svi, batch)
    except Exception as exc:  # noqa: BLE001 -- kept as raised unless _explained explains it
        error = _explained(run, exc, where)
        if error is None:
            raise
        raise error from exc


def _explained(run: _Run, exc: Exception, where: str) -> TrainingError | None:
    """The TrainingError that explains ``exc`` raised by a step, or ``None`` to keep ``exc``.

    Pyro's validation raises ValueError on a NaN distribution parameter; parameters may also
    stay finite while a value computed from them overflows, and Pyro then wraps the support
    error as "Error while computing log_prob at site ...". A step that runs without
    validation (inside a ``check_every`` window) meets a NaN parameter in torch instead, e.g.
    a RuntimeError from sampling with NaN probabilities: any exception raised while some
    parameter is not finite is explained by it (the library's own errors are kept).
    """
    if isinstance(exc, PgmLabError):
        return None
    bad = _non_finite_params()
    message = str(exc)
    if not bad and not (isinstance(exc, ValueError) and "invalid values" in message):
        return None
    what = (f"parameters {bad} became NaN or infinite" if bad else
            "a value became NaN or infinite: " + " ".join(message.splitlines()[:2]))
    return TrainingError(f"{what} at {where}{_kept(run)}. Lower the learning rate "
                         "or check the model's scales")


def _loss_and_grads(run: _Run, svi: SVI, batch: list[torch.Tensor]
                    ) -> tuple[float | torch.Tensor, set[torch.Tensor]]:
    """The loss's value and gradients on ``batch``, and the parameters that took part.

    The value is a detached device tensor when :func:`pgm_lab.infer.device_loss_and_grads`
    knows the loss (Pyro's ``Trace_ELBO``, :class:`pgm_lab.infer.IWAE`): no host read, where
    ``SVI.step`` would read every site's log density to the host (a GPU sync each).
    """
    on_device = device_loss_and_grads(run.loss)
    with pyro.poutine.trace(param_only=True) as param_capture:
        loss = (svi.loss_and_grads if on_device is None else on_device)(
            svi.model, svi.guide, *batch)
    params = {site["value"].unconstrained() for site in param_capture.trace.nodes.values()}
    return loss, params


def _svi_step(run: _Run, svi: SVI, batch: list[torch.Tensor]) -> float | torch.Tensor:
    """:meth:`pyro.infer.SVI.step`, with the loss as a device tensor where it can be."""
    loss, params = _loss_and_grads(run, svi, batch)
    svi.optim(params)
    pyro.infer.util.zero_grads(params)
    return loss


def _parallel_step(run: _Run, svi: SVI, batch: list[torch.Tensor], where: str
                   ) -> torch.Tensor:
    """:meth:`pyro.infer.SVI.step` with the gradients and the loss averaged over ranks.

    Returns ``[mean loss, fraction of ranks that failed]`` (a device tensor, read by
    :func:`_train_epoch` at the end of the window of steps). A rank whose step raises keeps
    taking part in the averaging with no gradients and a failure flag until that read, where
    it raises its error and every other rank a TrainingError: all stop at the same step
    instead of waiting for the failed rank until the timeout.
    """
    loss: float | torch.Tensor = math.nan
    if run.failure is None:
        try:
            loss, _params = _loss_and_grads(run, svi, batch)
        except Exception as exc:  # noqa: BLE001 -- raised by _train_epoch at the window's end
            run.failure = (exc, where)
    # Every parameter of the store, in name order: the same list on every rank.
    params = [p for _name, p in sorted(pyro.get_param_store().named_parameters())]
    if run.failure is not None:
        for p in params:
            p.grad = None
        loss = math.nan
    failed: float | torch.Tensor = float(run.failure is not None)
    deferred = [c.failed for c in pending()]  # this step's data checks: the others must stop
    if deferred and run.failure is None:
        failed = torch.stack(deferred).any().double()
    has_grad, means = dist_io.average_gradients(run.ctx, params, [loss, failed], where)
    run.window_failures = run.window_failures + means[1]
    stepped = {p for p, used in zip(params, has_grad) if used}
    svi.optim(stepped)
    pyro.infer.util.zero_grads(stepped)
    return means


class _AnotherRankFailed(Exception):
    """Raised by :class:`_ShareNewParams` instead of sharing a new parameter once another
    rank has failed in the window (it no longer runs the model, so it would never join the
    broadcast): this rank then fails its step too, and every rank stops at the window's end."""


class _ShareNewParams(Messenger):
    """Give a parameter first created during a step (not by the first batch) rank 0's initial
    value before it is used, so that every rank computes with the same parameters."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run

    def _pyro_param(self, msg: dict) -> None:
        # A rank whose step failed earlier in the window only joins the gradient averaging:
        # read the failures so far (one host read per new parameter) before broadcasting.
        if msg["name"] not in self.run.shared and float(self.run.window_failures) > 0:
            raise _AnotherRankFailed(msg["name"])

    def _pyro_post_param(self, msg: dict) -> None:
        name = msg["name"]
        if name in self.run.shared:
            return
        store = pyro.get_param_store()
        dist_io.broadcast_(self.run.ctx, [dict(store.named_parameters())[name]])
        self.run.shared.add(name)
        msg["value"] = store[name]  # the constrained value of the broadcast tensor


def _non_finite_params() -> list[str]:
    store = pyro.get_param_store()
    return [name for name, value in store.named_parameters() if not torch.isfinite(value).all()]


def _materialize_params(model: Callable, guide: Callable, batch: tuple, loss: Any) -> None:
    rng = torch.get_rng_state()
    with torch.no_grad(), pyro.poutine.block():
        guide_trace = pyro.poutine.trace(guide).get_trace(*batch)
        pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(*batch)
    torch.set_rng_state(rng)


def _optim_args_of(optim: Any, param_name: str) -> dict[str, Any]:
    """The hyperparameters ``optim`` gives the parameter ``param_name`` (as PyroOptim does)."""
    args = optim.pt_optim_args
    if not callable(args):
        return args
    if optim.pt_optim_args_argc == 1:
        return args(normalize_param_name(param_name))
    return args(module_from_param_with_module_name(param_name), user_param_name(param_name))


def _describe_optim(optim: Any, param_names: Iterable[str]) -> dict[str, Any]:
    """The optimizer's torch class and hyperparameters (per parameter if given by a function)."""
    desc: dict[str, Any] = {
        "constructor": checkpoint_io.qualname(getattr(optim, "pt_optim_constructor", optim))}
    args = getattr(optim, "pt_optim_args", None)
    if callable(args):
        desc["args"] = {name: checkpoint_io.plain(_optim_args_of(optim, name))
                        for name in sorted(param_names)}
    elif args is not None:
        desc["args"] = checkpoint_io.plain(args)
    clip = getattr(optim, "pt_clip_args", None)
    if clip:
        desc["clip_args"] = checkpoint_io.plain(clip)
    return desc


def _save_checkpoint(run: _Run, epoch: int, history: History) -> None:
    """Everything :func:`_restore` needs to continue after ``epoch`` completed epochs."""
    ranks = None
    if run.ctx is not None:  # each rank's own random numbers and loss state (PCD chains)
        ranks = dist_io.gather_objects(run.ctx, _rank_state(run), f"checkpointing epoch {epoch}")
        if not run.ctx.is_main:
            return
    optim_state = run.optim.get_state()
    state = {
        "version": CHECKPOINT_VERSION,
        "epoch": epoch,
        "param_store": checkpoint_io.param_store_state(),
        "modules": [m.state_dict() for m in run.modules()],
        "optim": optim_state,
        "loss": run.loss.state_dict() if hasattr(run.loss, "state_dict") else None,
        "rng": {**checkpoint_io.global_rng_state(), "shuffle": run.gen.get_state()},
        "history": history.to_dict(),
        "config": run.config(optim_state),
    }
    if ranks is not None:
        state["ranks"] = ranks
    checkpoint_io.save_atomic(state, run.checkpoint)
    checkpoint_io.write_text_atomic(json.dumps(history.to_dict(), indent=2),
                                    _history_path(run.checkpoint))


def _shared_checkpoint(run: _Run) -> dict[str, Any]:
    """The checkpoint as rank 0 reads it, on every rank (other nodes may have no copy)."""
    if run.ctx is None:
        return _load_checkpoint(run.checkpoint)
    loaded: tuple[str, Any] | None = None
    if run.ctx.is_main:
        try:
            loaded = ("state", _load_checkpoint(run.checkpoint))
        except CheckpointError as exc:
            loaded = ("error", exc)
    kind, value = dist_io.broadcast_object(run.ctx, loaded, "sharing the checkpoint")
    if kind == "error":
        raise value
    return value


def _rank_state(run: _Run) -> dict[str, Any]:
    return {"rng": checkpoint_io.global_rng_state(),
            "loss": run.loss.state_dict() if hasattr(run.loss, "state_dict") else None}


def _load_checkpoint(path: Path) -> dict[str, Any]:
    state = checkpoint_io.load(path)
    version = state.get("version") if isinstance(state, Mapping) else None
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} is not a pgm_lab.train.fit checkpoint: expected a dict "
                              f"with version {CHECKPOINT_VERSION}, got version {version!r}; "
                              "start afresh with resume=False")
    return state


def _restore(run: _Run, *, force: bool) -> tuple[History, int]:
    """Validate the checkpoint against ``run``, then restore params, optimizer, loss, RNGs.

    Everything that can be checked without touching state is checked first; the model's
    parameters are materialized (PyroModule parameters enter the param store lazily) before
    values are copied in place, so tensors shared by modules and the store stay shared.
    """
    require = checkpoint_io.require
    state = _shared_checkpoint(run)
    epoch = require(state, "epoch", int, "an int >= 0 (completed epochs)")
    if epoch < 0:
        raise CheckpointError(f"checkpoint key 'epoch': expected an int >= 0 (completed "
                              f"epochs), got {epoch}; the file is damaged, start afresh")
    history = _history_from(require(state, "history", Mapping, "a dict with 'epochs'"), epoch)
    saved_optim = require(state, "optim", Mapping, "a dict param name -> optimizer state")
    _check_config(run, require(state, "config", Mapping, "a dict (configuration)"),
                  saved_optim, force=force)
    optim_state = _optimizer_state(run.optim, saved_optim, force=force)
    modules = run.modules()
    saved_modules = require(state, "modules", list, f"a list of {len(modules)} state dicts")
    if len(saved_modules) != len(modules):
        raise CheckpointError(f"checkpoint key 'modules': expected {len(modules)} state dicts "
                              f"(the modules of model and guide), got {len(saved_modules)}; "
                              "resume with the same model and guide")
    for i in range(len(modules)):
        require(saved_modules, i, Mapping, "a module state dict", "modules")
    param_store = require(state, "param_store", Mapping, "a dict with 'params', 'constraints'")
    rng = require(state, "rng", Mapping, "a dict of RNG states")
    shuffle = require(rng, "shuffle", torch.Tensor, "a uint8 tensor (generator state)", "rng")
    own = _own_state(run, state)
    loss_state = state.get("loss") if own is None else own.get("loss")

    _materialize_params(run.model, run.guide, _first_batch(run), run.loss)
    with torch.no_grad():
        for i, (mod, sd) in enumerate(zip(modules, saved_modules)):
            try:
                mod.load_state_dict(sd)
            except (RuntimeError, TypeError) as exc:
                raise CheckpointError(f"checkpoint key 'modules[{i}]': expected the state of "
                                      f"{type(mod).__name__}, got one that does not match "
                                      f"({' '.join(str(exc).split())}); resume with the "
                                      "same model and guide") from exc
    checkpoint_io.restore_param_store(param_store)
    run.optim.set_state(optim_state)
    if loss_state is not None and hasattr(run.loss, "load_state_dict"):
        run.loss.load_state_dict(loss_state)
    if own is not None:
        checkpoint_io.set_global_rng_state(own["rng"], f"ranks[{run.ctx.rank}].rng")
    elif run.ctx is not None and run.ctx.rank:  # written by fewer ranks: fresh random numbers
        pyro.set_rng_seed((run.seed or 0) + run.ctx.rank + run.ctx.world_size * epoch)
    else:
        checkpoint_io.set_global_rng_state(rng)
    try:
        run.gen.set_state(shuffle)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint key 'rng.shuffle': expected a torch.Generator "
                              f"state, got {exc}") from exc
    return history, epoch


def _own_state(run: _Run, state: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """This rank's entry of the checkpoint's per-rank states, when written by as many ranks."""
    ranks = state.get("ranks")
    if run.ctx is None or not isinstance(ranks, list) or len(ranks) != run.ctx.world_size:
        return None
    where = f"ranks[{run.ctx.rank}]"
    own = checkpoint_io.require(ranks, run.ctx.rank, Mapping, "a dict with 'rng', 'loss'",
                                "ranks")
    checkpoint_io.require(own, "rng", Mapping, "a dict of RNG states", where)
    return own


def _history_from(state: Mapping[str, Any], epoch: int) -> History:
    require = checkpoint_io.require
    records = require(state, "epochs", list, f"a list of {epoch} epoch records", "history")
    if len(records) != epoch:
        raise CheckpointError(f"checkpoint key 'history.epochs': expected {epoch} records (one "
                              f"per completed epoch), got {len(records)}; the file is damaged")
    history = History()
    for i in range(epoch):
        where = f"history.epochs[{i}]"
        record = require(records, i, Mapping, "an epoch record", "history.epochs")
        history.epochs.append(EpochRecord(
            epoch=require(record, "epoch", int, "an int", where),
            loss=require(record, "loss", float, "a float", where),
            seconds=require(record, "seconds", (int, float), "a number", where),
            steps=require(record, "steps", int, "an int", where)))
    return history


def _check_config(run: _Run, saved: Mapping[str, Any], saved_optim: Mapping[str, Any], *,
                  force: bool) -> None:
    """Refuse another optimizer always, other settings or data unless ``force``."""
    new = run.config(saved_optim)
    old_optim = saved.get("optim")
    old_class = old_optim.get("constructor") if isinstance(old_optim, Mapping) else None
    if old_class != new["optim"]["constructor"]:
        raise CheckpointError(f"checkpoint key 'optim': expected the state of "
                              f"{new['optim']['constructor']} (the optimizer passed), got that "
                              f"of {old_class}; one optimizer's state cannot be loaded into "
                              "another: resume with the same optimizer, or start afresh")
    diffs = checkpoint_io.differences(saved, new)
    if diffs and not force:
        raise CheckpointError(
            f"cannot resume from {run.checkpoint}: expected the configuration and data it was "
            f"written with, got {len(diffs)} difference(s) (checkpoint -> now): "
            + "; ".join(diffs) + ". Pass the same settings and data, or resume='force' "
            "(--resume force on the command line) to continue with the new ones")


def _optimizer_state(optim: Any, saved: Mapping[str, Any], *, force: bool) -> dict[str, Any]:
    """The saved per-parameter optimizer states, validated; with ``force``, the hyperparameters
    of ``optim`` replace the saved ones (else the saved ones win, as in torch)."""
    out = {}
    for name in saved:
        entry = checkpoint_io.require(saved, name, Mapping, "an optimizer state dict", "optim")
        if "param_groups" in entry:
            where = f"optim.{name}"
            groups = checkpoint_io.require(entry, "param_groups", list, "a list of dicts", where)
            checkpoint_io.require(entry, "state", Mapping, "a dict", where)
            for i in range(len(groups)):
                checkpoint_io.require(groups, i, Mapping, "a param group dict",
                                      f"{where}.param_groups")
            if force and getattr(optim, "pt_optim_args", None) is not None:
                new_args = _optim_args_of(optim, name)
                entry = {**entry, "param_groups": [{**g, **new_args} for g in groups]}
        out[name] = entry
    return out
