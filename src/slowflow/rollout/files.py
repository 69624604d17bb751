"""Ensembles streamed to disk: ``.npy`` with its sidecar, ``.npz`` and ``.csv``.

Memory is one chunk of paths, never the ensemble; every write is atomic (nothing appears
under the final name unless the whole rollout succeeded).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..io.atomic import atomic_open, atomic_write
from ..io.limits import check_disk, gb
from ..io.npy import write_header
from ..io.sidecar import sidecar_info, sidecar_path, write_sidecar
from ..model.flowmap import FlowMap
from .engine import RolloutSummary, Tracker, prepare_starts, rollout_chunks, warn_summary

#: Largest ensemble (as float64 values) written as ``.csv``: a CSV is about three times
#: larger than the binary formats and slow to read; ``.npz`` and ``.npy`` have no limit.
CSV_LIMIT_BYTES = 2 * 2**30


def check_csv_size(shape, where: str) -> None:
    """Refuse a ``.csv`` ensemble of ``shape`` (paths, observations, d) above
    :data:`CSV_LIMIT_BYTES` as float64, in one line that names ``where``."""
    n, n_obs, d = (int(v) for v in shape)
    need = 8.0 * n * n_obs * d
    if need > CSV_LIMIT_BYTES:
        raise ConfigError(
            f"{where}: {n} paths x {n_obs} observations x d={d} are {gb(need)} as float64, "
            f"above the {gb(CSV_LIMIT_BYTES)} limit for .csv output (about 3x larger as text, "
            "slow to read); write a .npy or .npz file instead (both streamed to disk in "
            "chunks, e.g. --out ensemble.npy)"
        )


def _kept(model, x0, n_steps, n_paths, chunk_paths, every, seed):
    """The checked starts, step count and ``every`` of a file rollout, and the shape
    (n_paths, n_steps // every + 1, d) of what it keeps."""
    if int(every) != every or every < 1:
        raise ConfigError(f"every must be a positive integer, got {every}")
    every = int(every)
    starts, n_steps = prepare_starts(
        model, x0, n_steps, n_paths, chunk_paths, "chunk_paths", every, seed
    )
    if n_steps % every:
        raise ConfigError(
            f"n_steps={n_steps} is not a multiple of every={every}; the file keeps steps "
            "0, every, ..., n_steps"
        )
    return starts, n_steps, every, (starts.shape[0], n_steps // every + 1, model.dim)


@torch.inference_mode()
def predict_to_file(
    model: FlowMap,
    x0,
    n_steps: int,
    path: str | os.PathLike,
    n_paths: int | None = None,
    seed: int = 0,
    chunk_paths: int = 65536,
    every: int = 1,
    progress: bool | None = None,
    dtype=np.float32,
    meta: dict | None = None,
) -> RolloutSummary:
    """Roll the learned map out straight into an ``.npy`` file, one chunk of paths at a time.

    The file holds one C-ordered array ``(n_paths, n_steps // every + 1, d)`` (steps ``0,
    every, 2 every, ..., n_steps``) that :func:`numpy.load` opens with ``mmap_mode="r"``.
    Next to it, ``<path>.json`` (e.g. ``big.npy.json``) records the observation step
    ``dt = model.dt * every``, the variable names and the provenance (``x0``, ``seed``,
    ``every``, ``chunk_paths``, ``n_steps``, the model's Delta and version, plus ``meta``);
    :func:`slowflow.load_trajectories` and ``slowflow evaluate`` read the step from it.

    Memory is one chunk: a float32 buffer of ``chunk_paths x (n_steps // every + 1) x d``
    values (65,536 x 1,001 x 1 is 262 MB; lower ``chunk_paths`` or raise ``every`` to shrink
    it) plus the model's per-step activations; the ensemble is never held in memory. The
    file is ``n_paths x (n_steps // every + 1) x d x 4`` bytes for float32: 10^6 paths x
    1,001 observations is 4.0 GB per component (``every=10``: 0.4 GB).

    The paths equal ``predict(model, x0, n_steps, n_paths, seed, batch_size=chunk_paths)``
    at the kept steps, value for value (the rollout runs in float32; ``dtype=np.float64``
    stores the same values in twice the space). Every step, kept or not, is checked for
    non-finite values and for leaving the training range (the returned summary, and a
    warning, report them).

    The write is atomic: both files are written under temporary names in the target
    directory and moved into place only after the last chunk, the array first. An error or
    Ctrl-C removes the temporary files and leaves an existing file under ``path`` untouched.
    Before starting, the free space of the target's file system is checked.

    Returns
    -------
    RolloutSummary
    """
    path, dtype = Path(path), np.dtype(dtype)
    _check_target(path, dtype)
    starts, n_steps, every, shape = _kept(model, x0, n_steps, n_paths, chunk_paths, every, seed)
    n, d = shape[0], model.dim
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    _check_space(path, n_bytes)
    meta = {
        "kind": "prediction",
        # one start as a list; many starts (one per path) only by their shape
        "x0": starts[0].tolist() if (starts == starts[0]).all() else f"{n} starts",
        "seed": int(seed),
        "n_steps": n_steps,
        "every": every,
        "chunk_paths": int(chunk_paths),
        "model_dt": float(model.dt),
        "slowflow_version": (getattr(model, "meta", None) or {}).get("slowflow_version"),
        **(meta or {}),
    }
    info = sidecar_info(shape, dtype.name, float(model.dt) * every, _names_of(model, d), meta)
    sidecar = sidecar_path(path)
    tracker = Tracker(n, n_steps)
    # The array is moved into place first (inner block), then its sidecar; an outdated
    # sidecar is removed just before, so a crash in between never pairs the new array with
    # old metadata (it leaves the array without a step: readers then ask for dt).
    with atomic_write(sidecar) as tmp_json, atomic_write(path) as tmp:
        chunks = rollout_chunks(model, starts, n_steps, seed, chunk_paths, every, progress, tracker)
        with open(tmp, "wb") as fh, contextlib.closing(chunks):
            write_header(fh, shape, dtype)
            expected = fh.tell() + n_bytes
            for _, _, arr in chunks:  # path-major pieces of about 4 MB
                step = max(1, (1 << 20) // (arr.shape[1] * d))
                for p0 in range(0, arr.shape[0], step):
                    piece = np.ascontiguousarray(arr[p0 : p0 + step], dtype=dtype)
                    fh.write(memoryview(piece))
            if fh.tell() != expected:  # pragma: no cover - a bug, not a user error
                raise RuntimeError(f"{path}: wrote {fh.tell()} bytes, expected {expected}")
        summary = tracker.summary()
        info["meta"]["nonfinite_paths"] = summary.nonfinite_paths
        info["meta"]["outside_fraction"] = summary.outside_fraction
        write_sidecar(tmp_json, info)
        sidecar.unlink(missing_ok=True)
    warn_summary(summary)
    return summary


def _check_target(path: Path, dtype: np.dtype) -> None:
    if path.suffix.lower() != ".npy":
        raise ConfigError(
            f"{path}: predict_to_file writes .npy files; got {path.suffix or 'no extension'!r}"
        )
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")


def _check_space(path: Path, n_bytes: int) -> None:
    """Create the target's directory and refuse an ensemble larger than its free space."""
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if n_bytes > free:
        raise ConfigError(
            f"{path}: the ensemble needs {n_bytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
            "are free there; lower n_paths, raise every or choose another directory"
        )


def _names_of(model: FlowMap, d: int) -> list[str]:
    names = list((getattr(model, "meta", None) or {}).get("names") or [])
    return names if len(names) == d else [f"x{i + 1}" for i in range(d)]


@torch.inference_mode()
def predict_to_trajectories_file(
    model: FlowMap,
    x0,
    n_steps: int,
    path: str | os.PathLike,
    n_paths: int | None = None,
    seed: int = 0,
    chunk_paths: int = 65536,
    every: int = 1,
    progress: bool | None = None,
    meta: dict | None = None,
) -> RolloutSummary:
    """Roll the learned map out into an ``.npz`` or ``.csv`` trajectory file, streamed.

    The file is the one :func:`slowflow.save_trajectories` writes for
    ``predict(model, x0, n_steps, n_paths, seed, batch_size=chunk_paths)[:, ::every]``
    (float64 values, step ``model.dt * every``, the model's variable names, ``meta``), but
    it is written chunk by chunk: the ``.npz`` entry ``x.npy`` is a zip64 member written in
    pieces, the CSV row by row. Memory is one chunk of paths, never the ensemble. The write
    is atomic and the free disk space is checked before starting.

    Returns
    -------
    RolloutSummary
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".npz", ".csv"):
        raise ConfigError(f"{path}: expected an .npz or .csv file name, got {ext or 'none'!r}")
    starts, n_steps, every, shape = _kept(model, x0, n_steps, n_paths, chunk_paths, every, seed)
    n, d = shape[0], model.dim
    if ext == ".csv":
        check_csv_size(shape, str(path))
    per_value = 8 if ext == ".npz" else 26  # a CSV cell: repr of a float64 and a comma
    check_disk(path, float(np.prod(shape, dtype=float)) * per_value, f"--out {path}")
    names = _names_of(model, d)
    dt = float(model.dt) * every
    tracker = Tracker(n, n_steps)
    chunks = rollout_chunks(model, starts, n_steps, seed, chunk_paths, every, progress, tracker)
    with contextlib.closing(chunks):
        if ext == ".npz":
            _write_npz_stream(path, shape, chunks, dt, names, meta or {})
        else:
            _write_csv_stream(path, chunks, dt, names)
    summary = tracker.summary()
    warn_summary(summary)
    return summary


def _write_npz_stream(path: Path, shape, chunks, dt: float, names, meta: dict) -> None:
    """The layout of :func:`slowflow.save_trajectories` (keys x, dt, names, meta), written
    through :class:`slowflow.TrajectoryWriter` in pieces of about 4 MB."""
    from ..data.store import TrajectoryWriter

    with TrajectoryWriter(path, *shape, dt=dt, names=names, meta=meta) as writer:
        for _, _, arr in chunks:
            step = max(1, (1 << 19) // (arr.shape[1] * arr.shape[2]))
            for p0 in range(0, arr.shape[0], step):
                writer.write(arr[p0 : p0 + step])


def _write_csv_stream(path: Path, chunks, dt: float, names) -> None:
    """The CSV layout of :func:`slowflow.save_trajectories` (traj,t,<names>), chunk by chunk."""
    import csv

    from ..data.files import CSV_RESERVED

    for s in names:
        if s.lower() in CSV_RESERVED or s != s.strip() or "\n" in s:
            raise ConfigError(f"{path}: variable name {s!r} cannot be a CSV column; use .npz")
    with atomic_open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["traj", "t", *names])
        times = None
        for b0, _, arr in chunks:
            if times is None:
                times = [repr(t) for t in (dt * np.arange(arr.shape[1])).tolist()]
            for i, traj in enumerate(arr.astype(np.float64).tolist()):
                w.writerows([str(b0 + i), t, *map(repr, row)] for t, row in zip(times, traj))
