"""Ensembles larger than memory: chunk-wise statistics over ``.npy`` files and memory maps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..io.npy import NpyArray
from .arrays import CHUNK_ELEMENTS, as_step_indices, check_chunk, positive_int
from .marginal import (
    histograms,
    moment_errors_from,
    w1_against,
)
from .temporal import autocorrelation_with_mean


def _source(x: Any, name: str) -> Any:
    """An ensemble to read chunk-wise: arrays (memmaps too) as they are, paths opened."""
    if isinstance(x, str | os.PathLike):
        return NpyArray(x)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        x = np.asarray(x)
    if len(x.shape) != 3 or 0 in x.shape:
        raise DataError(f"{name} must have shape (n_paths, n_steps + 1, d), got shape {x.shape}.")
    if np.dtype(x.dtype).kind not in "iufb":
        raise DataError(f"{name} must be a real numeric array, got dtype {x.dtype}.")
    return x


def _chunk_paths(value: int | None, row_elements: int) -> int:
    if value is None:
        return max(1, CHUNK_ELEMENTS // max(1, row_elements))
    return positive_int(value, "chunk_paths")


@dataclass
class EnsembleScan:
    """What one chunk-wise pass over an ensemble ``(n_paths, T, d)`` keeps.

    ``mean``, ``std`` (T, d), float64: mean and standard deviation (ddof=1) per step and
    component (None when the pass skipped them); ``step_indices`` (m,) and ``slices``
    (n_paths, m, d), in the ensemble's dtype: every path's values at those steps.
    """

    n_paths: int
    n_time: int
    dim: int
    mean: np.ndarray | None
    std: np.ndarray | None
    step_indices: np.ndarray
    slices: np.ndarray

    def quantiles(self, q: Any) -> np.ndarray:
        """Quantiles ``q`` (in [0, 1]) of every step in ``step_indices`` and component:
        array (len(q), m, d), :func:`numpy.quantile`'s default (linear) method."""
        q = np.atleast_1d(np.asarray(q, dtype=np.float64))
        if q.ndim != 1 or not ((q >= 0) & (q <= 1)).all():
            raise ConfigError(f"quantiles must lie in [0, 1], got {q.tolist()}.")
        return np.quantile(self.slices.astype(np.float64), q, axis=0)


def scan_ensemble(
    x: Any,
    step_indices: Any = (),
    *,
    moments: bool = True,
    chunk_paths: int | None = None,
    name: str = "x",
) -> EnsembleScan:
    """One pass over an ensemble too large for memory, reading ``chunk_paths`` paths at a time.

    Computes the mean and standard deviation (ddof=1) of every step and component in float64
    (chunk moments merged with Chan et al.'s pairwise update, so equal to
    :func:`moment_errors`' in-memory values up to rounding, about 1e-15 relative), checks
    that every value is finite, and copies out every path's values at ``step_indices``
    (what exact W1, quantiles and histograms at those steps need).

    Parameters
    ----------
    x : array (n_paths, T, d), numpy.memmap, :class:`NpyArray` or path of a ``.npy`` file
        Anything with ``shape``, ``dtype`` and ``x[i:j]`` slicing along axis 0; a path is
        opened as an :class:`NpyArray` (plain file reads, bounded memory).
    step_indices : sequence of int
        Steps to copy out (negative values count from the end).
    moments : bool
        Compute ``mean`` and ``std`` (False: only the slices).
    chunk_paths : int, optional
        Paths per read; default: about 4 million values (32 MB as float64).

    Notes
    -----
    Memory: one chunk in float64 (plus its float64 deviations) and the slices
    (``n_paths x m x d`` values of ``x``'s dtype: 4 MB per step and component for 10^6
    float32 paths).
    """
    x = _source(x, name)
    n, n_time, d = (int(v) for v in x.shape)
    idx = as_step_indices(step_indices, n_time) if np.size(step_indices) else np.zeros(0, int)
    step = _chunk_paths(chunk_paths, n_time * d)
    slices = np.empty((n, idx.size, d), dtype=x.dtype)
    count, mean, m2 = 0, np.zeros((n_time, d)), np.zeros((n_time, d))
    for i in range(0, n, step):
        raw = np.asarray(x[i : i + step])
        block = raw.astype(np.float64, copy=False)
        check_chunk(block, i, name)
        if idx.size:
            slices[i : i + raw.shape[0]] = raw[:, idx]
        if moments:
            c = block.shape[0]
            mean_b = block.mean(axis=0)
            dev = block - mean_b
            m2_b = np.einsum("i...,i...->...", dev, dev)
            total = count + c
            delta = mean_b - mean
            mean = mean + delta * (c / total)
            m2 = m2 + m2_b + delta**2 * (count * c / total)
            count = total
    if not moments:
        return EnsembleScan(n, n_time, d, None, None, idx, slices)
    std = np.sqrt(m2 / (n - 1)) if n >= 2 else np.full((n_time, d), np.nan)
    return EnsembleScan(n, n_time, d, mean, std, idx, slices)


def _same_grid(a: EnsembleScan, b: EnsembleScan, what: str) -> None:
    if (a.n_time, a.dim) != (b.n_time, b.dim):
        raise DataError(
            f"{what}: the ensembles have (T, d) = {(a.n_time, a.dim)} and {(b.n_time, b.dim)}: "
            "the number of time points and the dimension d must agree."
        )


def scan_moment_errors(pred: EnsembleScan, ref: EnsembleScan) -> dict[str, np.ndarray]:
    """:func:`moment_errors` from two scans (:func:`scan_ensemble` with ``moments=True``);
    the same keys and definitions."""
    _same_grid(pred, ref, "scan_moment_errors")
    if pred.mean is None or ref.mean is None:
        raise ConfigError("scan_moment_errors needs scans made with moments=True.")
    for label, sc in (("pred", pred), ("ref", ref)):
        if sc.n_paths < 2:
            raise DataError(f"{label} has {sc.n_paths} path(s): at least 2 paths are needed.")
    return moment_errors_from(pred.mean, pred.std, ref.mean, ref.std)


def scan_w1(pred: EnsembleScan, ref: EnsembleScan) -> np.ndarray:
    """Exact W1 between the marginals of two scans at their common ``step_indices``:
    array (m, d), equal to :func:`w1_marginals` at those steps (up to rounding)."""
    _same_grid(pred, ref, "scan_w1")
    if not np.array_equal(pred.step_indices, ref.step_indices):
        raise ConfigError(
            f"scan_w1: the scans hold different steps ({pred.step_indices.tolist()} and "
            f"{ref.step_indices.tolist()}); scan both at the same step_indices."
        )
    if pred.step_indices.size == 0:
        return np.zeros((0, pred.dim))
    return w1_against(ref.slices, [pred.slices])[0]


def scan_histograms(
    pred: EnsembleScan, ref: EnsembleScan, bins: int | str = 50
) -> list[dict[str, Any]]:
    """:func:`histograms` at the scans' common ``step_indices`` (``step`` is the step of the
    full ensemble)."""
    _same_grid(pred, ref, "scan_histograms")
    if not np.array_equal(pred.step_indices, ref.step_indices):
        raise ConfigError("scan_histograms: scan both ensembles at the same step_indices.")
    out = histograms(pred.slices, ref.slices, np.arange(pred.step_indices.size), bins)
    for h in out:
        h["step"] = int(pred.step_indices[h["step"]])
    return out


def scan_w1_steps(
    pred: Any,
    ref_a: Any,
    ref_b: Any,
    step_indices: Any,
    *,
    max_bytes: int = 512 * 2**20,
    chunk_paths: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact W1 of ``pred`` against ``ref_a`` and the floor ``W1(ref_b, ref_a)`` at many steps,
    with bounded memory: the steps are taken in groups whose slices (of the three
    ensembles together) fit in ``max_bytes``, one chunk-wise pass over each ensemble per
    group. ``ref_b`` may be None (no floor).

    Returns ``(w1, floor)``, arrays (m, d) (``floor`` None without ``ref_b``), equal to
    ``w1_report``'s ``w1`` and ``floor`` at those steps (up to rounding).
    """
    named = [("pred", _source(pred, "pred")), ("ref_a", _source(ref_a, "ref_a"))]
    if ref_b is not None:
        named.append(("ref_b", _source(ref_b, "ref_b")))
    first = named[0][1]
    for label, arr in named[1:]:
        if tuple(arr.shape[1:]) != tuple(first.shape[1:]):
            raise DataError(
                f"pred has shape {tuple(first.shape)} and {label} has shape {tuple(arr.shape)}: "
                "the number of time points (axis 1) and the dimension d (axis 2) must agree."
            )
    n_time, d = int(first.shape[1]), int(first.shape[2])
    idx = as_step_indices(step_indices, n_time)
    per_step = sum(int(a.shape[0]) * d * np.dtype(a.dtype).itemsize for _, a in named)
    group = max(1, int(max_bytes) // max(1, per_step))
    w1 = np.empty((idx.size, d))
    floor = np.empty((idx.size, d)) if ref_b is not None else None
    for g0 in range(0, idx.size, group):
        part = idx[g0 : g0 + group]
        scans = [
            scan_ensemble(a, part, moments=False, chunk_paths=chunk_paths, name=label)
            for label, a in named
        ]
        sorted_out = w1_against(scans[1].slices, [s.slices for s in scans[:1] + scans[2:]])
        w1[g0 : g0 + part.size] = sorted_out[0]
        if floor is not None:
            floor[g0 : g0 + part.size] = sorted_out[1]
        del scans
    return w1, floor


def scan_autocorrelation(
    x: Any,
    max_lag: int,
    mean: np.ndarray | None = None,
    *,
    name: str = "paths",
) -> np.ndarray:
    """:func:`autocorrelation` of an ensemble read chunk-wise (array, memmap,
    :class:`NpyArray` or ``.npy`` path); ``mean`` (T, d), e.g. from :func:`scan_ensemble`,
    saves the extra pass that computes it. Equal to the in-memory value up to rounding."""
    x = _source(x, name)
    n, n_time, d = (int(v) for v in x.shape)
    if n < 2:
        raise DataError(f"{name} has {n} path(s): at least 2 paths are needed.")
    max_lag = positive_int(max_lag, "max_lag", minimum=0)
    if max_lag > n_time - 1:
        raise ConfigError(f"max_lag={max_lag} exceeds n_steps={n_time - 1} of {name}.")
    if mean is None:
        mean = scan_ensemble(x, name=name).mean
    mean = np.asarray(mean, dtype=np.float64)
    if mean.shape != (n_time, d):
        raise ConfigError(f"mean has shape {mean.shape}; expected {(n_time, d)}.")
    return autocorrelation_with_mean(x, mean, max_lag, name)
