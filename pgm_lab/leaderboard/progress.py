"""The progress file of a leaderboard run: the entries finished so far, so a killed run resumes.

After each entry the run rewrites ``leaderboard_progress.json`` in its output folder,
atomically (:func:`pgm_lab.checkpoint.write_text_atomic`: a kill leaves the previous file or
the new one). The file is JSON only -- nothing in it is executed when it is read -- and holds::

    {"format": "pgm_lab leaderboard progress", "version": 1,
     "config": {"seed", "quick", "scale", "versions", "data"},
     "entries": [{"label", "rows": [<leaderboard.json entry>, ...],
                  "samples": [[pixel, ...] x 10], "files": [name, ...]}, ...]}

``rows`` are the entry's leaderboard rows, ``samples`` its ten sample images
(``[10, D]`` floats in ``[0, 1]``, float32 values written exactly) for ``samples.png``,
``files`` what it wrote into the folder (its artifact and figures). A resumed run
(:meth:`Progress.resume`) reuses an entry only if the file was written with the same
configuration (``--seed``, ``--quick`` and its sizes, the pgm_lab and torch versions, the
fingerprints of the train and test images) and all of the entry's files still exist; the
artifacts themselves are not read here (they load with ``weights_only=True`` or the BIF
reader, as after an uninterrupted run).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoint import data_fingerprint, differences, require, write_text_atomic
from ..errors import CheckpointError
from .entries import Entry, Scale

__all__ = ["PROGRESS_FILE", "Finished", "Progress", "run_config"]

PROGRESS_FILE = "leaderboard_progress.json"
_FORMAT = "pgm_lab leaderboard progress"
_VERSION = 1
_FLAGS = {"seed": "--seed", "quick": "--quick"}  # config keys set by a command-line flag


def run_config(seed: int, quick: bool, scale: Scale, x_train: torch.Tensor,
               x_test: torch.Tensor) -> dict[str, Any]:
    """The configuration a progress file records and a resumed run must match (plain values).

    ``x_train`` are the grey-level train images every entry's data derive from (the statically
    binarized ones with ``seed``), ``x_test`` the binarized test images; both enter by
    :func:`pgm_lab.checkpoint.data_fingerprint` (shape, dtype, SHA-256 of the bytes).
    """
    return {"seed": seed, "quick": quick, "scale": asdict(scale),
            "versions": {"pgm_lab": __version__, "torch": torch.__version__},
            "data": {"train": data_fingerprint([x_train]), "test": data_fingerprint([x_test])}}


@dataclass
class Finished:
    """A finished entry: its leaderboard ``rows``, ``samples [10, D]`` and ``files``."""

    rows: list[Entry]
    samples: torch.Tensor
    files: list[str]


class Progress:
    """The finished entries of one run in ``out``, kept in ``out / PROGRESS_FILE``.

    Make one with :meth:`start` (a fresh run: an existing file is overwritten) or
    :meth:`resume`; :meth:`finished` returns what a resumed run may reuse, :meth:`record`
    adds an entry and rewrites the file.
    """

    def __init__(self, out: str | os.PathLike, config: Mapping[str, Any],
                 entries: Mapping[str, Finished] | None = None) -> None:
        self.out = Path(out)
        self.path = self.out / PROGRESS_FILE
        self.config = dict(config)
        self.entries: dict[str, Finished] = dict(entries or {})

    @classmethod
    def start(cls, out: str | os.PathLike, config: Mapping[str, Any]) -> Progress:
        """A fresh run: writes a progress file without entries over any existing one."""
        progress = cls(out, config)
        progress._write()
        return progress

    @classmethod
    def resume(cls, out: str | os.PathLike, config: Mapping[str, Any]) -> Progress:
        """The entries of ``out``'s progress file, or a fresh run when there is none.

        Raises:
            CheckpointError: the file is not a progress file this version wrote (not JSON,
                keys missing or of the wrong type, samples not ``[10, D]`` in ``[0, 1]``), or
                it was written with another configuration (the message names each
                difference, ``--seed: 0 -> 1``).
        """
        path = Path(out) / PROGRESS_FILE
        if not path.exists():
            return cls.start(out, config)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)
            entries = _parse(saved)
        except (OSError, UnicodeDecodeError, ValueError, CheckpointError) as exc:
            detail = " ".join(str(exc).split())
            raise CheckpointError(
                f"cannot resume from {path}: expected a leaderboard progress file, got one "
                f"that is damaged ({type(exc).__name__}: {detail}); delete it or run without "
                "--resume to start afresh") from exc
        diffs = _config_differences(saved["config"], config)
        if diffs:
            raise CheckpointError(
                f"cannot resume from {path}: expected the configuration it was written with, "
                f"got {len(diffs)} difference(s) (progress file -> now): " + "; ".join(diffs)
                + ". Pass the same flags, or run without --resume to start afresh (the "
                "progress file is then overwritten)")
        return cls(out, config, entries)

    def finished(self, label: str) -> Finished | None:
        """The recorded entry ``label`` if all its files are still in ``out``, else ``None``
        (the entry is trained again)."""
        done = self.entries.get(label)
        if done is None or not all((self.out / f).is_file() for f in done.files):
            return None
        return done

    def record(self, label: str, rows: Sequence[Entry], samples: torch.Tensor,
               files: Sequence[str]) -> Finished:
        """Add the finished entry ``label`` (``samples [10, D]``) and rewrite the file."""
        done = Finished(list(rows), samples.detach().float().cpu(), list(files))
        self.entries[label] = done
        self._write()
        return done

    def _write(self) -> None:
        state = {"format": _FORMAT, "version": _VERSION, "config": self.config,
                 "entries": [{"label": label, "rows": [asdict(r) for r in done.rows],
                              "samples": done.samples.tolist(), "files": done.files}
                             for label, done in self.entries.items()]}
        write_text_atomic(json.dumps(state, allow_nan=False), self.path)


def _no_constant(name: str) -> None:
    raise ValueError(f"expected finite numbers, got {name}")


def _config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``differences`` with flags named as flags; the sizes follow from ``--quick``, so they
    are listed only when ``--quick`` is the same (then the code's sizes changed)."""
    diffs = differences(saved, new)
    if saved.get("quick") != new.get("quick"):
        diffs = [d for d in diffs if not d.startswith("scale.")]
    named = []
    for d in diffs:
        key, _, rest = d.partition(": ")
        named.append(f"{_FLAGS.get(key, key)}: {rest}")
    return named


_ROW_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a str"), "family": ((str,), "a str"),
    "test_ll": ((float,), "a float"), "stderr": ((float,), "a float"),
    "estimator": ((str,), "a str"), "bound": ((str,), "a str"),
    "interval": ((list, type(None)), "a list [low, high] or null"),
    "train_seconds": ((int, float), "a number"), "artifact": ((str,), "a str"),
}


def _parse(saved: Any) -> dict[str, Finished]:
    """The entries of a loaded progress file, every key checked (``CheckpointError``)."""
    if require(saved, "format", str, f"{_FORMAT!r}") != _FORMAT:
        raise CheckpointError(f"key 'format': expected {_FORMAT!r}, got {saved['format']!r}")
    if require(saved, "version", int, "an int") != _VERSION:
        raise CheckpointError(f"key 'version': expected {_VERSION}, got {saved['version']}")
    require(saved, "config", Mapping, "a dict")
    entries: dict[str, Finished] = {}
    for i, item in enumerate(require(saved, "entries", list, "a list of entries")):
        where = f"entries[{i}]"
        require(saved["entries"], i, Mapping, "an entry", "entries")
        label = require(item, "label", str, "a str", where)
        rows = [_row(r, f"{where}.rows[{j}]") for j, r in
                enumerate(require(item, "rows", list, "a list of rows", where))]
        if not rows:
            raise CheckpointError(f"key '{where}.rows': expected at least one row, got none")
        files = require(item, "files", list, "a list of file names", where)
        for j in range(len(files)):
            name = require(files, j, str, "a file name", f"{where}.files")
            if Path(name).name != name or name in ("", ".", ".."):
                raise CheckpointError(f"key '{where}.files[{j}]': expected a file name in the "
                                      f"output folder, got {name!r}")
        samples = _samples(require(item, "samples", list, "a list of images", where),
                           f"{where}.samples")
        entries[label] = Finished(rows, samples, list(files))
    return entries


def _row(row: Any, where: str) -> Entry:
    if not isinstance(row, Mapping):
        raise CheckpointError(f"key {where!r}: expected a row (dict), got "
                              f"{type(row).__name__}")
    names = [f.name for f in fields(Entry)]
    if sorted(row) != sorted(names):
        raise CheckpointError(f"key {where!r}: expected the keys {names}, got {list(row)}")
    for key, (types, what) in _ROW_TYPES.items():
        require(row, key, types, what, where)
    interval = row["interval"]
    if interval is not None and (len(interval) != 2 or not all(
            v is None or (isinstance(v, float) and math.isfinite(v)) for v in interval)):
        raise CheckpointError(f"key '{where}.interval': expected [low, high] (numbers or "
                              f"null), got {interval!r}")
    return Entry(**{k: row[k] for k in names})


def _samples(images: list[Any], where: str) -> torch.Tensor:
    """``[10, D]`` float32 from nested lists of numbers in ``[0, 1]``."""
    if not all(isinstance(r, list) and r and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) for r in images):
        raise CheckpointError(f"key {where!r}: expected lists of numbers (one per image), got "
                              "other values")
    if len(images) != 10 or len({len(r) for r in images}) != 1:
        raise CheckpointError(f"key {where!r}: expected 10 images of the same size, got "
                              f"{len(images)} of sizes {sorted({len(r) for r in images})}")
    x = torch.tensor(images, dtype=torch.float64)
    if not bool(((x >= 0) & (x <= 1)).all()):
        raise CheckpointError(f"key {where!r}: expected pixel values in [0, 1], got values in "
                              f"[{float(x.min()):g}, {float(x.max()):g}]")
    return x.float()
