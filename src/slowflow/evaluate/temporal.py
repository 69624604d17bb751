"""Correlations in time: autocorrelation functions of ensembles and their errors."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import fft as sp_fft

from ..errors import ConfigError
from .arrays import CHUNK_ELEMENTS, check_chunk, ensembles, positive_int, safe_ratio


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
    (x,) = ensembles([("paths", paths)], min_paths=2)
    n, n_time, d = x.shape
    max_lag = positive_int(max_lag, "max_lag", minimum=0)
    if max_lag > n_time - 1:
        raise ConfigError(f"max_lag={max_lag} exceeds n_steps={n_time - 1} of paths {x.shape}.")
    mean = x.sum(axis=0, dtype=np.float64) / n  # (T, d)
    return autocorrelation_with_mean(x, mean, max_lag)


def autocorrelation_with_mean(
    x: Any, mean: np.ndarray, max_lag: int, name: str = "paths"
) -> np.ndarray:
    """:func:`autocorrelation` of ``x`` (anything sliceable along axis 0 into arrays, e.g. an
    :class:`NpyArray`) about the given per-step ``mean`` (T, d), reading chunks of paths."""
    n, n_time, d = x.shape
    nfft = sp_fft.next_fast_len(n_time + max_lag, real=True)
    power = np.zeros((d, nfft // 2 + 1), dtype=np.float64)
    sq = np.zeros((n_time, d), dtype=np.float64)
    step = max(1, CHUNK_ELEMENTS // (nfft * d))
    for i in range(0, n, step):
        y = np.asarray(x[i : i + step], dtype=np.float64) - mean  # (c, T, d)
        check_chunk(y, i, name)
        sq += np.einsum("ptk,ptk->tk", y, y)
        spec = sp_fft.rfft(np.ascontiguousarray(y.transpose(0, 2, 1)), n=nfft, axis=-1)
        power += (spec.real**2 + spec.imag**2).sum(axis=0)
    lag_sums = sp_fft.irfft(power, n=nfft, axis=-1)[:, : max_lag + 1].T  # (L + 1, d)
    csum = np.concatenate([np.zeros((1, d)), np.cumsum(sq, axis=0)])  # csum[j] = sum_{t<j}
    lags = np.arange(max_lag + 1)
    head = csum[n_time - lags]  # sum_{t=0}^{T-1-l} y_t^2
    tail = csum[n_time] - csum[lags]  # sum_{t=l}^{T-1} y_t^2
    rho = safe_ratio(lag_sums, np.sqrt(head * tail))
    rho[0] = safe_ratio(csum[n_time], csum[n_time])  # exactly 1 (NaN if no spread at all)
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
    pred, ref = ensembles([("pred", pred), ("ref", ref)], min_paths=2)
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
