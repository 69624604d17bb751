"""Checks of the arrays the metrics take: finite ensembles of matching shapes."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError

#: Number of float64 values processed at once by the chunked loops (about 32 MiB per array).
CHUNK_ELEMENTS = 1 << 22


def as_float_array(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a floating array (no copy when it already is one)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise DataError(f"{name} must be a real numeric array, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{name} (shape {arr.shape}) contains {bad} non-finite values (NaN/inf).")


def ensemble(x: Any, name: str, min_paths: int = 1) -> np.ndarray:
    """Validate one ensemble of shape ``(n_paths, n_steps + 1, d)``."""
    arr = as_float_array(x, name)
    if arr.ndim != 3:
        raise DataError(
            f"{name} must have shape (n_paths, n_steps + 1, d), got shape {arr.shape} "
            f"({arr.ndim} dimensions)."
        )
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise DataError(f"{name} has shape {arr.shape}: it holds no time steps or no components.")
    if arr.shape[0] < min_paths:
        raise DataError(f"{name} has shape {arr.shape}: at least {min_paths} paths are needed.")
    check_finite(arr, name)
    return arr


def ensembles(named: Sequence[tuple[str, Any]], min_paths: int = 1) -> tuple[np.ndarray, ...]:
    """Validate several ensembles whose number of time points and dimension must agree."""
    arrays = tuple(ensemble(x, name, min_paths) for name, x in named)
    first_name, first = named[0][0], arrays[0]
    for (name, _), arr in zip(named[1:], arrays[1:], strict=True):
        if arr.shape[1:] != first.shape[1:]:
            raise DataError(
                f"{first_name} has shape {first.shape} and {name} has shape {arr.shape}: the "
                "number of time points (axis 1) and the dimension d (axis 2) must agree."
            )
    return arrays


def as_step_indices(step_indices: Any, n_time: int, name: str = "step_indices") -> np.ndarray:
    """Normalize step indices (negative ones count from the end) and check their range."""
    idx = np.atleast_1d(np.asarray(step_indices))
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ConfigError(f"{name} must be a sequence of integers, got {step_indices!r}.")
    idx = idx.astype(np.int64)
    out_of_range = (idx < -n_time) | (idx >= n_time)
    if out_of_range.any():
        raise ConfigError(
            f"{name} {idx[out_of_range].tolist()} out of range for {n_time} time points "
            f"(valid: 0..{n_time - 1}, or negative from the end)."
        )
    return np.where(idx < 0, idx + n_time, idx)


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}.") from None
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}.")
    return v


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def check_chunk(block: np.ndarray, first_path: int, name: str) -> None:
    """Reject a chunk of paths with a non-finite value, naming its path, step and component."""
    if not np.isfinite(block).all():
        p, t, k = np.argwhere(~np.isfinite(block))[0]
        raise DataError(
            f"{name}: non-finite value {block[p, t, k]} at path {first_path + p}, step {t}, "
            f"component {k}; ensembles must be finite."
        )
