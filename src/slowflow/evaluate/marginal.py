"""Marginal laws: moments, and the exact W1 of one time step and component (on the line,
or on the circle for angles), with the Monte-Carlo noise floor; histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .arrays import (
    CHUNK_ELEMENTS,
    as_float_array,
    as_step_indices,
    check_finite,
    ensembles,
    positive_int,
    safe_ratio,
)


def mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and standard deviation (ddof=1) along axis 0, in float64, chunked."""
    n = x.shape[0]
    rest = x.shape[1:]
    mean = x.sum(axis=0, dtype=np.float64) / n
    ss = np.zeros(rest, dtype=np.float64)
    step = max(1, CHUNK_ELEMENTS // max(1, int(np.prod(rest))))
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
    pred, ref = ensembles([("pred", pred), ("ref", ref)], min_paths=2)
    mean_p, std_p = mean_std(pred)
    mean_r, std_r = mean_std(ref)
    return moment_errors_from(mean_p, std_p, mean_r, std_r)


def moment_errors_from(mean_p, std_p, mean_r, std_r) -> dict[str, np.ndarray]:
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
        "mean_abs_rel_std_error": safe_ratio(abs_rel_sum, counts),
    }


def quantile_coupling(na: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intervals of [0, 1] on which both empirical quantile functions are constant.

    The quantile function of ``n`` sorted samples is ``x_(i)`` on ``(i/n, (i+1)/n]``. In units
    of ``1 / (na * nb)`` the breakpoints ``i * nb`` and ``j * na`` are integers, so the merged
    grid is exact. Returns the sample index of ``a`` and of ``b`` on every interval and the
    interval widths (which sum to 1).
    """
    cuts = np.union1d(np.arange(na + 1) * nb, np.arange(nb + 1) * na)  # 0 .. na * nb
    starts = cuts[:-1]
    return starts // nb, starts // na, np.diff(cuts) / (na * nb)


def w1_sorted_rows(
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
    ia, ib, width = coupling if coupling is not None else quantile_coupling(na, nb)
    return np.abs(sa[:, ia] - sb[:, ib]) @ width


def sorted_columns(x2: np.ndarray, j0: int, j1: int) -> np.ndarray:
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
    a, b = as_float_array(a, "a"), as_float_array(b, "b")
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


def w1_against(
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
    step = max(1, CHUNK_ELEMENTS // biggest)
    n_ref = ref2.shape[0]
    couplings = [
        None if o2.shape[0] == n_ref else quantile_coupling(o2.shape[0], n_ref) for o2 in others2
    ]
    outs = [np.empty(m, dtype=np.float64) for _ in others2]
    for j0 in range(0, m, step):
        j1 = min(m, j0 + step)
        s_ref = sorted_columns(ref2, j0, j1)
        for o2, cpl, out in zip(others2, couplings, outs, strict=True):
            out[j0:j1] = w1_sorted_rows(sorted_columns(o2, j0, j1), s_ref, cpl)
    return [out.reshape(rest) for out in outs]


def _w1_against_periodic(ref, others, periods) -> list[np.ndarray]:
    """:func:`w1_against` with the periodic components on the circle."""
    flat = [j for j, r in enumerate(periods) if r is None]
    outs = [np.empty(ref.shape[1:]) for _ in others]
    if flat:
        parts = w1_against(ref[..., flat], [o[..., flat] for o in others])
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
    a = as_float_array(a, "a")
    b = as_float_array(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise DataError(f"a and b need a sample axis 0, got shapes {a.shape} and {b.shape}.")
    if a.shape[1:] != b.shape[1:]:
        raise DataError(
            f"a has shape {a.shape} and b has shape {b.shape}: all axes but axis 0 must agree."
        )
    if a.shape[0] < 1 or b.shape[0] < 1:
        raise DataError(f"a (shape {a.shape}) and b (shape {b.shape}) need at least 1 sample.")
    check_finite(a, "a")
    check_finite(b, "b")
    out = w1_against(b, [a])[0]
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
    pred, ref = ensembles([("pred", pred), ("ref", ref)])
    return w1_against(ref, [pred], periods)[0]


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
    pred, ref_a, ref_b = ensembles([("pred", pred), ("ref_a", ref_a), ("ref_b", ref_b)])
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ConfigError(f"dt must be a positive finite number, got {dt!r}.")
    n_steps = pred.shape[1] - 1
    w1, floor = w1_against(ref_a, [pred, ref_b], periods)
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
        "ratio_per_step": safe_ratio(w1, floor),
        "time_avg_start_index": t0,
        "w1_time_avg": w1_avg,
        "floor_time_avg": floor_avg,
        "ratio_time_avg": safe_ratio(w1_avg, floor_avg),
    }
    if times is not None:
        t, idx = _times_to_indices(times, dt, n_steps)
        report.update(
            times=t,
            step_indices=idx,
            times_actual=idx * dt,
            w1_at_times=w1[idx],
            floor_at_times=floor[idx],
            ratio_at_times=safe_ratio(w1[idx], floor[idx]),
        )
    return report


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
    pred, ref = ensembles([("pred", pred), ("ref", ref)])
    idx = as_step_indices(step_indices, pred.shape[1])
    if not isinstance(bins, str):
        bins = positive_int(bins, "bins")
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
