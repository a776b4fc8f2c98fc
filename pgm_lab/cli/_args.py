"""Argument types and the parser class shared by every ``pgm-lab`` subcommand.

Each flag is validated once, by argparse, while the command line is parsed: a bad value ends
the command before any data is loaded or any model is trained, with one line on stderr,

    pgm-lab rbm: error: argument --seed: expected an integer in [0, 4294967295], got -1

and exit code 2. The types here only read the file system (an output folder is probed with a
temporary file that is removed at once); creating folders is left to the command.
"""

from __future__ import annotations

import argparse
import math
import re
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError
from ..train import resolve_device

__all__ = [
    "SEED_MAX",
    "Parser",
    "HelpFormatter",
    "plain",
    "seed",
    "int_in",
    "float_in",
    "device",
    "input_dir",
    "output_dir",
    "output_file",
]

# pyro.set_rng_seed also seeds NumPy's legacy RNG, which takes 32-bit seeds only.
SEED_MAX = 2**32 - 1

_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: int() also takes '٣' and '1_000'
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line (no usage block)::

        pgm-lab bn sample: error: argument -n/--num-samples: ... (see 'pgm-lab bn sample --help')
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions keep their line breaks; every option's help ends with its default (none
    is shown for a default of ``None`` or ``False``: an option that is off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")  # :func:`pgm_lab.train.fit`
_LITERAL = re.compile(r"``([^`]+)``")


def plain(doc: str, width: int = 79) -> str:
    """``doc`` (reStructuredText) as plain text for a terminal: roles and literals unquoted,
    paragraphs re-wrapped to ``width`` columns; indented blocks (examples) are kept as they
    are."""
    text = _LITERAL.sub(r"\1", _ROLE.sub(r"\1", doc)).strip()
    paragraphs = [p if p.startswith(" ") else textwrap.fill(" ".join(p.split()), width)
                  for p in text.split("\n\n")]
    return "\n\n".join(paragraphs)


def _integer(text: str) -> int:
    if not _INT.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(f"expected an integer (ASCII digits), got {text!r}")
    return int(text)


def _bounds(lo: float | None, hi: float | None, lo_open: bool = False,
            hi_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def int_in(lo: int, hi: int) -> Callable[[str], int]:
    """Type of an integer flag with values in ``[lo, hi]``.

    Every count has an upper cap: it keeps sizes (and the memory they need) feasible, and keeps
    values within torch's 64-bit integers. Help texts state each cap.
    """

    def parse(text: str) -> int:
        n = _integer(text)
        if not lo <= n <= hi:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got {n}")
        return n

    parse.__name__ = f"integer in [{lo}, {hi}]"
    return parse


def seed(text: str) -> int:
    """Type of ``--seed``: an integer in ``[0, SEED_MAX]``, the same in every subcommand."""
    return int_in(0, SEED_MAX)(text)


def float_in(lo: float, hi: float | None = None, *, lo_open: bool = False,
             hi_open: bool = False) -> Callable[[str], float]:
    """Type of a finite real flag in ``[lo, hi]`` (``lo_open``/``hi_open``: bound excluded);
    ``nan``, ``inf`` and non-ASCII digits are refused."""
    where = _bounds(lo, hi, lo_open, hi_open)

    def parse(text: str) -> float:
        if not _FLOAT.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected a finite number {where}, got {text!r}")
        x = float(text)
        inside = (x > lo if lo_open else x >= lo) and (
            hi is None or (x < hi if hi_open else x <= hi))
        if not (math.isfinite(x) and inside):
            raise argparse.ArgumentTypeError(f"expected a finite number {where}, got {text!r}")
        return x

    parse.__name__ = f"number {where}"
    return parse


def device(text: str) -> str:
    """Type of ``--device``: ``'auto'``, ``'cpu'`` or an available ``'cuda[:i]'``."""
    try:
        resolve_device(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def input_dir(text: str) -> Path:
    """Type of a folder to read from (``--data-dir``): it must exist."""
    path = _path(text, "an existing folder")
    if not path.is_dir():
        what = "a file" if path.exists() else "missing"
        raise argparse.ArgumentTypeError(f"expected an existing folder, got {text!r} ({what})")
    return path


def _path(text: str, what: str) -> Path:
    # Path("") is the current folder: an empty argument (e.g. an unset shell variable) must not
    # silently write there.
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected {what}, got an empty string")
    return Path(text).expanduser()


def _existing_ancestor(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return Path(".")


def _probe_writable(folder: Path, text: str, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(
            f"expected {what}, got {text!r} ({folder} is not writable: "
            f"{exc.strerror or exc}); try a folder you can write to") from exc


def output_dir(text: str) -> Path:
    """Type of an output folder: an existing writable folder, or a new one whose nearest
    existing ancestor is a writable folder (the command creates it)."""
    what = "a writable output folder"
    path = _path(text, what)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"expected {what}, got the existing file {text!r}; "
                                         "try a new or existing folder")
    base = _existing_ancestor(path)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}, inside the file "
                                         f"{str(base)!r}; try a folder")
    _probe_writable(base, text, what)
    return path


def output_file(text: str) -> Path:
    """Type of an output file: not a folder, in a folder that exists (or can be created below
    a writable one); an existing file must be writable (it is opened for appending, not
    truncated, to check)."""
    what = "a writable file path"
    path = _path(text, what)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"expected {what}, got the folder {text!r}; "
                                         "try a file name inside it")
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise argparse.ArgumentTypeError(
                f"expected {what}, got {text!r} ({exc.strerror or exc})") from exc
        return path
    base = _existing_ancestor(path.parent)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}, inside the file "
                                         f"{str(base)!r}; try a path in a folder")
    _probe_writable(base, text, what)
    return path

