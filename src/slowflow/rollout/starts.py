"""Where a rollout starts: points, or histories for a map with memory.

:func:`check_x0` turns what a user gives (one point, one per path, histories) into the
array a rollout starts from; :func:`draw_histories` gives a point the recent past the data
show near it; :func:`histories_from_file` reads explicit histories from a trajectory file.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import ConfigError, DataError
from ..io.limits import check_memory
from ..model.flowmap import FlowMap


def check_x0(model: FlowMap, x0, n_paths: int | None = None, seed: int = 0) -> np.ndarray:
    """Starts as an array (n, d): one point (d,) broadcast to ``n_paths``, or (n, d).

    For a map with memory K the result is histories (n, K + 1, d): given as one history
    (K + 1, d) for all paths or one per path (n, K + 1, d), or drawn for points by
    :func:`draw_histories` (seeded by ``seed``)."""
    x0 = np.asarray(x0, dtype=np.float64)
    d, k = model.dim, model.memory
    if k and x0.ndim >= 2 and x0.shape[-2:] == (k + 1, d):
        return _check_histories(model, x0, n_paths)
    starts = _check_points(model, x0, n_paths)
    _check_in_range(model, starts)
    return draw_histories(model, starts, seed) if k else starts


def _check_in_range(model: FlowMap, x: np.ndarray) -> None:
    """Periodic variables of starts must lie in the model's ranges."""
    for j in getattr(model, "periodic", ()):
        lo, length = float(model.period_lo[j]), float(model.period_len[j])
        v = x[..., j]
        bad = (v < lo - 1e-9 * length) | (v > lo + length * (1 + 1e-9))
        if bad.any():
            raise ConfigError(
                f"x0: variable {j} is periodic on [{lo:g}, {lo + length:g}] but the start has "
                f"{float(v[bad].flat[0]):g}"
            )


def _check_histories(model: FlowMap, h: np.ndarray, n_paths: int | None) -> np.ndarray:
    k, d = model.memory, model.dim
    if h.ndim == 2:
        if n_paths is None or int(n_paths) < 1:
            raise ConfigError(f"n_paths must be a positive integer, got {n_paths}")
        h = np.broadcast_to(h[None], (int(n_paths), k + 1, d))
    elif h.ndim != 3:
        raise ConfigError(f"histories must have shape (n, {k + 1}, {d}), got {h.shape}")
    elif n_paths is not None and int(n_paths) != h.shape[0]:
        raise ConfigError(f"the histories give {h.shape[0]} starts but n_paths={n_paths}")
    check_memory(8.0 * h.shape[0] * (k + 1) * d, f"n_paths={h.shape[0]} (CLI: --n-paths)")
    if not np.isfinite(h).all():
        raise ConfigError("histories must be finite")
    return np.ascontiguousarray(h)


def draw_histories(model: FlowMap, starts: np.ndarray, seed: int = 0, neighbours: int = 32):
    """Histories (n, K + 1, d) ending exactly at ``starts`` (n, d) for a map with memory K.

    The rule: for each start, one of the ``neighbours`` training windows (the model's
    ``history_bank``) whose last point lies nearest to the start (distance in units of the
    data's std) is drawn at random, and its past is moved with it:
    history = start + (window - window's last point). The recent increments are then
    those the data show near that point: a draw from the data's conditional law of the
    past given x_n, to the resolution of the bank (20,000 windows at most).
    """
    k = model.memory
    bank = getattr(model, "history_bank", None)
    if bank is None or bank.shape[0] == 0:
        raise ConfigError(
            f"this map has memory {k} but holds no training windows to draw histories from; "
            f"give explicit histories of {k + 1} observations (CLI: --history FILE)"
        )
    w = bank.detach().cpu().double().numpy()
    std = model.x_std.detach().cpu().double().numpy()
    ends = w[:, -1] / std
    rng = np.random.default_rng([int(seed), 13])
    m = min(int(neighbours), w.shape[0])
    uniq, inv = np.unique(starts, axis=0, return_inverse=True)
    out = np.empty((starts.shape[0], k + 1, model.dim))
    inv = inv.ravel()
    for u in range(0, uniq.shape[0], 256):  # distance blocks of 256 starts x bank
        block = uniq[u : u + 256] / std
        dist = ((block[:, None, :] - ends[None, :, :]) ** 2).sum(-1)
        near = np.argpartition(dist, m - 1, axis=1)[:, :m] if m < w.shape[0] else None
        for j in range(block.shape[0]):
            rows = np.flatnonzero(inv == u + j)
            pick = rng.integers(0, m, rows.size)
            idx = near[j, pick] if near is not None else pick
            out[rows] = uniq[u + j] + (w[idx] - w[idx, -1:])
    return out


def _check_points(model: FlowMap, x0: np.ndarray, n_paths: int | None) -> np.ndarray:
    d = model.dim
    if x0.ndim <= 1:
        if x0.size != d:
            raise ConfigError(
                f"x0 has {x0.size} component(s) but the model has d={d} slow variables"
            )
        if n_paths is None or int(n_paths) < 1:
            raise ConfigError(f"n_paths must be a positive integer, got {n_paths}")
        x0 = np.broadcast_to(x0.reshape(1, d), (int(n_paths), d))
    elif x0.ndim == 2:
        if x0.shape[1] != d:
            raise ConfigError(f"x0 has shape {x0.shape} but the model has d={d} slow variables")
        if n_paths is not None and int(n_paths) != x0.shape[0]:
            raise ConfigError(f"x0 gives {x0.shape[0]} starts but n_paths={n_paths}")
    else:
        raise ConfigError(f"x0 must be a point (d,) or starts (n, d), got shape {x0.shape}")
    check_memory(8.0 * x0.shape[0] * d, f"n_paths={x0.shape[0]} (CLI: --n-paths)")
    if not np.isfinite(x0).all():
        raise ConfigError("x0 must be finite")
    return np.ascontiguousarray(x0)


def warn_outside(model: FlowMap, starts: np.ndarray) -> None:
    """Warn when starts lie outside the training data's range by more than half its width:
    the map has seen no data there and extrapolates."""
    lo = model.x_lo.detach().cpu().numpy().astype(float)
    hi = model.x_hi.detach().cpu().numpy().astype(float)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        return
    margin = 0.5 * (hi - lo)
    far = ((starts < lo - margin) | (starts > hi + margin)).any(axis=1)
    if far.any():
        first = starts[np.flatnonzero(far)[0]]
        warnings.warn(
            f"{int(far.sum())} start(s) (e.g. x0={np.round(first, 4).tolist()}) lie far outside "
            f"the training data's range {np.round(lo, 4).tolist()}..{np.round(hi, 4).tolist()}; "
            "the learned map extrapolates there",
            RuntimeWarning,
            stacklevel=3,
        )


def histories_from_file(path, model: FlowMap, n_paths: int) -> np.ndarray:
    """Starts read from a trajectory file (CLI: ``predict --history FILE``): the last
    K + 1 observations of each of its trajectories for a map with memory K, one history
    (K + 1, d) for all paths or (n_paths, K + 1, d); for K = 0 the last points."""
    from ..data import check_dim, load_trajectories
    from ..model.periods import with_model_periods

    data = load_trajectories(path, dt=float(model.dt))
    check_dim(data, model.dim, str(path))
    data = with_model_periods(data, model, str(path))
    k = model.memory
    if int(data.lengths.min()) < k + 1:
        raise DataError(
            f"{path}: a trajectory holds {int(data.lengths.min())} observations; the model has "
            f"memory {k} and needs the last {k + 1} of each"
        )
    h = np.stack([data.x[i, L - k - 1 : L] for i, L in enumerate(data.lengths.tolist())])
    if h.shape[0] not in (1, n_paths):
        raise DataError(
            f"{path}: {h.shape[0]} histories for --n-paths {n_paths}; give one for all paths "
            "or one per path"
        )
    h = h[0] if h.shape[0] == 1 else h
    return h if k else h[..., -1, :]
