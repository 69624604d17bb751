"""Exceptions raised by slowflow.

Every error a user can cause (a bad file, a bad argument) is a :class:`SlowflowError`
whose message is one line naming the file or argument, the field and what was expected.
The CLI prints that line and exits with code 2, without a traceback.
"""

from __future__ import annotations


class SlowflowError(Exception):
    """Base class of user-facing errors: the message is a single, complete sentence."""


class DataError(SlowflowError, ValueError):
    """Trajectory data that cannot be read or fails validation."""


class ConfigError(SlowflowError, ValueError):
    """An invalid configuration value or argument."""


class ModelFileError(SlowflowError, ValueError):
    """A model file that is missing, truncated, corrupted or not a slowflow model."""


class TrainingError(SlowflowError, RuntimeError):
    """Training that produced no usable model (nothing is written)."""
