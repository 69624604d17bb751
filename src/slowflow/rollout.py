"""Ensembles from the learned map, and the effective drift and diffusion read off it.

Rollout (paper eq. (17)): x_0 given, x_{n+1} = G(x_n, z_n) with z_n ~ N(0, I) i.i.d.
Noise comes from a seeded ``torch.Generator``, so the same seed gives the same ensemble.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ._io import atomic_open, atomic_write
from ._limits import check_disk, check_memory
from .errors import ConfigError
from .jsonable import json_default
from .model.flowmap import FlowMap
from .model.score import sample_with as _sample

#: Rows per model evaluation on the CPU. A batch of 65,536 paths evaluated at once has
#: activations of 16 MB per layer that miss the CPU caches; blocks of 8,192 rolled out
#: 1.5-2.3x faster (2-core CPU, default preset, d = 1 and 2). The noise of a step is still
#: drawn for the whole batch at once, so the random stream does not depend on this block
#: size, and neither do the paths as long as the model's value for a row does not depend
#: on the other rows evaluated with it (true for every preset on the CPUs tested, and
#: checked by the tests).
_CPU_EVAL_ROWS = 8192


def _step(model: FlowMap, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One step of a batch: x_{n+1} = G(condition, z) for conditions x ((n, d), or windows
    (n, K + 1, d) of a map with memory): the same draws as ``_sample(model(x), gen)``, with
    the model evaluated in blocks of ``_CPU_EVAL_ROWS`` rows on the CPU."""
    n = x.shape[0]
    if x.device.type != "cpu" or n <= _CPU_EVAL_ROWS:
        return _sample(model(x), gen)
    z = torch.randn((n, model.dim), generator=gen, device=x.device, dtype=x.dtype)
    out = torch.empty((n, model.dim), device=x.device, dtype=x.dtype)
    for i in range(0, n, _CPU_EVAL_ROWS):
        dist = model(x[i : i + _CPU_EVAL_ROWS])
        base = dist.base
        out[i : i + _CPU_EVAL_ROWS] = dist.transform.inv(
            base.mean + base.stddev * z[i : i + _CPU_EVAL_ROWS]
        )
    return out


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


def _warn_outside(model: FlowMap, starts: np.ndarray) -> None:
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


@dataclass
class RolloutSummary:
    """What happened in a rollout: non-finite paths and excursions beyond the training range."""

    n_paths: int
    n_steps: int
    nonfinite_paths: int = 0
    first_nonfinite_step: int | None = None
    outside_fraction: float = 0.0
    first_outside_step: int | None = None

    def message(self) -> str:
        parts = []
        if self.nonfinite_paths:
            parts.append(
                f"{self.nonfinite_paths} of {self.n_paths} paths became non-finite "
                f"(first at step {self.first_nonfinite_step})"
            )
        if self.outside_fraction > 0:
            parts.append(
                f"{100 * self.outside_fraction:.2f}% of paths left the training data's "
                f"range by more than half its width (first at step {self.first_outside_step}); "
                "the map is extrapolating there"
            )
        return "; ".join(parts)


class _Tracker:
    """Running non-finite / out-of-range bookkeeping of a rollout, checked at every step.

    Holds O(1) numbers across chunks (counts and first steps), so a rollout of any size
    keeps its :class:`RolloutSummary` without per-path arrays.
    """

    def __init__(self, n_paths: int, n_steps: int) -> None:
        self.n_paths, self.n_steps = n_paths, n_steps
        self.nonfinite = 0
        self.first_nonfinite: int | None = None
        self.outside = 0
        self.first_outside: int | None = None

    def add(self, first_bad: torch.Tensor, first_out: torch.Tensor | None) -> None:
        """Per-path first non-finite / first outside step of one chunk (-1: never)."""
        for which, first in (("nonfinite", first_bad), ("outside", first_out)):
            if first is None:
                continue
            hit = first >= 0
            count = int(hit.sum())
            if not count:
                continue
            setattr(self, which, getattr(self, which) + count)
            step = int(first[hit].min())
            key = f"first_{which}"
            if getattr(self, key) is None or step < getattr(self, key):
                setattr(self, key, step)

    def summary(self) -> RolloutSummary:
        return RolloutSummary(
            n_paths=self.n_paths,
            n_steps=self.n_steps,
            nonfinite_paths=self.nonfinite,
            first_nonfinite_step=self.first_nonfinite,
            outside_fraction=self.outside / self.n_paths,
            first_outside_step=self.first_outside,
        )


def _prepare(
    model: FlowMap, x0, n_steps, n_paths, chunk: int, chunk_name: str, every: int = 1, seed=0
):
    """Validated starts (n, d) (histories (n, K + 1, d) for a map with memory K) and step
    count; warns about starts far outside the data."""
    if int(n_steps) != n_steps or n_steps < 1:
        raise ConfigError(f"n_steps must be a positive integer, got {n_steps}")
    if int(chunk) != chunk or int(chunk) < 1:
        raise ConfigError(f"{chunk_name} must be a positive integer, got {chunk}")
    if n_paths is not None and int(n_paths) >= 1:
        # one chunk's float32 buffer, before the starts (n_paths x d) are allocated
        kept = int(n_steps) // max(1, int(every)) + 1
        check_memory(
            4.0 * min(int(chunk), int(n_paths)) * kept * model.dim,
            f"one chunk of {min(int(chunk), int(n_paths))} paths x {kept} steps "
            f"(CLI: --chunk-paths, --steps)",
        )
    starts = check_x0(model, x0, n_paths, seed)
    _warn_outside(model, starts if starts.ndim == 2 else starts[:, -1])
    return starts, int(n_steps)


def _rollout_chunks(
    model: FlowMap,
    starts: np.ndarray,
    n_steps: int,
    seed: int,
    chunk_paths: int,
    every: int,
    progress: bool | None,
    tracker: _Tracker,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """The rollout, one chunk of paths at a time: yields ``(b0, b1, x)`` with ``x`` a float32
    array ``(b1 - b0, n_steps // every + 1, d)`` holding steps ``0, every, 2 every, ...`` of
    paths ``b0:b1``. ``x`` is a transposed view of a time-major buffer (each step is one
    contiguous write; path-major, every step would scatter one value per path row).

    Chunks are rolled out in order from one ``torch.Generator`` seeded with ``seed``, so the
    paths depend on ``seed`` and ``chunk_paths`` only. ``x`` is a view of one buffer reused
    for every chunk (memory: one chunk): consume it before asking for the next chunk.
    Every step (kept or not) is checked for non-finite values and for leaving the training
    range; ``tracker`` collects the counts.
    """
    n, d = starts.shape[0], model.dim
    memory = starts.ndim == 3
    device = next(iter(model.buffers())).device
    model.eval()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    lo = getattr(model, "x_lo", None)
    hi = getattr(model, "x_hi", None)
    bounds = None
    if lo is not None and hi is not None:
        margin = 0.5 * (hi - lo)
        low, high = (lo - margin).to(torch.float32), (hi + margin).to(torch.float32)
        if torch.isfinite(low).any() or torch.isfinite(high).any():
            bounds = (low, high)
    n_kept = n_steps // every
    size = min(int(chunk_paths), n)
    buf = torch.empty((n_kept + 1, size, d), dtype=torch.float32, device=device)
    show = progress if progress is not None else n * n_steps > 2e7
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n * n_steps, unit="path-step", unit_scale=True, desc="rollout", leave=False
        )
    try:
        for b0 in range(0, n, size):
            b1 = min(n, b0 + size)
            out = buf[:, : b1 - b0]
            hist = torch.as_tensor(starts[b0:b1], dtype=torch.float32, device=device)
            x = hist[:, -1] if memory else hist
            out[0] = x
            # starts are finite (check_x0); step 0 can still lie outside the range
            first_bad = torch.full((b1 - b0,), -1, dtype=torch.int64, device=device)
            first_out = None
            if bounds is not None:
                first_out = torch.full_like(first_bad, -1)
                first_out.masked_fill_(((x < bounds[0]) | (x > bounds[1])).any(dim=1), 0)
            for k in range(1, n_steps + 1):
                x = model.wrap(_step(model, hist, gen))  # periodic variables in range
                hist = torch.cat([hist[:, 1:], x.unsqueeze(1)], 1) if memory else x
                # The flow's transform objects form reference cycles (a transform and its
                # inverse) that hold this step's activations; collecting the young
                # generation frees them now. Left to the periodic collector they piled up
                # to gigabytes (65,536 paths x 300 steps: 4 GB peak RSS) and slowed the
                # rollout down by fresh page faults.
                gc.collect(0)
                if k % every == 0:
                    out[k // every] = x
                bad = ~torch.isfinite(x).all(dim=1)
                first_bad.masked_fill_(bad & (first_bad < 0), k)
                if first_out is not None:
                    far = ((x < bounds[0]) | (x > bounds[1])).any(dim=1)
                    first_out.masked_fill_(far & (first_out < 0), k)
                if bar is not None:
                    bar.update(b1 - b0)
            tracker.add(first_bad, first_out)
            yield b0, b1, out.cpu().numpy().transpose(1, 0, 2)
    finally:
        if bar is not None:
            bar.close()


def _warn_summary(summary: RolloutSummary) -> None:
    if summary.message():
        warnings.warn("rollout: " + summary.message(), RuntimeWarning, stacklevel=3)


@torch.inference_mode()
def simulate(
    model: FlowMap,
    x0,
    n_steps: int,
    n_paths: int | None = None,
    seed: int = 0,
    batch_size: int = 65536,
    progress: bool | None = None,
    return_summary: bool = False,
):
    """Roll the learned map out from ``x0``.

    Parameters
    ----------
    x0 : array (d,) or (n, d)
        One start for all paths, or one start per path. For a map with memory K also a
        history (K + 1, d) for all paths or one per path (n, K + 1, d), oldest first;
        points get histories drawn from the training data near them
        (:func:`draw_histories`).
    n_steps : int
        Steps of size Delta (the model's ``dt``).
    n_paths : int
        Number of paths (with a single start).
    batch_size : int
        Paths advanced together; memory is the output plus one batch. The paths depend on
        ``seed`` and ``batch_size`` (the batches draw from one generator in turn).

    Returns
    -------
    array (n_paths, n_steps + 1, d), float64; with ``return_summary`` also a RolloutSummary.
    Non-finite values are reported (which paths, from which step), never silently hidden.
    For ensembles too large for memory use :func:`simulate_to_file`.
    """
    starts, n_steps = _prepare(model, x0, n_steps, n_paths, batch_size, "batch_size", seed=seed)
    n, d = starts.shape[0], model.dim
    out = np.empty((n, n_steps + 1, d))
    tracker = _Tracker(n, n_steps)
    chunks = _rollout_chunks(model, starts, n_steps, seed, batch_size, 1, progress, tracker)
    with contextlib.closing(chunks):
        for b0, b1, arr in chunks:
            out[b0:b1] = arr
    summary = tracker.summary()
    _warn_summary(summary)
    return (out, summary) if return_summary else out


#: Suffix of the JSON file written next to an ``.npy`` ensemble (``big.npy`` -> ``big.npy.json``).
SIDECAR_SUFFIX = ".json"


@torch.inference_mode()
def simulate_to_file(
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

    The paths equal ``simulate(model, x0, n_steps, n_paths, seed, batch_size=chunk_paths)``
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
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise ConfigError(
            f"{path}: simulate_to_file writes .npy files; got {path.suffix or 'no extension'!r}"
        )
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    if int(every) != every or every < 1:
        raise ConfigError(f"every must be a positive integer, got {every}")
    every = int(every)
    starts, n_steps = _prepare(model, x0, n_steps, n_paths, chunk_paths, "chunk_paths", every, seed)
    if n_steps % every:
        raise ConfigError(
            f"n_steps={n_steps} is not a multiple of every={every}; the file keeps steps "
            f"0, every, ..., n_steps"
        )
    n, d = starts.shape[0], model.dim
    shape = (n, n_steps // every + 1, d)
    n_bytes = int(np.prod(shape)) * dtype.itemsize
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if n_bytes > free:
        raise ConfigError(
            f"{path}: the ensemble needs {n_bytes / 1e9:.2f} GB but only {free / 1e9:.2f} GB "
            "are free there; lower n_paths, raise every or choose another directory"
        )
    names = list(model.meta.get("names") or []) if hasattr(model, "meta") else []
    if len(names) != d:
        names = [f"x{i + 1}" for i in range(d)]
    info = {
        "format": "slowflow-npy-sidecar",
        "version": 1,
        "shape": list(shape),
        "dtype": dtype.name,
        "dt": float(model.dt) * every,
        "names": names,
        "meta": {
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
        },
    }
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    tracker = _Tracker(n, n_steps)
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    # The array is moved into place first (inner block), then its sidecar; an outdated
    # sidecar is removed just before, so a crash in between never pairs the new array with
    # old metadata (it leaves the array without a step: readers then ask for dt).
    with atomic_write(sidecar) as tmp_json, atomic_write(path) as tmp:
        chunks = _rollout_chunks(
            model, starts, n_steps, seed, chunk_paths, every, progress, tracker
        )
        with open(tmp, "wb") as fh, contextlib.closing(chunks):
            np.lib.format.write_array_header_1_0(fh, header)
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
        Path(tmp_json).write_text(json.dumps(info, indent=1, default=json_default) + "\n")
        sidecar.unlink(missing_ok=True)
    _warn_summary(summary)
    return summary


def _names_of(model: FlowMap, d: int) -> list[str]:
    names = list((getattr(model, "meta", None) or {}).get("names") or [])
    return names if len(names) == d else [f"x{i + 1}" for i in range(d)]


@torch.inference_mode()
def simulate_to_trajectories_file(
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
    ``simulate(model, x0, n_steps, n_paths, seed, batch_size=chunk_paths)[:, ::every]``
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
    if int(every) != every or every < 1:
        raise ConfigError(f"every must be a positive integer, got {every}")
    every = int(every)
    starts, n_steps = _prepare(model, x0, n_steps, n_paths, chunk_paths, "chunk_paths", every, seed)
    if n_steps % every:
        raise ConfigError(f"n_steps={n_steps} is not a multiple of every={every}")
    n, d = starts.shape[0], model.dim
    shape = (n, n_steps // every + 1, d)
    per_value = 8 if ext == ".npz" else 26  # a CSV cell: repr of a float64 and a comma
    check_disk(path, float(np.prod(shape, dtype=float)) * per_value, f"--out {path}")
    names = _names_of(model, d)
    dt = float(model.dt) * every
    tracker = _Tracker(n, n_steps)
    chunks = _rollout_chunks(model, starts, n_steps, seed, chunk_paths, every, progress, tracker)
    with contextlib.closing(chunks):
        if ext == ".npz":
            _write_npz_stream(path, shape, chunks, dt, names, meta or {})
        else:
            _write_csv_stream(path, chunks, dt, names)
    summary = tracker.summary()
    _warn_summary(summary)
    return summary


def _write_npz_stream(path: Path, shape, chunks, dt: float, names, meta: dict) -> None:
    """The layout of :func:`slowflow.save_trajectories` (keys x, dt, names, meta), written
    through :class:`slowflow.TrajectoryWriter` in pieces of about 4 MB."""
    from .store import TrajectoryWriter

    with TrajectoryWriter(path, *shape, dt=dt, names=names, meta=meta) as writer:
        for _, _, arr in chunks:
            step = max(1, (1 << 19) // (arr.shape[1] * arr.shape[2]))
            for p0 in range(0, arr.shape[0], step):
                writer.write(arr[p0 : p0 + step])


def _write_csv_stream(path: Path, chunks, dt: float, names) -> None:
    """The CSV layout of :func:`slowflow.save_trajectories` (traj,t,<names>), chunk by chunk."""
    import csv

    from .data.files import CSV_RESERVED

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


@dataclass
class DriftDiffusion:
    """Effective coefficients read off the learned map at points ``x`` (n, d).

    ``drift`` (n, d) = E[G(x, z) - x] / Delta; ``diffusion`` (n, d, d) = Cov[G(x, z) - x] / Delta;
    ``diffusion_se`` is the Monte-Carlo standard error from ``n_samples`` draws per point.
    ``drift_se`` is the drift's total standard error: for a model whose drift was fitted in
    closed form (``drift="basis"``) the estimator's own error from the data
    (``drift_se_fit``, cluster-robust least squares) combined with the Monte-Carlo error
    of the read-out; for a network drift only the Monte-Carlo error (the network gives no
    error bars of its own: ``drift_se_fit`` is None).
    """

    x: np.ndarray
    drift: np.ndarray
    drift_se: np.ndarray
    diffusion: np.ndarray
    diffusion_se: np.ndarray
    dt: float
    n_samples: int
    drift_se_fit: np.ndarray | None = None


@torch.inference_mode()
def drift_diffusion(model: FlowMap, x, n_samples: int = 20_000, seed: int = 0) -> DriftDiffusion:
    """Monte-Carlo read-out of the effective drift and diffusion of the learned map.

    For a map with memory the read-out at x averages over pasts drawn from the training
    data near x (:func:`draw_histories`): the drift and diffusion of the one-step law
    given x_n alone, as the data's own pasts mix it.

    a(x) = E[G(x, z) - x] / Delta and Sigma(x) = Cov[G(x, z) - x] / Delta (the JCP 2024
    read-out, eq. 4.23, with the full covariance). Monte-Carlo standard errors:
    std/sqrt(M)/Delta for the drift, sqrt(Var[(D_i - mu_i)(D_j - mu_j)] / M) / Delta for the
    covariance entries; a basis drift adds the estimator's error (see
    :class:`DriftDiffusion`).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1) if model.dim == 1 else x.reshape(1, -1)
    if x.shape[1] != model.dim:
        raise ConfigError(f"points have d={x.shape[1]} but the model has d={model.dim}")
    if int(n_samples) < 2:
        raise ConfigError(f"n_samples must be >= 2, got {n_samples}")
    if not np.isfinite(x).all():
        raise ConfigError("points must be finite")
    # per point: the tiled points, the increments and their d x d products
    check_memory(
        8.0 * int(n_samples) * d_mem(model.dim), f"n_samples={n_samples} (CLI: --n-samples)"
    )
    dt = float(model.dt)
    device = next(iter(model.buffers())).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    n, d = x.shape
    drift = np.empty((n, d))
    drift_se = np.empty((n, d))
    cov = np.empty((n, d, d))
    cov_se = np.empty((n, d, d))
    k = model.memory
    windows = []
    for i in range(n):
        pts = np.tile(x[i], (int(n_samples), 1))
        cond = draw_histories(model, pts, seed + i) if k else pts
        windows.append(cond)
        xi = torch.as_tensor(pts, dtype=torch.float32, device=device)
        ci = torch.as_tensor(cond, dtype=torch.float32, device=device)
        inc = (_sample(model(ci), gen).double() - xi.double()).cpu().numpy()
        mu = inc.mean(0)
        c = inc - mu
        prod = c[:, :, None] * c[:, None, :]
        drift[i] = mu / dt
        drift_se[i] = inc.std(0, ddof=1) / np.sqrt(n_samples) / dt
        cov[i] = prod.sum(0) / (n_samples - 1) / dt
        cov_se[i] = prod.std(0, ddof=1) / np.sqrt(n_samples) / dt
    bad = ~(np.isfinite(drift).all(axis=1) & np.isfinite(cov).all(axis=(1, 2)))
    if bad.any():
        warnings.warn(
            f"drift/diffusion are not finite at {int(bad.sum())} of {n} points (e.g. x="
            f"{x[np.flatnonzero(bad)[0]].tolist()}); the model fails there (far outside the "
            "training data?)",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        _warn_outside(model, x)
    fit_se = None
    if model.config.uses_basis:
        from .model.flowmap import window_coords

        # with memory: the error of the drift averaged over the drawn histories
        z = np.stack([window_coords(w, k) for w in windows]) if k else x
        fit_se = model.basis_drift_se(z).cpu().numpy()
        drift_se = np.sqrt(drift_se**2 + fit_se**2)
    return DriftDiffusion(x, drift, drift_se, cov, cov_se, dt, int(n_samples), fit_se)


def d_mem(d: int) -> int:
    """float64 values per Monte-Carlo sample held by :func:`drift_diffusion`."""
    return 4 * d + 2 * d * d


def binned_increment_stats(x0: np.ndarray, x1: np.ndarray, edges: np.ndarray, component: int = 0):
    """Data's one-step increment mean and std in bins of x_n[component] (for kernel checks).

    Returns (centers, mean (nb, d), std (nb, d), counts (nb,)).
    """
    inc = x1 - x0
    which = np.digitize(x0[:, component], edges) - 1
    nb = len(edges) - 1
    d = x0.shape[1]
    mean = np.full((nb, d), np.nan)
    std = np.full((nb, d), np.nan)
    counts = np.zeros(nb, dtype=int)
    centers = np.full((nb, d), np.nan)
    for b in range(nb):
        sel = which == b
        counts[b] = int(sel.sum())
        if counts[b] >= 2:
            mean[b] = inc[sel].mean(0)
            std[b] = inc[sel].std(0, ddof=1)
            centers[b] = x0[sel].mean(0)
    return centers, mean, std, counts
