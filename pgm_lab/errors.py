"""Exception classes raised by pgm_lab.

Every error the library raises on purpose is a :class:`PgmLabError`, and also an instance of
the matching builtin (``ValueError`` for bad input, ``RuntimeError`` for failures while
running), so ``except ValueError`` in user code keeps working. Every warning it issues is a
:class:`PgmLabWarning`, so ``warnings.filterwarnings(..., category=PgmLabWarning)`` selects
exactly pgm_lab's own warnings.
"""

from __future__ import annotations

__all__ = [
    "PgmLabError",
    "ConfigError",
    "DataError",
    "DAGError",
    "TrainingError",
    "CheckpointError",
    "InferenceError",
    "NotFittedError",
    "PgmLabWarning",
]


class PgmLabError(Exception):
    """Base class of every exception raised by pgm_lab."""


class ConfigError(PgmLabError, ValueError):
    """An argument has a value outside the documented set or range."""


class DataError(PgmLabError, ValueError):
    """A dataset is unknown or missing, or data has the wrong shape, dtype, range or NaNs."""


class DAGError(PgmLabError, ValueError):
    """A DAG specification, evidence, intervention or BIF file is invalid."""


class TrainingError(PgmLabError, RuntimeError):
    """Training failed, e.g. the loss became NaN or infinite."""


class CheckpointError(PgmLabError, RuntimeError):
    """A checkpoint cannot be read, or does not match the model being resumed."""


class InferenceError(PgmLabError, RuntimeError):
    """An inference routine cannot run on the given model (too large, unsupported site...)."""


class NotFittedError(PgmLabError, AttributeError, ValueError):
    """A method that needs fitted parameters was called before ``fit``."""


class PgmLabWarning(UserWarning):
    """Base class of every warning issued by pgm_lab (attributed to the caller's line)."""
