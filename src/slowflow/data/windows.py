"""What training reads from trajectories: consecutive pairs, windows of past observations,
and splits by whole trajectories (or in time, for a single one)."""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ConfigError, DataError
from .periodic import periodic_ranges, wrap_delta
from .trajectories import Trajectories


def make_pairs(
    data: Trajectories,
    pairs_per_traj: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive observation pairs ``(x_k, x_{k+1})``, never across padding.

    Parameters
    ----------
    data : Trajectories
    pairs_per_traj : int, optional
        ``None``: all ``sum(L_i - 1)`` pairs, trajectory by trajectory in time order.
        ``k``: the paper's scheme, ``k`` start indices per trajectory drawn uniformly with
        replacement from ``{0, ..., L_i - 2}`` (``n_traj * k`` pairs).
    rng : numpy.random.Generator or int or None
        Randomness for ``pairs_per_traj`` (passed to :func:`numpy.random.default_rng`).

    Returns
    -------
    x0, x1 : numpy.ndarray, shape (N, d), float64
    """
    x, lengths = data.x, data.lengths
    if pairs_per_traj is None:
        valid = np.arange(data.n_obs - 1) < (lengths - 1)[:, None]
        return x[:, :-1][valid], x[:, 1:][valid]
    if (
        isinstance(pairs_per_traj, (bool, np.bool_))
        or not isinstance(pairs_per_traj, numbers.Integral)
        or pairs_per_traj < 1
    ):
        raise ConfigError(
            f"pairs_per_traj must be a positive integer or None, found {pairs_per_traj!r}"
        )
    from ..io.limits import check_memory

    check_memory(  # start indices, pair indices and the two pair arrays
        8.0 * data.n_traj * int(pairs_per_traj) * (2 + 2 * data.dim),
        f"pairs_per_traj={pairs_per_traj} (CLI: --pairs-per-traj) x {data.n_traj} trajectories",
    )
    gen = np.random.default_rng(rng)
    start = gen.integers(0, (lengths - 1)[:, None], size=(data.n_traj, int(pairs_per_traj)))
    traj = np.broadcast_to(np.arange(data.n_traj)[:, None], start.shape)
    return x[traj, start].reshape(-1, data.dim), x[traj, start + 1].reshape(-1, data.dim)


def make_windows(
    data: Trajectories,
    memory: int = 0,
    skip_first: int = 0,
    pairs_per_traj: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histories of ``memory + 1`` consecutive observations and the observation after
    each, never across a trajectory's end or padding: the training data of a map with
    memory (``memory = 0``: the pairs of :func:`make_pairs`).

    Parameters
    ----------
    data : Trajectories
    memory : int
        K: each window holds x_{n-K}, ..., x_n (shape (K + 1, d)) and its target x_{n+1}.
    skip_first : int
        Drop the first ``skip_first`` observations of every trajectory (transients of
        bursts started out of equilibrium): windows start at index >= ``skip_first``.
    pairs_per_traj : int, optional
        ``None``: every window; ``k``: ``k`` windows per trajectory drawn uniformly with
        replacement (the paper's sampling of pairs).
    rng : numpy.random.Generator or int or None
        Randomness for ``pairs_per_traj``.

    Returns
    -------
    history : array (N, K + 1, d), float64 (oldest first, x_n last)
    target : array (N, d); a periodic variable's target is x_n plus its increment on the
        circle (which may lie outside the range: the model's law is continuous there)
    traj : array (N,) of ints, the trajectory of each window
    """
    k, s = int(memory), int(skip_first)
    if k < 0 or s < 0:
        raise ConfigError(f"memory and skip_first must be >= 0, got {memory} and {skip_first}")
    x, lengths = data.x, data.lengths
    usable = lengths - s - k - 1  # windows per trajectory (starts s .. L - K - 2)
    if usable.max(initial=0) < 1:
        raise DataError(
            f"no trajectory has more than {s + k + 1} observations: none holds a window of "
            f"{k + 1} past observations and a target after skipping the first {s}"
        )
    if pairs_per_traj is None:
        starts = [np.arange(s, s + max(u, 0)) for u in usable.tolist()]
        traj = np.repeat(np.arange(data.n_traj), np.maximum(usable, 0))
        start = np.concatenate(starts).astype(np.int64)
    else:
        if (
            isinstance(pairs_per_traj, (bool, np.bool_))
            or not isinstance(pairs_per_traj, numbers.Integral)
            or pairs_per_traj < 1
        ):
            raise ConfigError(
                f"pairs_per_traj must be a positive integer or None, found {pairs_per_traj!r}"
            )
        from ..io.limits import check_memory

        keep = np.flatnonzero(usable >= 1)
        check_memory(
            8.0 * keep.size * int(pairs_per_traj) * (2 + (k + 2) * data.dim),
            f"pairs_per_traj={pairs_per_traj} (CLI: --pairs-per-traj) x {keep.size} trajectories",
        )
        gen = np.random.default_rng(rng)
        start = s + gen.integers(0, usable[keep][:, None], size=(keep.size, int(pairs_per_traj)))
        traj = np.broadcast_to(keep[:, None], start.shape).ravel()
        start = start.ravel()
    idx = start[:, None] + np.arange(k + 2)[None, :]
    w = x[traj[:, None], idx]  # (N, K + 2, d)
    target = w[:, k + 1]
    for j, r in enumerate(periodic_ranges(data)):
        if r is not None:  # the target next to x_n: x_n + the increment on the circle
            xn = w[:, k, j]
            target[:, j] = xn + wrap_delta(target[:, j] - xn, r[1] - r[0])
    return w[:, : k + 1], target, traj


def time_split(length: int, val_fraction: float, where: str) -> int:
    """Observations of a single trajectory that train (the rest validate), each part >= 2."""
    n_train = round((1 - val_fraction) * length)
    if n_train < 2 or length - n_train < 2:
        raise DataError(
            f"{where}: the single trajectory has {length} observations; a time split with val_fraction={val_fraction} leaves {n_train} for training and {length - n_train} for validation, each needs at least 2"
        )
    return n_train


def split_indices(n_traj: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) trajectory indices of :func:`split_by_trajectory`."""
    n_val = min(max(round(val_fraction * n_traj), 1), n_traj - 1)
    perm = np.random.default_rng(seed).permutation(n_traj)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_by_trajectory(
    data: Trajectories, val_fraction: float = 0.1, seed: int = 0
) -> tuple[Trajectories, Trajectories]:
    """Random train/validation split by whole trajectories (never by pair).

    ``round(val_fraction * n_traj)`` trajectories, clipped to ``[1, n_traj - 1]``, drawn with
    ``numpy.random.default_rng(seed)``, go to validation; both parts keep the original order.
    With a single trajectory the split is in time instead: the first
    ``round((1 - val_fraction) * L)`` observations train, the rest validate (both need >= 2;
    the pair straddling the cut is used by neither). ``meta["split"]`` records the split.

    Returns
    -------
    train, val : Trajectories
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction must be a number in (0, 1), found {val_fraction!r}")

    def part(sub: Trajectories, name: str, by: str) -> Trajectories:
        info = {"part": name, "by": by, "val_fraction": float(val_fraction), "seed": seed}
        return Trajectories(sub.x, sub.dt, sub.names, {**sub.meta, "split": info})

    if data.n_traj == 1:
        length = int(data.lengths[0])
        n_train = time_split(length, val_fraction, "split_by_trajectory")
        train = Trajectories(data.x[:, :n_train], data.dt, data.names, data.meta)
        val = Trajectories(data.x[:, n_train:length], data.dt, data.names, data.meta)
        return part(train, "train", "time"), part(val, "val", "time")
    train_idx, val_idx = split_indices(data.n_traj, val_fraction, seed)
    return part(data.subset(train_idx), "train", "trajectory"), part(
        data.subset(val_idx), "val", "trajectory"
    )


def check_dim(data: Trajectories, expected_dim: int, source: str) -> None:
    """Raise :class:`DataError` unless ``data.dim == expected_dim``; ``source`` names the file."""
    if data.dim != expected_dim:
        raise DataError(
            f"{source}: data has d={data.dim} slow variables but the model expects d={expected_dim}"
        )


def window_positions(traj: np.ndarray) -> np.ndarray:
    """Index of each window among the windows of its trajectory (0 for the first), for the
    trajectory labels ``traj`` that :func:`make_windows` returns (grouped, in order).

    Examples
    --------
    >>> window_positions(np.array([0, 0, 0, 1, 1]))
    array([0, 1, 2, 0, 1])
    """
    first = np.r_[0, np.flatnonzero(np.diff(traj)) + 1]
    return np.arange(traj.size) - np.repeat(first, np.diff(np.r_[first, traj.size]))
