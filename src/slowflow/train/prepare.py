"""What training needs from the data, however it is held: windows, statistics, the
validation pairs and bursts, the sample the closed-form stages are fitted on."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace

import numpy as np

from ..data import (
    Trajectories,
    load_trajectories,
    make_windows,
    periodic_ranges,
    split_by_trajectory,
)
from ..errors import ConfigError, DataError
from ..model.config import ModelConfig
from .batches import MemoryBatches, StreamBatches
from .config import TrainConfig


def as_data(data, dt: float | None) -> Trajectories:
    if isinstance(data, Trajectories):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_trajectories(data, dt=dt)
    raise ConfigError(
        f"data must be a Trajectories object, a TrajectoryStore or a file path, "
        f"got {type(data).__name__}"
    )


@np.errstate(over="ignore", invalid="ignore")  # huge data are refused by check_prepared
def statistics(x0: np.ndarray, x1: np.ndarray) -> dict[str, np.ndarray]:
    """Standardization statistics of conditions x0 ((N, d) or windows (N, K + 1, d), whose
    last row is x_n) and targets x1."""
    if x0.ndim == 3:
        x0 = x0[:, -1]
    inc = x1 - x0
    tiny = 1e-12
    return {
        "x_mean": x0.mean(0),
        "x_std": np.maximum(x0.std(0), tiny),
        "d_mean": inc.mean(0),
        "d_std": np.maximum(inc.std(0), tiny),
    }


@dataclass
class Prepared:
    """What training needs from the data, however it is held."""

    dim: int
    dt: float
    names: tuple
    meta: dict
    stats: dict
    lo: np.ndarray
    hi: np.ndarray
    n_train: int
    v0: np.ndarray
    v1: np.ndarray
    batches: object
    drift_sample: tuple | None = None  # (x0, x1, groups) for the basis drift estimator
    val_bursts: tuple | None = None  # (x, lengths) of the validation bursts (in memory)
    periods: list | None = None  # per variable (lo, hi) of a periodic one, or None


def _cap_pairs(v0: np.ndarray, v1: np.ndarray, n: int, rng: np.random.Generator):
    """At most ``n`` of the validation pairs, drawn at random without replacement."""
    if v0.shape[0] <= n:
        return v0, v1
    keep = rng.choice(v0.shape[0], n, replace=False)
    return v0[keep], v1[keep]


def _windows(data: Trajectories, memory: int, cfg: TrainConfig, pairs_per_traj, rng, what: str):
    """Training or validation windows (conditions (N, d) or (N, K + 1, d), targets, groups)."""
    try:
        h, x1, traj = make_windows(data, memory, cfg.skip_first, pairs_per_traj, rng)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    return (h[:, 0] if memory == 0 else h), x1, traj


def prepare_memory(data: Trajectories, cfg: TrainConfig, device, memory: int = 0) -> Prepared:
    train, val = split_by_trajectory(data, cfg.val_fraction, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x0, x1, groups = _windows(train, memory, cfg, cfg.pairs_per_traj, rng, "training data")
    v0, v1, _ = _windows(val, memory, cfg, None, rng, "validation data")
    v0, v1 = _cap_pairs(v0, v1, cfg.max_val_pairs, rng)
    return Prepared(
        data.dim,
        data.dt,
        tuple(data.names),
        dict(data.meta or {}),
        statistics(x0, x1),
        np.nanmin(data.x, axis=(0, 1)),
        np.nanmax(data.x, axis=(0, 1)),
        int(x0.shape[0]),
        v0,
        v1,
        MemoryBatches(x0, x1, device),
        (x0, x1, groups),
        (val.x, val.lengths),
        periodic_ranges(data),
    )


def _stream_reader(store, memory: int, skip_first: int):
    """piece -> (conditions, targets): windows (k, K + 1, d), or (k, d) for K = 0; a
    periodic variable's target is x_n plus its increment on the circle."""
    from ..data import wrap_delta

    periods = periodic_ranges(store)

    def read(piece):
        h, x1 = store.read_windows(piece, memory, skip_first)
        for j, r in enumerate(periods):
            if r is not None:
                x1[:, j] = h[:, -1, j] + wrap_delta(x1[:, j] - h[:, -1, j], r[1] - r[0])
        return (h[:, 0] if memory == 0 else h), x1

    return read


def prepare_stream(store, cfg: TrainConfig, device, memory: int = 0) -> Prepared:
    from ..data.store import pair_statistics

    if cfg.pairs_per_traj is not None:
        raise ConfigError("pairs_per_traj is not available with streaming; it uses every pair")
    train, val = store.split(cfg.val_fraction, cfg.seed, cfg.block_pairs)
    read = _stream_reader(store, memory, cfg.skip_first)
    n_train = store.window_count(train, memory, cfg.skip_first)
    if n_train < 1:
        raise DataError(f"{store.path}: no training windows of {memory + 1} observations")
    rng = np.random.default_rng(cfg.seed)
    v0s, v1s, have = [], [], 0
    for i in rng.permutation(len(val)):
        a, b = read(val[i])
        v0s.append(a)
        v1s.append(b)
        have += a.shape[0]
        if have >= cfg.max_val_pairs:
            break
    v0, v1 = np.concatenate(v0s), np.concatenate(v1s)
    v0, v1 = _cap_pairs(v0, v1, cfg.max_val_pairs, rng)
    return Prepared(
        store.dim,
        store.dt,
        tuple(store.names),
        dict(store.meta or {}),
        pair_statistics(store, train),
        store.lo,
        store.hi,
        n_train,
        v0,
        v1,
        StreamBatches(store, train, cfg.seed, device, cfg.shuffle_pieces, read, memory),
        _stream_drift_sample(read, train, cfg.seed),
        None,
        periodic_ranges(store),
    )


#: Pairs of a streamed file that the basis drift estimator reads (pieces in random order).
STREAM_DRIFT_PAIRS = 4_000_000


def _stream_drift_sample(read, pieces, seed: int) -> tuple:
    """Up to ``STREAM_DRIFT_PAIRS`` training windows of a streamed file, grouped by piece."""
    rng = np.random.default_rng([seed, 7])
    parts, have = [], 0
    for i in rng.permutation(len(pieces)):
        a, b = read(pieces[i])
        parts.append((a, b, np.full(a.shape[0], i)))
        have += a.shape[0]
        if have >= STREAM_DRIFT_PAIRS:
            break
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


def check_prepared(prep, resume_state: dict | None, source: str) -> None:
    """Refuse data that training (in float32) cannot use, or that differ from a resumed
    run's data in Delta, d or the variable names."""
    big = np.finfo(np.float32).max / 1e3
    for key in ("x_mean", "x_std", "d_mean", "d_std"):
        v = np.asarray(prep.stats[key], dtype=np.float64)
        if not (np.isfinite(v).all() and (np.abs(v) < big).all()):
            raise DataError(
                f"{source}: the values are too large for training in float32 ({key} = "
                f"{np.asarray(v).tolist()}); rescale the data"
            )
    if resume_state is None:
        return
    info = resume_state.get("data")
    if info is None:  # checkpoints of older versions: Delta and d from the weights
        state = resume_state["model"]
        info = {"dt": float(state["dt"]), "dim": int(state["x_mean"].shape[0]), "names": None}
    if int(info["dim"]) != prep.dim:
        raise DataError(
            f"--resume: the data have d={prep.dim} slow variables but the checkpoint was "
            f"trained on d={info['dim']}"
        )
    if not math.isclose(float(info["dt"]), prep.dt, rel_tol=1e-9):
        raise DataError(
            f"--resume: the data have dt={prep.dt!r} but the checkpoint was trained at "
            f"dt={float(info['dt'])!r}"
        )
    if info.get("names") is not None and list(info["names"]) != list(prep.names):
        raise DataError(
            f"--resume: the data's variables {list(prep.names)} differ from the checkpoint's "
            f"{list(info['names'])}"
        )


def with_periodic(config: ModelConfig, prep, source: str) -> ModelConfig:
    """The config with the data's periodic variables; a config that names others is refused."""
    per = tuple(j for j, r in enumerate(prep.periods or []) if r is not None)
    if config.periodic and tuple(config.periodic) != per:
        raise DataError(
            f"{source}: the data's periodic variables are {list(per)} (indices) but the model "
            f"config says {list(config.periodic)}; declare the same ones"
        )
    return replace(config, periodic=per)
