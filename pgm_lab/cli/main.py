"""Entry point of the ``pgm-lab`` console script.

Subcommands are discovered, not listed: every module ``pgm_lab/cli/<name>.py`` (other than this
one) that defines ``register(subparsers) -> argparse.ArgumentParser`` becomes the subcommand
``<name>`` with underscores turned into dashes (``compare_bounds.py`` -> ``compare-bounds``).
``register`` must set ``parser.set_defaults(func=run)`` where ``run(args) -> int`` returns the
exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import pkgutil
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from .. import __version__, distributed
from ..errors import PgmLabError
from ._args import Parser

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand registered."""
    parser = Parser(
        prog="pgm-lab",
        description="Graphical models and deep generative models as Pyro programs.",
        epilog="Every flag is checked before any work starts. Exit status: 0 done; 2 a bad "
               "flag or combination of flags (one line on stderr naming it); 1 an error while "
               "running (one line); 130 interrupted; 141 standard output closed early "
               "(e.g. by head). 'pgm-lab COMMAND --help' lists each command's flags, "
               "their limits and defaults.",
    )
    parser.add_argument("--version", action="version", version=f"pgm-lab {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    package = importlib.import_module("pgm_lab.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"pgm_lab.cli.{info.name}")
        if hasattr(module, "register"):
            command = module.register(sub)
            command.set_defaults(_prog=command.prog)  # names the command in runtime errors
    return parser


@contextlib.contextmanager
def _third_party_warnings_silenced() -> Iterator[None]:
    """Hide, for the block, every warning attributed to a module outside pgm_lab.

    A CLI user is shown pgm_lab's own warnings (:class:`~pgm_lab.errors.PgmLabWarning`, issued
    with a stacklevel that points at pgm_lab's calling line) but not another library's notices,
    e.g. ArviZ's FutureWarning on its first import each day. ``python -W ...`` or
    ``PYTHONWARNINGS`` given by the user take precedence: then nothing is hidden.
    """
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.filterwarnings("ignore", module=r"(?!pgm_lab(\.|$))")
        yield


@_third_party_warnings_silenced()
def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code.

    0 on success; 2 for a usage error (a bad flag, refused while parsing, before any work);
    1 for an error found while running (a :class:`~pgm_lab.errors.PgmLabError`, an
    ``OSError`` such as a full disk, running out of memory), reported as one line
    ``pgm-lab <command>: error: ...`` on stderr without a traceback; 130 on Ctrl-C.
    When stdout is closed early (``pgm-lab bn sample alarm -n 1000 | head``) the command stops
    quietly with 141, what a shell reports for a Unix tool ended by SIGPIPE.
    """
    try:
        code = _run(argv)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, not at exit
        return code
    except BrokenPipeError:
        _discard_stdout()
        return 128 + getattr(signal, "SIGPIPE", 13)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    prog = getattr(args, "_prog", parser.prog)
    try:
        code = int(args.func(args) or 0)
        distributed.leave()  # under torchrun: all ranks exit together
        return code
    except BrokenPipeError:
        raise
    except (PgmLabError, OSError, MemoryError, RuntimeError) as exc:
        message = _runtime_error_message(exc, args)
        if message is None:
            raise
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _runtime_error_message(exc: BaseException, args: argparse.Namespace) -> str | None:
    """One line describing ``exc``, or ``None`` for an error that is a bug (a traceback)."""
    if isinstance(exc, PgmLabError):
        text = str(exc)
    elif isinstance(exc, OSError):
        what = exc.strerror or str(exc)
        text = f"{what}: {str(exc.filename)!r}" if exc.filename is not None else what
        flag = _flag_of_path(exc.filename, args)
        text = f"cannot write {flag}: {text}" if flag else text
    elif _is_out_of_memory(exc):
        text = ("out of memory; try smaller sizes (e.g. --hidden, --batch-size, --eval-k, "
                "--eval-batch-size)")
    else:
        return None
    return " ".join(text.split())  # one line, whatever the message


def _flag_of_path(filename: object, args: argparse.Namespace) -> str | None:
    """``--out`` or ``--checkpoint`` when ``filename`` is that flag's path or inside it."""
    if not isinstance(filename, (str, os.PathLike)):
        return None
    path = Path(filename).absolute()
    for dest in ("out", "checkpoint"):
        value = getattr(args, dest, None)
        if value is not None and Path(value).absolute() in (path, *path.parents):
            return f"--{dest}"
    return None


def _is_out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: ``MemoryError``, torch's CPU allocator or ``torch.OutOfMemoryError``
    (an accelerator)."""
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", ())
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and (
        "can't allocate memory" in str(exc) or isinstance(exc, oom)))


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again (the
    recipe of the Python docs' "Note on SIGPIPE")."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced stdout, e.g. captured by a test
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
