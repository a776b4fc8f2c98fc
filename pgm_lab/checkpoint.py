"""Checkpoint files: atomic writes, loading that runs no code, validation, fingerprints.

A checkpoint holds only tensors and plain Python values (``dict``, ``list``, ``tuple``,
``str``, ``int``, ``float``, ``bool``, ``None``), so it loads with
``torch.load(weights_only=True)``: torch's restricted unpickler, which imports and calls
nothing else. A file that needs more (e.g. a crafted pickle whose ``__reduce__`` would run a
command) is refused with :class:`~pgm_lab.errors.CheckpointError` before anything in it runs.

Writes go to a temporary file ``.<name>.<pid>.tmp`` beside the target, are fsynced, then
renamed over it (``os.replace`` is atomic on POSIX and Windows): a crash leaves the previous
file or the new one, never a torn file, and :func:`remove_stale_temporaries` deletes the
temporary files of writers that were killed.

The :func:`require` helpers validate what was loaded, so malformed contents raise
``CheckpointError`` naming the key and what was expected instead of a ``KeyError`` deep in a
restore; :func:`data_fingerprint`, :func:`describe` and :func:`differences` let a trainer
refuse to resume with another configuration or other data.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyro
import pyro.distributions.constraints as constraints
import torch

from .errors import CheckpointError

__all__ = [
    "check_plain",
    "save_atomic",
    "write_text_atomic",
    "load",
    "check_writable",
    "remove_stale_temporaries",
    "require",
    "data_fingerprint",
    "describe",
    "differences",
    "qualname",
    "plain",
    "global_rng_state",
    "set_global_rng_state",
    "param_store_state",
    "restore_param_store",
]

_PLAIN = (str, int, float, bool, type(None))


def check_plain(obj: Any, key: str = "state") -> None:
    """Raise :class:`CheckpointError` unless ``obj`` loads with ``weights_only=True``.

    Accepted: tensors and ``dict`` (string or int keys) / ``list`` / ``tuple`` trees of them
    and of ``str``, ``int``, ``float``, ``bool``, ``None``. ``key`` names ``obj`` in the message.
    """
    if isinstance(obj, _PLAIN) or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{key}: expected str or int keys, got {type(k).__name__} "
                                      f"key {k!r}")
            check_plain(v, f"{key}.{k}")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_plain(v, f"{key}[{i}]")
        return
    raise CheckpointError(f"{key}: expected tensors and plain Python values only, got "
                          f"{type(obj).__module__}.{type(obj).__qualname__}; convert it to "
                          "tensors / plain types so the checkpoint loads with weights_only=True")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    tmp = _temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_atomic(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """``torch.save(state)`` to a temporary file in the same folder, fsync, then rename.

    ``state`` is checked with :func:`check_plain` first, so every file written here loads
    with ``torch.load(weights_only=True)``. The parent folder is created if missing.
    """
    check_plain(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: torch.save(state, f))


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`save_atomic`."""
    _write_atomic(Path(path), lambda f: f.write(text.encode()))


def load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, every failure a CheckpointError.

    A file holding anything but tensors and plain values is refused without running any of
    it (``weights_only=True`` neither imports nor calls what the pickle names).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"refused checkpoint {path}: expected a torch file of only "
                              "tensors and plain Python values, got a file that is corrupt or "
                              f"needs code to load ({first}); nothing in it was run. Load only "
                              "checkpoints you wrote") from exc
    except Exception as exc:  # noqa: BLE001 -- truncated zip, bad magic, I/O error...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}; "
                              "delete it or start without resume") from exc


def check_writable(path: str | os.PathLike, name: str = "checkpoint") -> Path:
    """Refuse a path a file cannot be written to, before any work is done; returns it.

    Refused: an existing directory, a parent that is a file, a folder where no file can be
    created (probed by creating and deleting the temporary file :func:`save_atomic` would
    write, which also works for root, whom permission bits do not stop).
    Missing parent folders are created.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{name} must be a file path, got the directory {str(path)!r}; "
                              f"try {str(path / 'checkpoint.pt')!r}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CheckpointError(f"{name} {str(path)!r}: expected a folder as parent, got "
                                      f"the file {str(parent)!r}; choose another path")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = _temporary(path)  # the writer's own name: if killed here, a stale temporary
        probe.open("wb").close()
        probe.unlink()
    except OSError as exc:
        raise CheckpointError(f"{name} {str(path)!r} is not writable: expected a folder where "
                              f"files can be created, got {exc.strerror or exc}; choose "
                              "another path") from exc
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not writing: its own leftovers are stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user) or cannot tell: keep its file
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files beside ``path`` left by dead writers; returns them.

    A writer killed between creating its temporary file and renaming it (see
    :func:`save_atomic`) leaves that file behind; a temporary file of a live process is kept.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 : -len(".tmp")]
        if pid.isascii() and pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def require(state: Any, key: str | int, expected: type | tuple[type, ...], what: str,
            where: str = "") -> Any:
    """``state[key]`` (a dict key, or a list index), checked to be an ``expected`` instance.

    Anything else -- ``state`` not a dict / list, ``key`` missing, a value of another type --
    raises :class:`CheckpointError` naming the dotted key and what was expected.

    ``what`` says in words what was expected (e.g. ``"an int >= 0"``), ``where`` is the dotted
    path of ``state`` in the checkpoint. ``bool`` never counts as ``int``.
    """
    if isinstance(key, int):
        full = f"{where}[{key}]"
        if not isinstance(state, (list, tuple)):
            raise CheckpointError(f"checkpoint key {where!r}: expected a list, got "
                                  f"{type(state).__name__}")
        if not 0 <= key < len(state):
            raise CheckpointError(f"checkpoint key {full!r} is missing: expected {what}")
    else:
        full = f"{where}.{key}" if where else key
        if not isinstance(state, Mapping):
            raise CheckpointError(f"checkpoint key {where or 'top level'!r}: expected a dict, "
                                  f"got {type(state).__name__}")
        if key not in state:
            raise CheckpointError(f"checkpoint key {full!r} is missing: expected {what}")
    value = state[key]
    types = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise CheckpointError(f"checkpoint key {full!r}: expected {what}, got "
                              f"{_short(value)}")
    return value


def _short(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def data_fingerprint(tensors: Iterable[torch.Tensor]) -> dict[str, Any]:
    """Shapes, dtypes and the SHA-256 of the bytes of ``tensors`` (plain values).

    Two data sets get the same fingerprint only if they hold the same values in the same
    order. Hashing reads each tensor once: 0.3 s for MNIST's 60000x784 float32 on one core.
    """
    digest = hashlib.sha256()
    shapes, dtypes = [], []
    for t in tensors:
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        shapes.append(list(t.shape))
        dtypes.append(str(t.dtype))
        digest.update(str((tuple(t.shape), t.dtype)).encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return {"shapes": shapes, "dtypes": dtypes, "sha256": digest.hexdigest()}


def describe(obj: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """A plain description of a configuration object: its class and plain public attributes.

    E.g. ``describe(IWAE(num_particles=5))`` holds ``num_particles=5`` and
    ``estimator="standard"``; tensors, generators and private attributes (state, not
    configuration) are left out, as are the attribute names in ``skip``.
    """
    out: dict[str, Any] = {"class": qualname(obj)}
    for k, v in sorted(getattr(obj, "__dict__", {}).items()):
        if not k.startswith("_") and k not in skip and isinstance(v, _PLAIN):
            out[k] = v
    return out


def qualname(obj: Any) -> str | None:
    """``module.QualName`` of a class, function or instance (``None`` for ``None``)."""
    if obj is None:
        return None
    named = isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__"))
    target = obj if named else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def plain(value: Any) -> Any:
    """``value`` as plain data for a description: tuples become lists, other objects names."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return qualname(value) if isinstance(value, type) or callable(value) else repr(value)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every leaf (dotted key) of two nested dicts that differs."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append(f"{k}: {'(none)' if va is missing else repr(va)} -> "
                       f"{'(none)' if vb is missing else repr(vb)}")
    return out


# ---- random number generators --------------------------------------------------------------

_MT_WORDS = 624  # MT19937 state words (numpy's legacy RandomState; python's random has 625)


def global_rng_state() -> dict[str, Any]:
    """The states of torch's (CPU and CUDA), numpy's legacy and python's global RNGs.

    As tensors and plain values: numpy's ``(name, uint32[624], pos, has_gauss, gauss)`` tuple
    becomes a dict with an int64 tensor, python's ``(version, 625 ints, gauss_next)`` a dict.
    """
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 -- pyro seeds it
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": int(version), "internal": list(internal),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_global_rng_state(state: Any, where: str = "rng") -> None:
    """Restore :func:`global_rng_state`; malformed entries raise CheckpointError naming them."""
    torch_state = require(state, "torch", torch.Tensor, "a uint8 tensor (torch RNG state)",
                          where)
    np_state = require(state, "numpy", Mapping, "a dict (numpy RNG state)", where)
    py_state = require(state, "python", Mapping, "a dict (python RNG state)", where)
    keys = require(np_state, "keys", torch.Tensor, f"an int64 tensor of {_MT_WORDS} words",
                   f"{where}.numpy")
    np_tuple = (require(np_state, "name", str, "'MT19937'", f"{where}.numpy"),
                keys.numpy().astype(np.uint32),
                require(np_state, "pos", int, "an int", f"{where}.numpy"),
                require(np_state, "has_gauss", int, "an int", f"{where}.numpy"),
                require(np_state, "gauss", float, "a float", f"{where}.numpy"))
    internal = require(py_state, "internal", list, f"a list of {_MT_WORDS + 1} ints",
                       f"{where}.python")
    gauss_next = require(py_state, "gauss_next", (float, type(None)), "a float or None",
                         f"{where}.python")
    py_tuple = (require(py_state, "version", int, "an int", f"{where}.python"),
                tuple(internal), gauss_next)
    if keys.shape != (_MT_WORDS,):
        raise CheckpointError(f"checkpoint key '{where}.numpy.keys': expected {_MT_WORDS} "
                              f"words, got shape {tuple(keys.shape)}; the file is damaged")
    if len(internal) != _MT_WORDS + 1 or not all(type(w) is int for w in internal):
        raise CheckpointError(f"checkpoint key '{where}.python.internal': expected "
                              f"{_MT_WORDS + 1} ints, got {len(internal)} values; the file is "
                              "damaged")
    cuda = state.get("cuda")
    for key, restore, value in (("torch", torch.set_rng_state, torch_state),
                                ("numpy", np.random.set_state, np_tuple),  # noqa: NPY002
                                ("python", random.setstate, py_tuple)):
        try:
            restore(value)
        except (TypeError, ValueError, RuntimeError, OverflowError, IndexError) as exc:
            raise CheckpointError(f"checkpoint key '{where}.{key}': expected a valid RNG "
                                  f"state, got one that is refused ({exc})") from exc
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ---- Pyro's param store ----------------------------------------------------------------------

def _encode_constraint(c: constraints.Constraint) -> dict[str, Any]:
    for name, value in vars(constraints).items():
        if value is c:
            return {"name": name}
    args: dict[str, Any] = {}
    for k, v in vars(c).items():
        if isinstance(v, constraints.Constraint):
            args[k] = _encode_constraint(v)
        elif isinstance(v, (bool, int, float, torch.Tensor)):
            args[k] = v
        else:
            return {"repr": repr(c)}
    return {"class": type(c).__name__, "args": args}


def _decode_constraint(code: Any, where: str) -> constraints.Constraint:
    """The constraint :func:`_encode_constraint` described; only pyro/torch constraint classes
    are built (as pickle would: a bare instance with its attributes set, no call)."""
    if isinstance(code, Mapping) and isinstance(code.get("name"), str):
        value = getattr(constraints, code["name"], None)
        if isinstance(value, constraints.Constraint):
            return value
    if isinstance(code, Mapping) and isinstance(code.get("args"), Mapping):
        cls = getattr(constraints, str(code.get("class")), None) or \
            getattr(torch.distributions.constraints, str(code.get("class")), None)
        if isinstance(cls, type) and issubclass(cls, constraints.Constraint):
            obj = cls.__new__(cls)
            for k, v in code["args"].items():
                setattr(obj, str(k), _decode_constraint(v, f"{where}.{k}")
                        if isinstance(v, Mapping) else v)
            return obj
    raise CheckpointError(f"checkpoint key {where!r}: expected a pyro constraint (name or class "
                          f"and args), got {_short(code)}; the parameter must be created by the "
                          "model or guide before it can be restored")


def param_store_state() -> dict[str, Any]:
    """Pyro's param store as ``{"params": {name: unconstrained tensor}, "constraints": ...}``
    with each constraint described by plain values (its name, or class and arguments)."""
    store = pyro.get_param_store().get_state()
    return {"params": store["params"],
            "constraints": {k: _encode_constraint(c) for k, c in store["constraints"].items()}}


def restore_param_store(saved: Any, where: str = "param_store") -> None:
    """Copy saved values into the live param store, in place (tensors shared with modules stay
    shared); a saved parameter the store lacks is added with its saved constraint.

    Raises:
        CheckpointError: malformed entries, or a parameter whose shape or dtype differs from
            the live one (another architecture).
    """
    params = require(saved, "params", Mapping, "a dict name -> tensor", where)
    codes = require(saved, "constraints", Mapping, "a dict name -> constraint", where)
    store = pyro.get_param_store()
    checked = {}
    for name in params:
        value = require(params, name, torch.Tensor, "a tensor", f"{where}.params")
        live = store._params.get(name)
        if live is not None and (live.shape != value.shape or live.dtype != value.dtype):
            raise CheckpointError(f"checkpoint key {where}.params.{name}: expected "
                                  f"{_short(live.detach())} (the model's), got {_short(value)}; "
                                  "resume with the same model and guide, or start afresh")
        constraint = None if live is not None else \
            _decode_constraint(codes.get(name), f"{where}.constraints.{name}")
        checked[name] = (value, constraint)
    with torch.no_grad():
        for name, (value, constraint) in checked.items():
            if constraint is None:
                store._params[name].copy_(value)
            else:  # what ParamStoreDict.__setitem__ does, for an unconstrained value
                param = value.clone().requires_grad_()
                store._params[name] = param
                store._param_to_name[param] = name
                store._constraints[name] = constraint
