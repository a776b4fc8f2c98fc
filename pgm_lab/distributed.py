"""Data parallelism on :mod:`torch.distributed`, for processes started by ``torchrun``.

Training (:func:`pgm_lab.train.fit`) and the per-point bounds (:mod:`pgm_lab.infer.bounds`)
use the helpers here: join or reuse the process group (:func:`init_process_group`), share the
work of a minibatch or of a data set among ranks (:func:`shard`), broadcast parameters from
rank 0 (:func:`broadcast_`), average gradients in a few flat buckets rather than one call per
tensor (:func:`average_gradients`, as ``torch.nn.parallel.DistributedDataParallel`` does), and
gather per-point results back in data order (:func:`evaluate_sharded`).

Every collective runs under the process group's timeout; one that fails (a rank died: its
socket closed, or it stopped answering within the timeout) raises a :class:`TrainingError`
(or :class:`InferenceError`) on the ranks still alive that names the rank and the operation,
instead of hanging.

Reference: Li et al. (2020), "PyTorch Distributed: Experiences on Accelerating Data Parallel
Training" (gradient bucketing).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from .errors import ConfigError, InferenceError, PgmLabError, TrainingError

__all__ = ["Context", "DEFAULT_TIMEOUT", "BUCKET_BYTES", "launched", "init_process_group",
           "context", "current", "is_main_process", "leave", "shard", "broadcast_",
           "average_gradients", "broadcast_object", "gather_objects", "any_rank",
           "evaluate_sharded"]

#: How long a collective waits for the other ranks before failing (a dead or stalled rank).
DEFAULT_TIMEOUT = timedelta(minutes=5)
#: Gradients are averaged in flat buckets of at most this many bytes (DDP's default is 25 MiB).
BUCKET_BYTES = 25 * 2**20


@dataclass(frozen=True)
class Context:
    """This process's place in the process group: ``rank`` of ``world_size``."""

    rank: int
    world_size: int
    timeout: timedelta | None  # None: a group created elsewhere, with its own timeout

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the one that writes checkpoints and shows progress."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_process_group(device: torch.device | None = None,
                       timeout: timedelta = DEFAULT_TIMEOUT) -> Context:
    """Join the process group described by torchrun's environment, or reuse the existing one.

    The backend is NCCL for a CUDA ``device`` (each process then uses GPU ``LOCAL_RANK``) and
    gloo otherwise. ``timeout`` bounds every collective (an existing group keeps its own).

    Raises:
        ConfigError: torch was built without distributed support, or the process was not
            started by torchrun and no group exists.
    """
    if not dist.is_available():
        raise ConfigError("expected a torch build with torch.distributed, got one without; "
                          "pass distributed=False")
    if not dist.is_initialized():
        if not launched():
            raise ConfigError("distributed training needs the environment torchrun sets "
                              "(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), got none; start "
                              "with `torchrun --nproc_per_node=N script.py` or pass "
                              "distributed=False")
        cuda = device is not None and device.type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        _joined["timeout"] = timeout
    return current()


_joined: dict[str, timedelta] = {}  # the timeout of the group init_process_group created


def current() -> Context | None:
    """The :class:`Context` of the existing process group, or ``None`` if there is none."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   timeout=_joined.get("timeout"))


def is_main_process() -> bool:
    """Whether this process should write files and print: rank 0, or no process group."""
    ctx = current()
    return ctx is None or ctx.is_main


def leave() -> None:
    """Wait for every rank, then leave the process group (if any).

    Rank 0 hosts the rendezvous store: a rank still using it when rank 0 exits would abort.
    """
    ctx = current()
    if ctx is None:
        return
    with _collective(ctx, "waiting for the other ranks to finish", TrainingError):
        dist.barrier()
    dist.destroy_process_group()
    _joined.clear()


def context(distributed: bool | str, device: torch.device | None = None) -> Context | None:
    """What ``distributed`` asks for: ``"auto"`` joins a group when started by torchrun (or
    reuses an existing one), ``True`` requires one, ``False`` never touches torch.distributed.

    Returns ``None`` (run as a single process) also for a world of one process.
    """
    if distributed is False:
        return None
    if distributed == "auto":
        if not (dist.is_available() and (dist.is_initialized() or launched())):
            return None
    elif distributed is not True:
        raise ConfigError(f"distributed must be 'auto', True or False, got {distributed!r}")
    ctx = init_process_group(device)
    return ctx if ctx.world_size > 1 else None


def shard(n: int, ctx: Context | None) -> slice:
    """This rank's contiguous share of ``n`` rows (``torch.tensor_split``'s sizes: the first
    ``n % world_size`` ranks take one row more)."""
    if ctx is None:
        return slice(0, n)
    size, extra = divmod(n, ctx.world_size)
    start = ctx.rank * size + min(ctx.rank, extra)
    return slice(start, start + size + (ctx.rank < extra))


@contextmanager
def _collective(ctx: Context, what: str, error: type[PgmLabError]) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # gloo/NCCL: a peer closed its socket, or the timeout passed
        reason = " ".join(str(exc).split())[:300]
        within = ("the process group's timeout" if ctx.timeout is None
                  else f"{ctx.timeout.total_seconds():g} s")
        raise error(f"rank {ctx.rank} of {ctx.world_size}: {what} failed ({reason}); expected "
                    f"every rank to take part within {within}, got a rank that died or "
                    "stalled (see its log); restart all ranks (with resume=True to continue "
                    "from the last checkpoint)") from exc


def _buckets(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by dtype and device, at most :data:`BUCKET_BYTES` each."""
    groups: dict[tuple, list[list[int]]] = {}
    sizes: dict[tuple, int] = {}
    for i, t in enumerate(tensors):
        key = (t.dtype, t.device)
        nbytes = t.numel() * t.element_size()
        if key not in groups or sizes[key] + nbytes > BUCKET_BYTES:
            groups.setdefault(key, []).append([])
            sizes[key] = 0
        groups[key][-1].append(i)
        sizes[key] += nbytes
    return [bucket for buckets in groups.values() for bucket in buckets]


def broadcast_(ctx: Context, tensors: Sequence[torch.Tensor], *,
               error: type[PgmLabError] = TrainingError) -> None:
    """Overwrite ``tensors`` in place with rank 0's values, one broadcast per bucket."""
    with torch.no_grad(), _collective(ctx, "broadcasting the parameters", error):
        for bucket in _buckets(tensors):
            flat = _flatten_dense_tensors([tensors[i].detach() for i in bucket])
            dist.broadcast(flat, src=0)
            for i, value in zip(bucket, _unflatten_dense_tensors(flat, [tensors[i]
                                                                        for i in bucket])):
                tensors[i].copy_(value)


def average_gradients(ctx: Context, params: Sequence[torch.Tensor],
                      scalars: Sequence[float | torch.Tensor], where: str
                      ) -> tuple[list[bool], torch.Tensor]:
    r"""Replace each ``p.grad`` by its mean over ranks; also average ``scalars`` (the loss).

    ``params`` must be listed in the same order on every rank. A missing gradient counts as
    zero; one missing on every rank stays ``None``. The scalars (floats or 0-d tensors) and a
    has-gradient flag per parameter ride in the first bucket, so a step costs one all-reduce
    per bucket. Nothing is read to the host when this rank has every gradient (then every
    parameter has one somewhere): on a GPU the step does not wait for the reduction.

    Returns:
        ``(has_grad, scalar_means)``: per parameter whether any rank had a gradient, and a
        1-d tensor (on the gradients' device, in their dtype) of the scalars' means.
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    local = [p.grad is not None for p in params]
    buckets = _buckets(grads) or [[]]
    with torch.no_grad(), _collective(ctx, f"averaging gradients at {where}", TrainingError):
        for b, bucket in enumerate(buckets):
            parts = [grads[i] for i in bucket]
            if b == 0:
                ref = parts[0] if parts else torch.zeros((), dtype=torch.float64)
                flags = (torch.ones(len(params), dtype=ref.dtype, device=ref.device)
                         if all(local) else torch.tensor(local, device=ref.device).to(ref))
                parts = parts + [torch.cat([flags, *(_element(v, ref) for v in scalars)])]
            flat = _flatten_dense_tensors(parts)
            dist.all_reduce(flat)
            flat /= ctx.world_size
            reduced = _unflatten_dense_tensors(flat, parts)
            if b == 0:
                any_grad, means = reduced[-1][:len(params)], reduced[-1][len(params):]
            for i, value in zip(bucket, reduced):
                params[i].grad = value
    has_grad = [True] * len(params) if all(local) else [f > 0 for f in any_grad.tolist()]
    for p, used in zip(params, has_grad):
        if not used:
            p.grad = None
    return has_grad, means


def _element(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` as a 1-element tensor of ``like``'s dtype and device, made there: no copy of
    host memory to a GPU, which waits for the stream unless the memory is pinned."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(like).reshape(1)
    return torch.full((1,), float(value), dtype=like.dtype, device=like.device)


def broadcast_object(ctx: Context, obj: Any, what: str) -> Any:
    """Rank 0's picklable ``obj`` on every rank (the other ranks' ``obj`` is ignored)."""
    box = [obj if ctx.is_main else None]
    with _collective(ctx, what, TrainingError):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: Context, obj: Any, what: str) -> list[Any] | None:
    """Every rank's picklable ``obj`` on rank 0 (in rank order); ``None`` on other ranks."""
    out = [None] * ctx.world_size if ctx.is_main else None
    with _collective(ctx, what, TrainingError):
        dist.gather_object(obj, out, dst=0)
    return out


def any_rank(ctx: Context, flag: bool, what: str) -> bool:
    """Whether ``flag`` is true on any rank (e.g. a callback asked to stop)."""
    t = torch.tensor([float(flag)])
    with _collective(ctx, what, TrainingError):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _gather_rows(ctx: Context, value: Any, n: int, local: int) -> Any:
    """Concatenate each rank's ``[local, ...]`` tensors of a (nested) result along dim 0."""
    if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == local:
        size = -(-n // ctx.world_size)  # all_gather needs equal shapes: pad to the largest
        padded = value.new_zeros((size, *value.shape[1:]))
        padded[:local] = value
        parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
        with _collective(ctx, "gathering per-point results", InferenceError):
            dist.all_gather(parts, padded.contiguous())
        rows = [shard(n, Context(r, ctx.world_size, None)) for r in range(ctx.world_size)]
        return torch.cat([p[: s.stop - s.start] for p, s in zip(parts, rows)])
    if isinstance(value, dict):
        return {k: _gather_rows(ctx, v, n, local) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_gather_rows(ctx, v, n, local) for v in value))
    return value


def _check_same_data(ctx: Context, x: torch.Tensor) -> None:
    """Refuse data that differ between ranks (compared by row count and two float64 sums)."""
    rows = x.detach().reshape(x.shape[0], -1)
    order = torch.arange(1, x.shape[0] + 1, dtype=torch.float64, device=x.device)
    mine = torch.stack([torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
                        rows.sum(dtype=torch.float64), rows.sum(1, dtype=torch.float64) @ order])
    every = [torch.empty_like(mine) for _ in range(ctx.world_size)]
    with _collective(ctx, "comparing the data of the ranks", InferenceError):
        dist.all_gather(every, mine)
    for rank, theirs in enumerate(every):
        if not torch.allclose(theirs, every[0], rtol=1e-9, atol=0.0):
            raise InferenceError(f"sharded evaluation expected the same data on every rank, got "
                                 f"other data on rank {rank} than on rank 0; pass every rank "
                                 "the same tensor, or evaluate outside the process group")


def _rank_seed(common: int, rank: int) -> int:
    """The 63-bit seed of ``rank``'s stream: word 0 of NumPy's
    ``SeedSequence(common, spawn_key=(rank,))``, shifted right by one bit.

    ``SeedSequence`` hashes its entropy and spawn key so that the streams of different keys
    are independent for all practical purposes, also for consecutive ``common`` seeds
    (O'Neill, "Developing a seed_seq Alternative", 2015; NumPy's parallel random generation).
    """
    word = np.random.SeedSequence(common, spawn_key=(rank,)).generate_state(1, np.uint64)[0]
    return int(word) >> 1


def _cuda_devices(args: tuple) -> list[int]:
    """CUDA devices whose generators a sharded evaluation forks: the current one once CUDA is
    in use, and those of tensor arguments (CUDA is never initialized here)."""
    devices = {a.device.index for a in args
               if isinstance(a, torch.Tensor) and a.device.type == "cuda"}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices.add(torch.cuda.current_device())
    return sorted(d for d in devices if d is not None)


@contextmanager
def _rank_stream(seed: int, cuda_devices: Sequence[int]) -> Iterator[None]:
    """Inside: the global generators Pyro's ``set_rng_seed`` seeds (torch's CPU generator and
    those of ``cuda_devices``, NumPy's legacy one with ``seed % 2**32``, Python's ``random``)
    seeded from ``seed``; on exit all are restored. Other CUDA devices are left alone (unlike
    ``torch.manual_seed``, which would also queue a seed for every device)."""
    numpy_state, python_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    with torch.random.fork_rng(devices=cuda_devices, device_type="cuda"):
        try:
            torch.default_generator.manual_seed(seed)
            for device in cuda_devices:
                torch.cuda.default_generators[device].manual_seed(seed)
            np.random.seed(seed % 2**32)  # noqa: NPY002 -- the legacy global that Pyro seeds
            random.seed(seed)
            yield
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
            random.setstate(python_state)


def evaluate_sharded(fn: Callable[..., Any], args: tuple, *, seed: int | None = None) -> Any:
    r"""``fn(*args)`` with the data rows shared among the ranks of the existing process group.

    Each rank calls ``fn`` on its :func:`shard` of every tensor argument whose first dimension
    equals ``args[0]``'s (``N``); tensors of the result with the shard's length as first
    dimension (also inside dicts and named tuples) are gathered, so every rank returns the
    full ``[N, ...]`` result in data order. Without a group of two or more processes, or with
    fewer rows than processes, every process evaluates everything (``fn(*args)``, nothing
    else). All ranks must call it with the same data.

    Random numbers: each rank's shard is evaluated with its own stream, so the per-point
    estimates of different shards have independent errors (their mean and standard error over
    the data mean what they do in one process). Every rank first draws one common seed
    :math:`s \in [0, 2^{63} - 1)` from torch's global CPU generator (the same draw on every rank
    when, as after ``torch.manual_seed(seed)`` on every rank, all start from the same state),
    then rank :math:`r` runs ``fn`` with the global generators (torch's CPU one and the CUDA
    ones in use, NumPy's legacy one, Python's ``random``) seeded with a 63-bit hash of
    :math:`(s, r)` (NumPy's ``SeedSequence(s, spawn_key=(r,))``: independent streams for all
    practical purposes), and restores them afterwards: every rank leaves with the state one draw
    after the one it came with. A sharded result therefore equals the single-process one in
    distribution, not bit for bit; it is reproducible for a given seed and world size, and
    the same on every rank. One process (or world size 1) draws nothing and is unchanged.

    Args:
        fn: the per-point evaluation, returning tensors (or dicts / named tuples of them).
        args: its positional arguments; ``args[0]`` holds the ``N`` data rows.
        seed: for an ``fn`` that seeds its own randomness from a ``seed`` keyword argument
            (e.g. :func:`pgm_lab.infer.ais`): ``s = seed`` instead of the draw (the global
            state is then left as it was), and ``fn`` is called with ``seed=seed`` in one
            process and with rank ``r``'s hash of ``(seed, r)`` on its shard.

    Raises:
        ConfigError: ``seed`` is not an int in :math:`[0, 2^{63})` (sharded evaluation).
        InferenceError: ``args[0]`` differs between ranks (e.g. data drawn after seeding each
            rank differently), or a rank died or stalled during a collective.
    """
    ctx = current()
    call = fn if seed is None else (lambda *a, s=seed: fn(*a, seed=s))
    if ctx is None or ctx.world_size == 1 or not args or not isinstance(args[0], torch.Tensor) \
            or args[0].dim() == 0 or args[0].shape[0] < ctx.world_size:
        return call(*args)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**63):
        raise ConfigError(f"seed must be an int in [0, 2**63), got {seed!r}")
    _check_same_data(ctx, args[0])
    common = int(torch.randint(0, 2**63 - 1, ()).item()) if seed is None else seed
    mine = _rank_seed(common, ctx.rank)
    n = args[0].shape[0]
    rows = shard(n, ctx)
    with _rank_stream(mine, _cuda_devices(args)):
        local = fn(*(a[rows] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == n
                     else a for a in args), **({} if seed is None else {"seed": mine}))
    return _gather_rows(ctx, local, n, rows.stop - rows.start)
