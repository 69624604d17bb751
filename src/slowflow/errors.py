"""Exceptions raised by slowflow.

Every error a user can cause (a bad file, a bad argument) is a :class:`SlowflowError`
whose message is one line naming the file or argument, the field and what was expected.
The CLI prints that line and exits with code 2, without a traceback.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def check_dt(dt: Any, where: str) -> float:
    """A time step: a finite real number > 0 (a one-element array is taken as its value)."""
    if isinstance(dt, np.ndarray) and dt.size == 1:
        dt = dt.reshape(-1)[0]
    if isinstance(dt, (bool, np.bool_)) or not isinstance(dt, numbers.Real):
        raise DataError(f"{where} must be a finite number > 0, found {dt!r}")
    value = float(dt)
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{where} must be a finite number > 0, found {value!r}")
    return value
