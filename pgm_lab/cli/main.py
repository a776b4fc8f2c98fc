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
import pkgutil
import sys
import warnings
from collections.abc import Iterator, Sequence

from .. import __version__
from ..errors import PgmLabError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="pgm-lab",
        description="Graphical models and deep generative models as Pyro programs.",
    )
    parser.add_argument("--version", action="version", version=f"pgm-lab {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    package = importlib.import_module("pgm_lab.cli")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"pgm_lab.cli.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
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
    """Run the CLI; returns the exit code (2 for usage errors, 1 for library errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except PgmLabError as exc:
        print(f"pgm-lab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
