"""Distances between the joint laws of several components at one time: energy distance
and sliced W1, with their noise floor."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.distance import cdist, pdist

from ..errors import DataError
from .arrays import (
    as_float_array,
    as_step_indices,
    check_finite,
    ensembles,
    positive_int,
    safe_ratio,
)
from .marginal import w1_against


def _point_cloud(x: Any, name: str, min_points: int = 1) -> np.ndarray:
    arr = as_float_array(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise DataError(f"{name} must have shape (n, d) or (n,), got shape {arr.shape}.")
    if arr.shape[0] < min_points or arr.shape[1] < 1:
        raise DataError(f"{name} has shape {arr.shape}: at least {min_points} points needed.")
    check_finite(arr, name)
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
    max_n = positive_int(max_n, "max_n", minimum=2)
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
    n_projections = positive_int(n_projections, "n_projections")
    dirs = _unit_directions(n_projections, a2.shape[1], seed)
    pa = a2.astype(np.float64, copy=False) @ dirs.T  # (n_a, L)
    pb = b2.astype(np.float64, copy=False) @ dirs.T
    return float(w1_against(pb, [pa])[0].mean())


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
    pred, ref_a, ref_b = ensembles(
        [("pred", pred), ("ref_a", ref_a), ("ref_b", ref_b)], min_paths=2
    )
    idx = as_step_indices(step_indices, pred.shape[1])
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
        "energy_ratio": safe_ratio(energy, energy_floor),
        "sliced_w1": sw,
        "sliced_w1_floor": sw_floor,
        "sliced_w1_ratio": safe_ratio(sw, sw_floor),
    }
