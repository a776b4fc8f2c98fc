"""When to draw progress bars (a helper below every module that shows one)."""

from __future__ import annotations

import os
import sys

__all__ = ["progress_enabled"]


def progress_enabled(progress: bool | None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else only on a TTY outside CI."""
    if progress is not None:
        return bool(progress)
    return sys.stderr.isatty() and not os.environ.get("CI")
