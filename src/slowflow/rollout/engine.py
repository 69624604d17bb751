"""The rollout itself (paper eq. (17)): x_0 given, x_{n+1} = G(x_n, z_n), z_n ~ N(0, I).

Noise comes from a seeded ``torch.Generator``, so the same seed gives the same ensemble.
:func:`rollout_chunks` advances one chunk of paths at a time and is shared by
:func:`predict` (ensembles in memory) and the file writers of :mod:`.files`.
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..io.limits import check_memory
from ..model.flowmap import FlowMap
from ..model.score import base_draw, draw_noise
from ..model.score import sample_with as _sample
from .starts import check_x0, warn_outside

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
    out = torch.empty((n, model.dim), device=x.device, dtype=x.dtype)
    z = v = None
    for i in range(0, n, _CPU_EVAL_ROWS):
        rows = slice(i, i + _CPU_EVAL_ROWS)
        dist = model(x[rows])
        if z is None:  # the whole batch's noise at once, in the order of sample_with
            z, v = draw_noise(dist.base, (n, model.dim), gen, x.device, x.dtype)
        out[rows] = dist.transform.inv(
            base_draw(dist.base, z[rows], None if v is None else v[rows])
        )
    return out


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


class Tracker:
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


def prepare_starts(
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
    warn_outside(model, starts if starts.ndim == 2 else starts[:, -1])
    return starts, int(n_steps)


def rollout_chunks(
    model: FlowMap,
    starts: np.ndarray,
    n_steps: int,
    seed: int,
    chunk_paths: int,
    every: int,
    progress: bool | None,
    tracker: Tracker,
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


def warn_summary(summary: RolloutSummary) -> None:
    if summary.message():
        warnings.warn("rollout: " + summary.message(), RuntimeWarning, stacklevel=3)


@torch.inference_mode()
def predict(
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
    For ensembles too large for memory use :func:`predict_to_file`.
    """
    starts, n_steps = prepare_starts(
        model, x0, n_steps, n_paths, batch_size, "batch_size", seed=seed
    )
    n, d = starts.shape[0], model.dim
    out = np.empty((n, n_steps + 1, d))
    tracker = Tracker(n, n_steps)
    chunks = rollout_chunks(model, starts, n_steps, seed, batch_size, 1, progress, tracker)
    with contextlib.closing(chunks):
        for b0, b1, arr in chunks:
            out[b0:b1] = arr
    summary = tracker.summary()
    warn_summary(summary)
    return (out, summary) if return_summary else out
