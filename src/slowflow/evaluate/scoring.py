"""Proper scores of ensemble forecasts: CRPS, the energy score, PIT values and histograms."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special, stats

from ..errors import DataError
from .arrays import CHUNK_ELEMENTS, as_float_array, check_finite, positive_int


def _forecast_pair(
    samples: Any, obs: Any, multivariate: bool, min_members: int
) -> tuple[np.ndarray, np.ndarray]:
    s = as_float_array(samples, "samples")
    o = as_float_array(obs, "obs")
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
    check_finite(s, "samples")
    check_finite(o, "obs")
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
    step = max(1, CHUNK_ELEMENTS // (m * m * d))
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
    p = as_float_array(pit, "pit").ravel()
    check_finite(p, "pit")
    if p.size == 0:
        raise DataError("pit is empty.")
    if (p < 0).any() or (p > 1).any():
        raise DataError(f"pit values must lie in [0, 1], got range [{p.min()}, {p.max()}].")
    bins = positive_int(bins, "bins", minimum=2)
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
