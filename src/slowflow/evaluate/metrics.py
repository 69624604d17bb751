"""Metrics comparing a predicted ensemble of slow-variable trajectories with reference ensembles.

Every function here is pure: it reads arrays and returns arrays, floats or plain dictionaries,
and never changes its inputs.

Conventions
-----------
An *ensemble* is a float array of shape ``(n_paths, n_steps + 1, d)``: ``n_paths`` sample paths
of a ``d``-dimensional process observed at the times ``0, dt, ..., n_steps * dt``. Two ensembles
that are compared may hold different numbers of paths, but their number of time points and their
dimension ``d`` must agree; otherwise a :class:`ValueError` (a :class:`slowflow.errors.DataError`)
naming both shapes is raised. Non-finite values (NaN, inf) are rejected in the same way.

Distances between the *marginal* laws (one time step, one component) are computed exactly from
the empirical distributions and vectorized over time steps and components; memory use is bounded
by processing columns in chunks, so ensembles of 10,000 paths x 2,001 steps x 2 components are
handled in a few seconds.

The *Monte-Carlo noise floor* of a distance is its value between two independent reference
ensembles ``B`` and ``A`` of the same law (``B`` ideally with as many paths as the prediction): a
perfect model cannot be expected to do better than ``W1(B, A)``, so ``W1(pred, A) / W1(B, A)``
near 1 means "indistinguishable from the reference at this sample size".

Ensembles larger than memory (e.g. 10^6 paths written by ``slowflow predict --out X.npy``) are
read chunk-wise by the ``scan_*`` functions: :func:`scan_ensemble` makes one pass over the
paths (means, standard deviations, every path's values at chosen steps), from which
:func:`scan_moment_errors`, :func:`scan_w1`, :func:`scan_histograms` and
:meth:`EnsembleScan.quantiles` give the in-memory functions' results; :func:`scan_w1_steps`
and :func:`scan_autocorrelation` make further passes. They accept arrays, memory maps, or
:class:`NpyArray` (a ``.npy`` file read in slices with plain reads).

Dictionaries returned by the ``*_report`` functions hold numpy arrays; pass them through
:func:`to_jsonable` before ``json.dump`` (it turns arrays into lists and NaN/inf into ``None``).
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import special, stats
from scipy.spatial.distance import cdist, pdist

from slowflow.errors import ConfigError, DataError

__all__ = [
    "EnsembleScan",
    "NpyArray",
    "autocorrelation",
    "autocorrelation_error",
    "crps_ensemble",
    "energy_distance",
    "energy_score",
    "gaussian_crps",
    "histograms",
    "joint_report",
    "moment_errors",
    "pit_histogram",
    "pit_values",
    "scan_autocorrelation",
    "scan_ensemble",
    "scan_histograms",
    "scan_moment_errors",
    "scan_w1",
    "scan_w1_steps",
    "sliced_w1",
    "to_jsonable",
    "w1_marginals",
    "w1_report",
    "wasserstein1",
]

# Number of float64 values processed at once by the chunked loops (about 32 MiB per array).
_CHUNK_ELEMENTS = 1 << 22


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _as_float_array(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a floating array (no copy when it already is one)."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
            raise DataError(f"{name} must be a real numeric array, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f"{name} (shape {arr.shape}) contains {bad} non-finite values (NaN/inf).")


def _ensemble(x: Any, name: str, min_paths: int = 1) -> np.ndarray:
    """Validate one ensemble of shape ``(n_paths, n_steps + 1, d)``."""
    arr = _as_float_array(x, name)
    if arr.ndim != 3:
        raise DataError(
            f"{name} must have shape (n_paths, n_steps + 1, d), got shape {arr.shape} "
            f"({arr.ndim} dimensions)."
        )
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise DataError(f"{name} has shape {arr.shape}: it holds no time steps or no components.")
    if arr.shape[0] < min_paths:
        raise DataError(f"{name} has shape {arr.shape}: at least {min_paths} paths are needed.")
    _check_finite(arr, name)
    return arr


def _ensembles(named: Sequence[tuple[str, Any]], min_paths: int = 1) -> tuple[np.ndarray, ...]:
    """Validate several ensembles whose number of time points and dimension must agree."""
    arrays = tuple(_ensemble(x, name, min_paths) for name, x in named)
    first_name, first = named[0][0], arrays[0]
    for (name, _), arr in zip(named[1:], arrays[1:], strict=True):
        if arr.shape[1:] != first.shape[1:]:
            raise DataError(
                f"{first_name} has shape {first.shape} and {name} has shape {arr.shape}: the "
                "number of time points (axis 1) and the dimension d (axis 2) must agree."
            )
    return arrays


def _step_indices(step_indices: Any, n_time: int, name: str = "step_indices") -> np.ndarray:
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


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    try:
        v = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}.") from None
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}.")
    return v


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0``."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ---------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` recursively into values that :func:`json.dumps` accepts.

    Parameters
    ----------
    obj : any
        Nested dicts / lists / tuples of numpy arrays, numpy scalars and Python values.

    Returns
    -------
    any
        The same structure with numpy arrays turned into (nested) lists, numpy scalars into
        Python scalars, tuples into lists, mapping keys into strings, and non-finite floats
        (NaN, +-inf, which strict JSON cannot represent) into ``None``.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, complex):
        raise TypeError(f"complex value {obj!r} cannot be converted to JSON")
    return obj


# ---------------------------------------------------------------------------------------------
# Moments
# ---------------------------------------------------------------------------------------------


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and standard deviation (ddof=1) along axis 0, in float64, chunked."""
    n = x.shape[0]
    rest = x.shape[1:]
    mean = x.sum(axis=0, dtype=np.float64) / n
    ss = np.zeros(rest, dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // max(1, int(np.prod(rest))))
    for i in range(0, n, step):
        dev = x[i : i + step].astype(np.float64) - mean
        ss += np.einsum("i...,i...->...", dev, dev)
    return mean, np.sqrt(ss / (n - 1))


def moment_errors(pred: Any, ref: Any) -> dict[str, np.ndarray]:
    """Errors of the ensemble mean and standard deviation, per time step and component.

    With :math:`\\bar x_{t,k} = \\frac1N \\sum_p x_{p,t,k}` and
    :math:`s_{t,k} = \\big(\\frac1{N-1}\\sum_p (x_{p,t,k}-\\bar x_{t,k})^2\\big)^{1/2}`:

    * ``mean_error[t, k] = mean_pred[t, k] - mean_ref[t, k]``
    * ``std_error[t, k] = std_pred[t, k] - std_ref[t, k]``
    * ``rel_std_error[t, k] = std_error[t, k] / std_ref[t, k]``, NaN where the reference
      spread is (numerically) zero, e.g. at ``t = 0`` when every path starts at the same point
      (``std_ref <= 1e-10 * (max_t std_ref + max_t |mean_ref|)`` for that component).
    * ``mean_abs_mean_error[k] = mean_t |mean_error[t, k]|`` (all steps),
      ``mean_abs_std_error[k] = mean_t |std_error[t, k]|`` (all steps) and
      ``mean_abs_rel_std_error[k]`` = mean over the steps where the relative error is defined
      (NaN if there are none).

    Parameters
    ----------
    pred, ref : array_like, shape (n_paths, n_steps + 1, d)
        Predicted and reference ensembles (each with at least 2 paths; path counts may differ).

    Returns
    -------
    dict
        ``mean_error``, ``std_error``, ``rel_std_error`` (arrays (n_steps + 1, d)),
        ``mean_pred``, ``mean_ref``, ``std_pred``, ``std_ref`` (arrays (n_steps + 1, d)),
        ``mean_abs_mean_error``, ``mean_abs_std_error``, ``mean_abs_rel_std_error``
        (arrays (d,)).

    Raises
    ------
    ValueError
        If the shapes disagree (both are named), an ensemble has fewer than 2 paths, or holds
        non-finite values.
    """
    pred, ref = _ensembles([("pred", pred), ("ref", ref)], min_paths=2)
    mean_p, std_p = _mean_std(pred)
    mean_r, std_r = _mean_std(ref)
    return _moment_errors(mean_p, std_p, mean_r, std_r)


def _moment_errors(mean_p, std_p, mean_r, std_r) -> dict[str, np.ndarray]:
    """The dictionary of :func:`moment_errors` from the two ensembles' means and stds."""
    mean_err = mean_p - mean_r
    std_err = std_p - std_r
    scale = std_r.max(axis=0) + np.abs(mean_r).max(axis=0)  # (d,)
    meaningful = std_r > 1e-10 * scale
    rel = np.full_like(std_err, np.nan)
    np.divide(std_err, std_r, out=rel, where=meaningful)
    counts = meaningful.sum(axis=0)
    abs_rel_sum = np.where(meaningful, np.abs(rel), 0.0).sum(axis=0)
    return {
        "mean_error": mean_err,
        "std_error": std_err,
        "rel_std_error": rel,
        "mean_pred": mean_p,
        "mean_ref": mean_r,
        "std_pred": std_p,
        "std_ref": std_r,
        "mean_abs_mean_error": np.abs(mean_err).mean(axis=0),
        "mean_abs_std_error": np.abs(std_err).mean(axis=0),
        "mean_abs_rel_std_error": _safe_ratio(abs_rel_sum, counts),
    }


# ---------------------------------------------------------------------------------------------
# 1-D Wasserstein distance
# ---------------------------------------------------------------------------------------------


def _quantile_coupling(na: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intervals of [0, 1] on which both empirical quantile functions are constant.

    The quantile function of ``n`` sorted samples is ``x_(i)`` on ``(i/n, (i+1)/n]``. In units
    of ``1 / (na * nb)`` the breakpoints ``i * nb`` and ``j * na`` are integers, so the merged
    grid is exact. Returns the sample index of ``a`` and of ``b`` on every interval and the
    interval widths (which sum to 1).
    """
    cuts = np.union1d(np.arange(na + 1) * nb, np.arange(nb + 1) * na)  # 0 .. na * nb
    starts = cuts[:-1]
    return starts // nb, starts // na, np.diff(cuts) / (na * nb)


def _w1_sorted_rows(
    sa: np.ndarray,
    sb: np.ndarray,
    coupling: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """W1 between the rows of ``sa`` (c, na) and ``sb`` (c, nb), each row sorted ascending.

    Uses ``W1 = int_0^1 |F_a^-1(u) - F_b^-1(u)| du`` (equal to ``int |F_a - F_b| dx`` in 1-D);
    for equal sizes this is ``mean_i |a_(i) - b_(i)|``.
    """
    na, nb = sa.shape[-1], sb.shape[-1]
    if na == nb:
        return np.abs(sa - sb).mean(axis=-1)
    ia, ib, width = coupling if coupling is not None else _quantile_coupling(na, nb)
    return np.abs(sa[:, ia] - sb[:, ib]) @ width


def _sorted_columns(x2: np.ndarray, j0: int, j1: int) -> np.ndarray:
    """Columns ``j0:j1`` of the 2-D array ``x2`` as sorted float64 rows, shape (j1 - j0, n)."""
    cols = np.array(x2[:, j0:j1].T, dtype=np.float64, order="C")
    cols.sort(axis=-1)
    return cols


def _w1_circle_rows(a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    """W1 on the circle of circumference ``period`` between the rows of a (c, na) and
    b (c, nb).

    With D(t) = F_a(t) - F_b(t) the difference of the CDFs after cutting the circle at any
    point, W1 = min over alpha of the integral of |D(t) - alpha| around the circle; the
    minimizer is a weighted median of D (weights: the lengths where D takes each value).
    Exact for empirical distributions (Rabin, Delon & Gousseau 2011).
    """
    c, na = a.shape
    nb = b.shape[1]
    pts = np.concatenate([np.mod(a, period), np.mod(b, period)], 1)
    step = np.concatenate([np.full((c, na), 1.0 / na), np.full((c, nb), -1.0 / nb)], 1)
    order = np.argsort(pts, axis=1, kind="stable")
    pts = np.take_along_axis(pts, order, 1)
    dval = np.cumsum(np.take_along_axis(step, order, 1), 1)  # D on [t_k, t_{k+1})
    length = np.diff(np.concatenate([pts, pts[:, :1] + period], 1), axis=1)
    by = np.argsort(dval, axis=1, kind="stable")
    ds, ws = np.take_along_axis(dval, by, 1), np.take_along_axis(length, by, 1)
    cum = np.cumsum(ws, 1)
    k = (cum < 0.5 * cum[:, -1:]).sum(1)
    alpha = ds[np.arange(c), np.minimum(k, ds.shape[1] - 1)]
    return (np.abs(dval - alpha[:, None]) * length).sum(1)


def wasserstein1_circle(a: Any, b: Any, period: float = 2 * math.pi) -> np.ndarray | float:
    """Exact W1 between empirical distributions of angles along axis 0, on the circle of
    circumference ``period`` (the distance of two angles is the shorter arc).

    Parameters
    ----------
    a : array_like, shape (n_a, *rest)
    b : array_like, shape (n_b, *rest)
    period : float
        2 pi for radians, 360 for degrees.

    Examples
    --------
    Point masses at -3.1 and 3.1 rad are 0.083 apart on the circle:

    >>> round(wasserstein1_circle([-3.1], [3.1]), 3)
    0.083
    """
    a, b = _as_float_array(a, "a"), _as_float_array(b, "b")
    if a.ndim == 0:
        a, b = a.reshape(1), b.reshape(1)
    if a.shape[1:] != b.shape[1:]:
        raise DataError(
            f"a has shape {a.shape} and b has shape {b.shape}: all axes but axis 0 must agree."
        )
    rest = a.shape[1:]
    out = _w1_circle_rows(a.reshape(a.shape[0], -1).T, b.reshape(b.shape[0], -1).T, float(period))
    out = out.reshape(rest)
    return float(out) if out.ndim == 0 else out


def _w1_against(
    ref: np.ndarray, others: Sequence[np.ndarray], periods: Sequence | None = None
) -> list[np.ndarray]:
    """W1 along axis 0 between each array of ``others`` and ``ref`` (trailing shapes equal).

    The reference columns are sorted once per chunk and reused for every comparison.
    ``periods``: per component (last axis), the range (lo, hi) of a periodic variable,
    whose W1 is taken on the circle, or None.
    """
    if periods is not None and any(r is not None for r in periods):
        return _w1_against_periodic(ref, others, periods)
    rest = ref.shape[1:]
    m = int(np.prod(rest, dtype=np.int64))
    ref2 = ref.reshape(ref.shape[0], m)
    others2 = [o.reshape(o.shape[0], m) for o in others]
    biggest = ref2.shape[0] + max(o.shape[0] for o in others2)
    step = max(1, _CHUNK_ELEMENTS // biggest)
    n_ref = ref2.shape[0]
    couplings = [
        None if o2.shape[0] == n_ref else _quantile_coupling(o2.shape[0], n_ref) for o2 in others2
    ]
    outs = [np.empty(m, dtype=np.float64) for _ in others2]
    for j0 in range(0, m, step):
        j1 = min(m, j0 + step)
        s_ref = _sorted_columns(ref2, j0, j1)
        for o2, cpl, out in zip(others2, couplings, outs, strict=True):
            out[j0:j1] = _w1_sorted_rows(_sorted_columns(o2, j0, j1), s_ref, cpl)
    return [out.reshape(rest) for out in outs]


def _w1_against_periodic(ref, others, periods) -> list[np.ndarray]:
    """:func:`_w1_against` with the periodic components on the circle."""
    flat = [j for j, r in enumerate(periods) if r is None]
    outs = [np.empty(ref.shape[1:]) for _ in others]
    if flat:
        parts = _w1_against(ref[..., flat], [o[..., flat] for o in others])
        for out, part in zip(outs, parts, strict=True):
            out[..., flat] = part
    for j, r in enumerate(periods):
        if r is None:
            continue
        period = float(r[1] - r[0])
        rj = ref[..., j].reshape(ref.shape[0], -1).T
        for out, o in zip(outs, others, strict=True):
            oj = o[..., j].reshape(o.shape[0], -1).T
            out[..., j] = _w1_circle_rows(oj, rj, period).reshape(out.shape[:-1])
    return outs


def wasserstein1(a: Any, b: Any) -> np.ndarray | float:
    """Exact 1-Wasserstein distance between two empirical distributions along axis 0.

    For samples :math:`a_1..a_{n_a}` and :math:`b_1..b_{n_b}` with empirical CDFs
    :math:`F_a, F_b`,

    .. math:: W_1 = \\int_{-\\infty}^{\\infty} |F_a(x) - F_b(x)|\\,dx .

    For :math:`n_a = n_b = n` this equals :math:`\\frac1n\\sum_i |a_{(i)} - b_{(i)}|` (sorted
    samples). In general :math:`W_1 = \\int_0^1 |F_a^{-1}(u) - F_b^{-1}(u)|\\,du`, and both
    empirical quantile functions are constant between the breakpoints :math:`i/n_a` and
    :math:`j/n_b`, so the integral is an exact finite sum over at most :math:`n_a + n_b - 1`
    intervals (the merge is done in integer arithmetic). Every column (every index of the
    trailing axes) is an independent 1-D problem; the computation is vectorized and chunked
    over columns. Agrees with
    :func:`scipy.stats.wasserstein_distance` to rounding.

    Parameters
    ----------
    a : array_like, shape (n_a, *rest)
    b : array_like, shape (n_b, *rest)
        Samples along axis 0; the trailing shapes must agree (``n_a`` and ``n_b`` may differ).

    Returns
    -------
    ndarray of shape ``rest``, or float when ``rest == ()``
    """
    a = _as_float_array(a, "a")
    b = _as_float_array(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise DataError(f"a and b need a sample axis 0, got shapes {a.shape} and {b.shape}.")
    if a.shape[1:] != b.shape[1:]:
        raise DataError(
            f"a has shape {a.shape} and b has shape {b.shape}: all axes but axis 0 must agree."
        )
    if a.shape[0] < 1 or b.shape[0] < 1:
        raise DataError(f"a (shape {a.shape}) and b (shape {b.shape}) need at least 1 sample.")
    _check_finite(a, "a")
    _check_finite(b, "b")
    out = _w1_against(b, [a])[0]
    return float(out) if out.ndim == 0 else out


def w1_marginals(pred: Any, ref: Any, periods: Sequence | None = None) -> np.ndarray:
    """W1 between the marginal laws of two ensembles, per time step and component.

    ``out[t, k] = W1({pred[p, t, k]}_p, {ref[q, t, k]}_q)`` (see :func:`wasserstein1`; on
    the circle, :func:`wasserstein1_circle`, for a component with a range in ``periods``).

    Parameters
    ----------
    pred, ref : array_like, shape (n_paths, n_steps + 1, d)
        Ensembles; the path counts may differ.
    periods : sequence of (lo, hi) or None per component, optional
        Periodic components (angles).

    Returns
    -------
    ndarray, shape (n_steps + 1, d)
    """
    pred, ref = _ensembles([("pred", pred), ("ref", ref)])
    return _w1_against(ref, [pred], periods)[0]


def _times_to_indices(times: Any, dt: float, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1 or not np.isfinite(t).all():
        raise ConfigError(f"times must be a finite number or 1-D sequence, got {times!r}.")
    idx = np.rint(t / dt).astype(np.int64)
    bad = (idx < 0) | (idx > n_steps)
    if bad.any():
        raise ConfigError(
            f"times {t[bad].tolist()} lie outside the simulated interval [0, {n_steps * dt:g}] "
            f"(n_steps={n_steps}, dt={dt:g})."
        )
    return t, idx


def w1_report(
    pred: Any,
    ref_a: Any,
    ref_b: Any,
    dt: float,
    times: Any = None,
    periods: Sequence | None = None,
) -> dict[str, Any]:
    """Marginal W1 of a prediction against a reference, with the Monte-Carlo noise floor.

    Periodic components (a range (lo, hi) in ``periods``) are compared on the circle.

    With ``w1[t, k] = W1(pred[:, t, k], A[:, t, k])`` and ``floor[t, k] = W1(B[:, t, k],
    A[:, t, k])`` (``A = ref_a``, ``B = ref_b``, an independent ensemble of the reference law):

    * ``ratio_per_step[t, k] = w1[t, k] / floor[t, k]`` (NaN where the floor is 0);
    * ``w1_time_avg[k] = mean_{t >= t0} w1[t, k]``, ``floor_time_avg[k]`` likewise, and
      ``ratio_time_avg[k] = w1_time_avg[k] / floor_time_avg[k]`` -- a ratio of time averages,
      not an average of the noisy per-step ratios. ``t0 = 1`` when step 0 is degenerate
      (``w1`` and ``floor`` are exactly 0 there for every component, as happens when all paths
      start at the same point), else ``t0 = 0``; it is reported as ``time_avg_start_index``.
    * at the requested physical ``times``, mapped to the nearest step ``round(time / dt)``:
      ``w1_at_times``, ``floor_at_times``, ``ratio_at_times`` (arrays (n_times, d)).

    For the floor to be a fair yardstick ``ref_b`` should hold as many paths as ``pred``.

    Parameters
    ----------
    pred, ref_a, ref_b : array_like, shape (n_paths, n_steps + 1, d)
        Predicted ensemble and two independent reference ensembles (path counts may differ).
    dt : float
        Time between consecutive steps (> 0).
    times : float or sequence of float, optional
        Physical times at which to report values; each must lie in ``[0, n_steps * dt]`` up
        to half a step.

    Returns
    -------
    dict
        ``dt``, ``n_steps``, ``d``, ``n_paths`` (dict of the three path counts),
        ``w1``, ``floor``, ``ratio_per_step`` (arrays (n_steps + 1, d)),
        ``time_avg_start_index``, ``w1_time_avg``, ``floor_time_avg``, ``ratio_time_avg``
        (arrays (d,)), and when ``times`` is given: ``times`` (requested), ``step_indices``,
        ``times_actual`` (``step_indices * dt``), ``w1_at_times``, ``floor_at_times``,
        ``ratio_at_times``. Convert with :func:`to_jsonable` before writing JSON.
    """
    pred, ref_a, ref_b = _ensembles([("pred", pred), ("ref_a", ref_a), ("ref_b", ref_b)])
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive finite number, got {dt!r}.")
    n_steps = pred.shape[1] - 1
    w1, floor = _w1_against(ref_a, [pred, ref_b], periods)
    t0 = 1 if n_steps >= 1 and not w1[0].any() and not floor[0].any() else 0
    w1_avg = w1[t0:].mean(axis=0)
    floor_avg = floor[t0:].mean(axis=0)
    report: dict[str, Any] = {
        "dt": dt,
        "n_steps": n_steps,
        "d": pred.shape[2],
        "n_paths": {"pred": pred.shape[0], "ref_a": ref_a.shape[0], "ref_b": ref_b.shape[0]},
        "w1": w1,
        "floor": floor,
        "ratio_per_step": _safe_ratio(w1, floor),
        "time_avg_start_index": t0,
        "w1_time_avg": w1_avg,
        "floor_time_avg": floor_avg,
        "ratio_time_avg": _safe_ratio(w1_avg, floor_avg),
    }
    if times is not None:
        t, idx = _times_to_indices(times, dt, n_steps)
        report.update(
            times=t,
            step_indices=idx,
            times_actual=idx * dt,
            w1_at_times=w1[idx],
            floor_at_times=floor[idx],
            ratio_at_times=_safe_ratio(w1[idx], floor[idx]),
        )
    return report


# ---------------------------------------------------------------------------------------------
# Joint (multivariate) distances
# ---------------------------------------------------------------------------------------------


def _point_cloud(x: Any, name: str, min_points: int = 1) -> np.ndarray:
    arr = _as_float_array(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (n, d) or (n,), got shape {arr.shape}.")
    if arr.shape[0] < min_points or arr.shape[1] < 1:
        raise DataError(f"{name} has shape {arr.shape}: at least {min_points} points needed.")
    _check_finite(arr, name)
    return arr


def _point_clouds(a: Any, b: Any, min_points: int = 1) -> tuple[np.ndarray, np.ndarray]:
    a2 = _point_cloud(a, "a", min_points)
    b2 = _point_cloud(b, "b", min_points)
    if a2.shape[1] != b2.shape[1]:
        raise DataError(
            f"a has shape {np.shape(a)} and b has shape {np.shape(b)}: the dimension d must agree."
        )
    return a2, b2


def energy_distance(a: Any, b: Any, max_n: int = 2000, seed: int = 0) -> float:
    """Squared energy distance between two samples in :math:`\\mathbb R^d`.

    .. math:: D^2 = 2\\,E\\|X - Y\\| - E\\|X - X'\\| - E\\|Y - Y'\\|

    estimated with the mean over all cross pairs for :math:`E\\|X-Y\\|` and U-statistics
    (means over pairs ``i != j``) for the within-sample terms, so that the estimate is unbiased
    for the population :math:`D^2 \\ge 0` (it can be slightly negative for equal laws). Samples
    larger than ``max_n`` are first subsampled without replacement to ``max_n`` points with
    ``numpy.random.default_rng(seed)`` (``a`` first, then ``b``); cost O(max_n^2 d).
    :math:`D^2 = 0` iff the laws are equal. For d = 1 it equals twice the Cramer distance
    :math:`\\int (F_X - F_Y)^2`.

    Parameters
    ----------
    a : array_like, shape (n_a, d) or (n_a,)
    b : array_like, shape (n_b, d) or (n_b,)
        Samples (at least 2 points each).
    max_n : int
        Maximum number of points used from each sample.
    seed : int
        Seed of the subsampling.

    Returns
    -------
    float
    """
    a2, b2 = _point_clouds(a, b, min_points=2)
    max_n = _positive_int(max_n, "max_n", minimum=2)
    rng = np.random.default_rng(seed)
    if a2.shape[0] > max_n:
        a2 = a2[rng.choice(a2.shape[0], size=max_n, replace=False)]
    if b2.shape[0] > max_n:
        b2 = b2[rng.choice(b2.shape[0], size=max_n, replace=False)]
    a2 = a2.astype(np.float64, copy=False)
    b2 = b2.astype(np.float64, copy=False)
    cross = cdist(a2, b2).mean()
    within_a = pdist(a2).mean()  # mean over i < j == mean over i != j
    within_b = pdist(b2).mean()
    return float(2.0 * cross - within_a - within_b)


def _unit_directions(n_projections: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_projections, d))
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    return dirs / np.where(norms == 0, 1.0, norms)


def sliced_w1(a: Any, b: Any, n_projections: int = 64, seed: int = 0) -> float:
    """Sliced 1-Wasserstein distance between two samples in :math:`\\mathbb R^d`.

    .. math:: SW_1 = \\frac1L \\sum_{l=1}^{L} W_1(\\theta_l^\\top X, \\theta_l^\\top Y)

    with ``L = n_projections`` directions :math:`\\theta_l` drawn uniformly on the unit sphere
    (normalized Gaussian vectors from ``numpy.random.default_rng(seed)``); each 1-D W1 is exact
    (:func:`wasserstein1`). For d = 1 every direction is +-1 and the result equals the 1-D W1.
    The same seed gives the same directions, so distances computed with one seed are comparable.

    Parameters
    ----------
    a : array_like, shape (n_a, d) or (n_a,)
    b : array_like, shape (n_b, d) or (n_b,)
    n_projections : int
    seed : int

    Returns
    -------
    float
    """
    a2, b2 = _point_clouds(a, b)
    n_projections = _positive_int(n_projections, "n_projections")
    dirs = _unit_directions(n_projections, a2.shape[1], seed)
    pa = a2.astype(np.float64, copy=False) @ dirs.T  # (n_a, L)
    pb = b2.astype(np.float64, copy=False) @ dirs.T
    return float(_w1_against(pb, [pa])[0].mean())


def joint_report(
    pred: Any,
    ref_a: Any,
    ref_b: Any,
    step_indices: Any,
    *,
    max_n: int = 2000,
    n_projections: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """Joint (all ``d`` components together) distances at selected time steps, with floors.

    For each step ``s`` in ``step_indices``: ``energy[s] = energy_distance(pred[:, s], A[:, s])``
    and ``energy_floor[s] = energy_distance(B[:, s], A[:, s])``; ``sliced_w1`` and
    ``sliced_w1_floor`` likewise with :func:`sliced_w1`. The same ``seed`` is used for every
    call, so the prediction and the floor are measured with the same projection directions.
    Meant for d >= 2 (for d = 1 the sliced W1 reduces to the marginal W1).

    Parameters
    ----------
    pred, ref_a, ref_b : array_like, shape (n_paths, n_steps + 1, d)
    step_indices : sequence of int
        Steps to evaluate (negative values count from the end).
    max_n, n_projections, seed
        Passed to :func:`energy_distance` and :func:`sliced_w1`.

    Returns
    -------
    dict
        ``step_indices`` (normalized), and arrays of shape (n_indices,): ``energy``,
        ``energy_floor``, ``energy_ratio``, ``sliced_w1``, ``sliced_w1_floor``,
        ``sliced_w1_ratio`` (ratios NaN where the floor is 0).
    """
    pred, ref_a, ref_b = _ensembles(
        [("pred", pred), ("ref_a", ref_a), ("ref_b", ref_b)], min_paths=2
    )
    idx = _step_indices(step_indices, pred.shape[1])
    energy = np.empty(idx.size)
    energy_floor = np.empty(idx.size)
    sw = np.empty(idx.size)
    sw_floor = np.empty(idx.size)
    for i, s in enumerate(idx):
        a_s = ref_a[:, s]
        energy[i] = energy_distance(pred[:, s], a_s, max_n=max_n, seed=seed)
        energy_floor[i] = energy_distance(ref_b[:, s], a_s, max_n=max_n, seed=seed)
        sw[i] = sliced_w1(pred[:, s], a_s, n_projections=n_projections, seed=seed)
        sw_floor[i] = sliced_w1(ref_b[:, s], a_s, n_projections=n_projections, seed=seed)
    return {
        "step_indices": idx,
        "energy": energy,
        "energy_floor": energy_floor,
        "energy_ratio": _safe_ratio(energy, energy_floor),
        "sliced_w1": sw,
        "sliced_w1_floor": sw_floor,
        "sliced_w1_ratio": _safe_ratio(sw, sw_floor),
    }


# ---------------------------------------------------------------------------------------------
# Autocorrelation
# ---------------------------------------------------------------------------------------------


def autocorrelation(paths: Any, max_lag: int) -> np.ndarray:
    """Pooled lag autocorrelation of an ensemble after removing each step's ensemble mean.

    With :math:`y_{p,t,k} = x_{p,t,k} - \\frac1N\\sum_q x_{q,t,k}` (centred per time step, so
    a time-dependent mean does not masquerade as correlation) and ``T = n_steps + 1``,

    .. math::
        \\rho_k(\\ell) = \\frac{\\sum_p \\sum_{t=0}^{T-1-\\ell} y_{p,t,k}\\,y_{p,t+\\ell,k}}
        {\\sqrt{\\sum_p \\sum_{t=0}^{T-1-\\ell} y_{p,t,k}^2\\;
                \\sum_p \\sum_{t=0}^{T-1-\\ell} y_{p,t+\\ell,k}^2}}

    i.e. the Pearson correlation (about the per-step means) of all pairs
    :math:`(y_{p,t}, y_{p,t+\\ell})`, pooled over paths and start times. :math:`\\rho(0) = 1`;
    for a stationary AR(1) process :math:`\\rho(\\ell) \\approx \\phi^\\ell`. The normalization by
    the variances of the two windows keeps :math:`|\\rho| \\le 1` also when the spread changes
    with time (e.g. ensembles started from one point). The lag sums are computed with an FFT
    along time (O(N T log T)), chunked over paths. NaN where a window has zero variance.

    Parameters
    ----------
    paths : array_like, shape (n_paths, n_steps + 1, d)
        Ensemble, at least 2 paths.
    max_lag : int
        Largest lag in steps, ``0 <= max_lag <= n_steps``.

    Returns
    -------
    ndarray, shape (max_lag + 1, d)
    """
    (x,) = _ensembles([("paths", paths)], min_paths=2)
    n, n_time, d = x.shape
    max_lag = _positive_int(max_lag, "max_lag", minimum=0)
    if max_lag > n_time - 1:
        raise ConfigError(f"max_lag={max_lag} exceeds n_steps={n_time - 1} of paths {x.shape}.")
    mean = x.sum(axis=0, dtype=np.float64) / n  # (T, d)
    return _autocorrelation(x, mean, max_lag)


def _autocorrelation(x: Any, mean: np.ndarray, max_lag: int, name: str = "paths") -> np.ndarray:
    """:func:`autocorrelation` of ``x`` (anything sliceable along axis 0 into arrays, e.g. an
    :class:`NpyArray`) about the given per-step ``mean`` (T, d), reading chunks of paths."""
    n, n_time, d = x.shape
    nfft = sp_fft.next_fast_len(n_time + max_lag, real=True)
    power = np.zeros((d, nfft // 2 + 1), dtype=np.float64)
    sq = np.zeros((n_time, d), dtype=np.float64)
    step = max(1, _CHUNK_ELEMENTS // (nfft * d))
    for i in range(0, n, step):
        y = np.asarray(x[i : i + step], dtype=np.float64) - mean  # (c, T, d)
        _check_chunk(y, i, name)
        sq += np.einsum("ptk,ptk->tk", y, y)
        spec = sp_fft.rfft(np.ascontiguousarray(y.transpose(0, 2, 1)), n=nfft, axis=-1)
        power += (spec.real**2 + spec.imag**2).sum(axis=0)
    lag_sums = sp_fft.irfft(power, n=nfft, axis=-1)[:, : max_lag + 1].T  # (L + 1, d)
    csum = np.concatenate([np.zeros((1, d)), np.cumsum(sq, axis=0)])  # csum[j] = sum_{t<j}
    lags = np.arange(max_lag + 1)
    head = csum[n_time - lags]  # sum_{t=0}^{T-1-l} y_t^2
    tail = csum[n_time] - csum[lags]  # sum_{t=l}^{T-1} y_t^2
    rho = _safe_ratio(lag_sums, np.sqrt(head * tail))
    rho[0] = _safe_ratio(csum[n_time], csum[n_time])  # exactly 1 (NaN if no spread at all)
    return np.clip(rho, -1.0, 1.0)


def autocorrelation_error(pred: Any, ref: Any, max_lag: int) -> dict[str, np.ndarray]:
    """Difference between the pooled autocorrelations (:func:`autocorrelation`) of two ensembles.

    Parameters
    ----------
    pred, ref : array_like, shape (n_paths, n_steps + 1, d)
    max_lag : int

    Returns
    -------
    dict
        ``lags`` (max_lag + 1,), ``acf_pred``, ``acf_ref``, ``error = acf_pred - acf_ref``
        (arrays (max_lag + 1, d)), and over the lags 1..max_lag (lag 0 is 1 for both):
        ``mean_abs_error`` and ``max_abs_error`` (arrays (d,); NaN when ``max_lag == 0``).
    """
    pred, ref = _ensembles([("pred", pred), ("ref", ref)], min_paths=2)
    acf_p = autocorrelation(pred, max_lag)
    acf_r = autocorrelation(ref, max_lag)
    err = acf_p - acf_r
    tail = np.abs(err[1:])
    d = err.shape[1]
    return {
        "lags": np.arange(err.shape[0]),
        "acf_pred": acf_p,
        "acf_ref": acf_r,
        "error": err,
        "mean_abs_error": tail.mean(axis=0) if tail.size else np.full(d, np.nan),
        "max_abs_error": tail.max(axis=0) if tail.size else np.full(d, np.nan),
    }


# ---------------------------------------------------------------------------------------------
# Histograms
# ---------------------------------------------------------------------------------------------


def histograms(
    pred: Any, ref: Any, step_indices: Any, bins: int | str = 50
) -> list[dict[str, Any]]:
    """Density histograms of both ensembles on common bins, for plotting marginals.

    For every step ``s`` in ``step_indices`` and every component ``k`` the bin edges are
    ``numpy.histogram_bin_edges`` of the pooled values ``pred[:, s, k]`` and ``ref[:, s, k]``,
    and each density integrates to 1 over them (``sum(density * diff(edges)) == 1``).

    Parameters
    ----------
    pred, ref : array_like, shape (n_paths, n_steps + 1, d)
    step_indices : sequence of int
        Steps to histogram (negative values count from the end).
    bins : int or str
        Number of bins, or a numpy bin-estimator name such as ``"auto"``.

    Returns
    -------
    list of dict
        One dict per (step, component), ordered step-major, with keys ``step``,
        ``component``, ``edges`` (n_bins + 1,), ``pred_density`` and ``ref_density``
        (n_bins,).
    """
    pred, ref = _ensembles([("pred", pred), ("ref", ref)])
    idx = _step_indices(step_indices, pred.shape[1])
    if not isinstance(bins, str):
        bins = _positive_int(bins, "bins")
    out: list[dict[str, Any]] = []
    for s in idx:
        for k in range(pred.shape[2]):
            p = pred[:, s, k].astype(np.float64)
            r = ref[:, s, k].astype(np.float64)
            edges = np.histogram_bin_edges(np.concatenate([p, r]), bins=bins)
            out.append(
                {
                    "step": int(s),
                    "component": k,
                    "edges": edges,
                    "pred_density": np.histogram(p, bins=edges, density=True)[0],
                    "ref_density": np.histogram(r, bins=edges, density=True)[0],
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# Scoring rules and calibration
# ---------------------------------------------------------------------------------------------


def _forecast_pair(
    samples: Any, obs: Any, multivariate: bool, min_members: int
) -> tuple[np.ndarray, np.ndarray]:
    s = _as_float_array(samples, "samples")
    o = _as_float_array(obs, "obs")
    if multivariate:
        ok = s.ndim == 3 and o.ndim == 2 and s.shape[1:] == o.shape
        expected = "samples (m, n, d) and obs (n, d)"
    else:
        ok = s.ndim == 2 and o.ndim == 1 and s.shape[1:] == o.shape
        expected = "samples (m, n) and obs (n,)"
    if not ok:
        raise DataError(
            f"samples has shape {s.shape} and obs has shape {o.shape}: expected {expected}."
        )
    if s.shape[0] < min_members:
        raise DataError(
            f"samples has shape {s.shape}: at least {min_members} ensemble members are needed."
        )
    _check_finite(s, "samples")
    _check_finite(o, "obs")
    return s.astype(np.float64, copy=False), o.astype(np.float64, copy=False)


def crps_ensemble(samples: Any, obs: Any) -> np.ndarray:
    """Fair (unbiased) ensemble CRPS of each observation.

    For members :math:`x_1..x_m` and observation :math:`y`,

    .. math::
        \\mathrm{CRPS}_\\mathrm{fair} = \\frac1m\\sum_i |x_i - y|
        - \\frac{1}{2m(m-1)}\\sum_{i \\ne j} |x_i - x_j| ,

    whose expectation over ensembles drawn from :math:`F` is exactly
    :math:`\\mathrm{CRPS}(F, y) = E|X - y| - \\tfrac12 E|X - X'|`. With the sorted members
    :math:`x_{(1)} \\le \\dots \\le x_{(m)}`,
    :math:`\\sum_{i \\ne j}|x_i - x_j| = 2\\sum_{k=1}^m (2k - m - 1)\\,x_{(k)}`, so the cost is
    O(m log m) per observation. Lower is better.

    Parameters
    ----------
    samples : array_like, shape (m, n)
        ``m >= 2`` ensemble members for each of ``n`` observations.
    obs : array_like, shape (n,)

    Returns
    -------
    ndarray, shape (n,)
    """
    s, o = _forecast_pair(samples, obs, multivariate=False, min_members=2)
    m = s.shape[0]
    abs_err = np.abs(s - o).mean(axis=0)
    weights = 2.0 * np.arange(1, m + 1) - m - 1  # (2k - m - 1)
    spread = weights @ np.sort(s, axis=0)  # = (1/2) sum_{i != j} |x_i - x_j|
    return abs_err - spread / (m * (m - 1))


def energy_score(samples: Any, obs: Any) -> np.ndarray:
    """Fair (unbiased) ensemble energy score of each multivariate observation.

    .. math::
        \\mathrm{ES}_\\mathrm{fair} = \\frac1m\\sum_i \\|x_i - y\\|
        - \\frac{1}{2m(m-1)}\\sum_{i \\ne j} \\|x_i - x_j\\|

    (Euclidean norms), unbiased for :math:`E\\|X - y\\| - \\tfrac12 E\\|X - X'\\|`; for d = 1 it
    equals :func:`crps_ensemble`. Cost O(m^2 n d), chunked over observations.

    Parameters
    ----------
    samples : array_like, shape (m, n, d)
        ``m >= 2`` members for each of ``n`` observations.
    obs : array_like, shape (n, d)

    Returns
    -------
    ndarray, shape (n,)
    """
    s, o = _forecast_pair(samples, obs, multivariate=True, min_members=2)
    m, n, d = s.shape
    abs_err = np.linalg.norm(s - o, axis=-1).mean(axis=0)
    spread = np.empty(n)
    step = max(1, _CHUNK_ELEMENTS // (m * m * d))
    for j0 in range(0, n, step):
        c = s[:, j0 : j0 + step]  # (m, c, d)
        diff = c[:, None] - c[None, :]  # (m, m, c, d)
        spread[j0 : j0 + step] = np.sqrt(np.einsum("ijcd,ijcd->ijc", diff, diff)).sum(axis=(0, 1))
    return abs_err - spread / (2.0 * m * (m - 1))


def pit_values(samples: Any, obs: Any, rng: np.random.Generator | int | None) -> np.ndarray:
    """Randomized probability integral transform (PIT) of observations in their ensembles.

    With :math:`b` the number of members strictly below the observation and :math:`e` the
    number equal to it, the rank of the observation among the ``m + 1`` values is drawn
    uniformly from :math:`\\{b, \\dots, b + e\\}` (ties broken uniformly at random) and spread
    uniformly over its rank cell:

    .. math:: \\mathrm{PIT} = \\frac{b + U\\,(e + 1)}{m + 1}, \\qquad U \\sim \\mathcal U(0, 1).

    For a calibrated ensemble (observation exchangeable with the members) the PIT is exactly
    uniform on [0, 1], with or without ties, so any binning of it can be tested for uniformity
    (:func:`pit_histogram`); ``floor(PIT * (m + 1))`` is the classical rank-histogram rank.

    Parameters
    ----------
    samples : array_like, shape (m, n)
    obs : array_like, shape (n,)
    rng : numpy.random.Generator, int or None
        Source of the randomization (an int is a seed).

    Returns
    -------
    ndarray, shape (n,), values in [0, 1]
    """
    s, o = _forecast_pair(samples, obs, multivariate=False, min_members=1)
    m = s.shape[0]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    below = np.count_nonzero(s < o, axis=0)
    equal = np.count_nonzero(s == o, axis=0)
    u = gen.random(o.shape[0])
    return np.minimum((below + u * (equal + 1)) / (m + 1), 1.0)


def pit_histogram(pit: Any, bins: int = 10) -> dict[str, Any]:
    """Histogram of PIT values on equal bins of [0, 1] and a chi-square test of uniformity.

    The statistic is :math:`\\chi^2 = \\sum_j (c_j - n/B)^2 / (n/B)` over the ``B = bins``
    counts :math:`c_j`, with ``B - 1`` degrees of freedom (``scipy.stats.chisquare``). The test
    is reliable when every expected count ``n / B`` is at least about 5. A small p-value means
    the PIT is not uniform: U-shaped counts indicate an under-dispersed ensemble, hump-shaped an
    over-dispersed one, sloped a biased one.

    Parameters
    ----------
    pit : array_like, shape (n,)
        PIT values in [0, 1] (e.g. from :func:`pit_values`).
    bins : int
        Number of equal-width bins (>= 2).

    Returns
    -------
    dict
        ``counts`` (bins,), ``edges`` (bins + 1,), ``density`` (bins,; 1 everywhere for a
        perfectly uniform PIT), ``n``, ``chi2``, ``p_value``.
    """
    p = _as_float_array(pit, "pit").ravel()
    _check_finite(p, "pit")
    if p.size == 0:
        raise DataError("pit is empty.")
    if (p < 0).any() or (p > 1).any():
        raise DataError(f"pit values must lie in [0, 1], got range [{p.min()}, {p.max()}].")
    bins = _positive_int(bins, "bins", minimum=2)
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts = np.histogram(p, bins=edges)[0]
    chi2, p_value = stats.chisquare(counts)
    return {
        "counts": counts,
        "edges": edges,
        "density": counts * bins / p.size,
        "n": int(p.size),
        "chi2": float(chi2),
        "p_value": float(p_value),
    }


def gaussian_crps(mu: Any, sigma: Any, obs: Any) -> np.ndarray | float:
    """Closed-form CRPS of a Gaussian forecast :math:`\\mathcal N(\\mu, \\sigma^2)`.

    .. math::
        \\mathrm{CRPS} = \\sigma\\Big[z\\,(2\\Phi(z) - 1) + 2\\varphi(z)
        - \\frac1{\\sqrt\\pi}\\Big], \\qquad z = \\frac{y - \\mu}{\\sigma},

    and :math:`|y - \\mu|` in the limit :math:`\\sigma = 0`. Broadcasts its arguments.

    Parameters
    ----------
    mu, sigma, obs : array_like
        Forecast means, standard deviations (>= 0) and observations.

    Returns
    -------
    ndarray (broadcast shape), or float for scalar inputs
    """
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    if (sigma < 0).any():
        raise DataError("sigma must be >= 0.")
    pos = sigma > 0
    safe_sigma = np.where(pos, sigma, 1.0)
    z = (y - mu) / safe_sigma
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    crps = safe_sigma * (z * special.erf(z / math.sqrt(2.0)) + 2.0 * pdf - 1.0 / math.sqrt(math.pi))
    out = np.where(pos, crps, np.abs(y - mu))
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------
# Ensembles larger than memory: chunk-wise statistics
# ---------------------------------------------------------------------------------------------


class NpyArray:
    """A 3-D array ``(n_paths, T, d)`` in a ``.npy`` file, read in slices of paths.

    ``x[i:j]`` reads paths ``i..j-1`` with ordinary file reads into a new array, so only
    the slices being used are in memory (unlike a :class:`numpy.memmap`, whose pages count
    towards the process's resident memory until unmapped). Has ``shape``, ``dtype``,
    ``ndim``, ``nbytes`` and ``path``; ``numpy.asarray(x)`` reads everything.

    Raises :class:`DataError` (one line naming the file) for a missing or truncated file, a
    file without a NumPy header, Fortran order, a non-numeric dtype or a shape that is not
    3-D.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        src = str(path)
        if not self.path.is_file():
            raise DataError(f"{src}: no such file")
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
                self.offset = fh.tell()
        except (ValueError, OSError, EOFError) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"{src}: not a readable .npy file ({text})") from None
        dtype = np.dtype(dtype)
        if dtype.kind not in "iuf" or dtype.hasobject:
            raise DataError(f"{src}: the array has dtype {dtype}; expected a numeric array")
        if len(shape) != 3 or 0 in shape:
            raise DataError(
                f"{src}: the array has shape {tuple(shape)}; expected (n_paths, n_steps + 1, d)"
            )
        if fortran:
            raise DataError(f"{src}: the array is in Fortran order; expected C order")
        self.shape, self.dtype = tuple(int(v) for v in shape), dtype
        self.ndim = 3
        self._row = self.shape[1] * self.shape[2]
        self.nbytes = self.shape[0] * self._row * dtype.itemsize
        size = self.path.stat().st_size
        if size < self.offset + self.nbytes:
            raise DataError(
                f"{src}: truncated .npy file ({size} bytes, the header announces shape "
                f"{self.shape} = {self.offset + self.nbytes} bytes)"
            )

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = operator.index(key)
            i = i + self.shape[0] if i < 0 else i
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"path {key} out of range for {self.shape[0]} paths")
            return self[i : i + 1][(0, *rest)]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyArray supports x[i:j] (and x[i:j, ...]) and x[i] only")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        count = (stop - start) * self._row
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self._row * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=count)
        if out.size != count:
            raise DataError(f"{self.path}: file shrank while reading (truncated .npy)")
        out = out.reshape(stop - start, *self.shape[1:])
        return out[(slice(None), *rest)] if rest else out


def _check_chunk(block: np.ndarray, first_path: int, name: str) -> None:
    """Reject a chunk of paths with a non-finite value, naming its path, step and component."""
    if not np.isfinite(block).all():
        p, t, k = np.argwhere(~np.isfinite(block))[0]
        raise DataError(
            f"{name}: non-finite value {block[p, t, k]} at path {first_path + p}, step {t}, "
            f"component {k}; ensembles must be finite."
        )


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
        return max(1, _CHUNK_ELEMENTS // max(1, row_elements))
    return _positive_int(value, "chunk_paths")


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
    idx = _step_indices(step_indices, n_time) if np.size(step_indices) else np.zeros(0, int)
    step = _chunk_paths(chunk_paths, n_time * d)
    slices = np.empty((n, idx.size, d), dtype=x.dtype)
    count, mean, m2 = 0, np.zeros((n_time, d)), np.zeros((n_time, d))
    for i in range(0, n, step):
        raw = np.asarray(x[i : i + step])
        block = raw.astype(np.float64, copy=False)
        _check_chunk(block, i, name)
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
    return _moment_errors(pred.mean, pred.std, ref.mean, ref.std)


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
    return _w1_against(ref.slices, [pred.slices])[0]


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
    idx = _step_indices(step_indices, n_time)
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
        sorted_out = _w1_against(scans[1].slices, [s.slices for s in scans[:1] + scans[2:]])
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
    max_lag = _positive_int(max_lag, "max_lag", minimum=0)
    if max_lag > n_time - 1:
        raise ConfigError(f"max_lag={max_lag} exceeds n_steps={n_time - 1} of {name}.")
    if mean is None:
        mean = scan_ensemble(x, name=name).mean
    mean = np.asarray(mean, dtype=np.float64)
    if mean.shape != (n_time, d):
        raise ConfigError(f"mean has shape {mean.shape}; expected {(n_time, d)}.")
    return _autocorrelation(x, mean, max_lag, name)
