"""Ensembles from the learned map, and the effective drift and diffusion read off it.

Rollout (paper eq. (17)): x_0 given, x_{n+1} = G(x_n, z_n) with z_n ~ N(0, I) i.i.d.
Noise comes from a seeded ``torch.Generator``, so the same seed gives the same ensemble.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .model.flowmap import FlowMap


def _sample(dist, generator: torch.Generator) -> torch.Tensor:
    """Draw one sample of a zuko NormalizingFlow with an explicit generator."""
    base = dist.base
    shape = base.batch_shape + base.event_shape
    z = torch.randn(shape, generator=generator, device=base.mean.device, dtype=base.mean.dtype)
    z = base.mean + base.stddev * z
    return dist.transform.inv(z)


def check_x0(model: FlowMap, x0, n_paths: int | None = None) -> np.ndarray:
    """Starts as an array (n, d): one point (d,) broadcast to ``n_paths``, or (n, d)."""
    x0 = np.asarray(x0, dtype=np.float64)
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
        One start for all paths, or one start per path.
    n_steps : int
        Steps of size Delta (the model's ``dt``).
    n_paths : int
        Number of paths (with a single start).
    batch_size : int
        Paths advanced together; memory is the output plus one batch.

    Returns
    -------
    array (n_paths, n_steps + 1, d), float64; with ``return_summary`` also a RolloutSummary.
    Non-finite values are reported (which paths, from which step), never silently hidden.
    """
    if int(n_steps) != n_steps or n_steps < 1:
        raise ConfigError(f"n_steps must be a positive integer, got {n_steps}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
    starts = check_x0(model, x0, n_paths)
    _warn_outside(model, starts)
    n, d = starts.shape
    n_steps = int(n_steps)
    device = next(iter(model.buffers())).device
    model.eval()
    out = np.empty((n, n_steps + 1, d))
    gen = torch.Generator(device=device).manual_seed(int(seed))
    lo = getattr(model, "x_lo", None)
    hi = getattr(model, "x_hi", None)
    summary = RolloutSummary(n_paths=n, n_steps=n_steps)
    outside_paths = np.zeros(n, dtype=bool)
    first_bad = np.full(n, -1)
    show = progress if progress is not None else n * n_steps > 2e7
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=n * n_steps, unit="path-step", unit_scale=True, desc="rollout", leave=False
        )
    try:
        for b0 in range(0, n, int(batch_size)):
            b1 = min(n, b0 + int(batch_size))
            x = torch.as_tensor(starts[b0:b1], dtype=torch.float32, device=device)
            buf = torch.empty((b1 - b0, n_steps + 1, d), dtype=torch.float32, device=device)
            buf[:, 0] = x
            for k in range(n_steps):
                x = _sample(model(x), gen)
                buf[:, k + 1] = x
                if bar is not None:
                    bar.update(b1 - b0)
            arr = buf.cpu().numpy().astype(np.float64)
            out[b0:b1] = arr
            finite = np.isfinite(arr).all(axis=2)
            bad = ~finite.all(axis=1)
            if bad.any():
                first_bad[b0:b1][bad] = np.argmin(finite[bad], axis=1)
            if lo is not None:
                lo_np, hi_np = lo.cpu().numpy(), hi.cpu().numpy()
                margin = 0.5 * (hi_np - lo_np)
                with np.errstate(invalid="ignore"):
                    outside = ((arr < lo_np - margin) | (arr > hi_np + margin)).any(axis=2)
                hit = outside.any(axis=1)
                outside_paths[b0:b1] = hit
                if hit.any():
                    first = int(np.argmax(outside[hit], axis=1).min())
                    if summary.first_outside_step is None or first < summary.first_outside_step:
                        summary.first_outside_step = first
    finally:
        if bar is not None:
            bar.close()
    bad = first_bad >= 0
    summary.nonfinite_paths = int(bad.sum())
    if bad.any():
        summary.first_nonfinite_step = int(first_bad[bad].min())
    summary.outside_fraction = float(outside_paths.mean())
    if summary.message():
        warnings.warn("rollout: " + summary.message(), RuntimeWarning, stacklevel=2)
    return (out, summary) if return_summary else out


@dataclass
class DriftDiffusion:
    """Effective coefficients read off the learned map at points ``x`` (n, d).

    ``drift`` (n, d) = E[G(x, z) - x] / Delta; ``diffusion`` (n, d, d) = Cov[G(x, z) - x] / Delta;
    ``*_se`` are Monte-Carlo standard errors from ``n_samples`` draws per point.
    """

    x: np.ndarray
    drift: np.ndarray
    drift_se: np.ndarray
    diffusion: np.ndarray
    diffusion_se: np.ndarray
    dt: float
    n_samples: int


@torch.inference_mode()
def drift_diffusion(model: FlowMap, x, n_samples: int = 20_000, seed: int = 0) -> DriftDiffusion:
    """Monte-Carlo read-out of the effective drift and diffusion of the learned map.

    a(x) = E[G(x, z) - x] / Delta and Sigma(x) = Cov[G(x, z) - x] / Delta (the JCP 2024
    read-out, eq. 4.23, with the full covariance). Standard errors: std/sqrt(M)/Delta for
    the drift, sqrt(Var[(D_i - mu_i)(D_j - mu_j)] / M) / Delta for the covariance entries.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1) if model.dim == 1 else x.reshape(1, -1)
    if x.shape[1] != model.dim:
        raise ConfigError(f"points have d={x.shape[1]} but the model has d={model.dim}")
    if int(n_samples) < 2:
        raise ConfigError(f"n_samples must be >= 2, got {n_samples}")
    dt = float(model.dt)
    device = next(iter(model.buffers())).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    n, d = x.shape
    drift = np.empty((n, d))
    drift_se = np.empty((n, d))
    cov = np.empty((n, d, d))
    cov_se = np.empty((n, d, d))
    for i in range(n):
        xi = torch.as_tensor(np.tile(x[i], (int(n_samples), 1)), dtype=torch.float32, device=device)
        inc = (_sample(model(xi), gen).double() - xi.double()).cpu().numpy()
        mu = inc.mean(0)
        c = inc - mu
        prod = c[:, :, None] * c[:, None, :]
        drift[i] = mu / dt
        drift_se[i] = inc.std(0, ddof=1) / np.sqrt(n_samples) / dt
        cov[i] = prod.sum(0) / (n_samples - 1) / dt
        cov_se[i] = prod.std(0, ddof=1) / np.sqrt(n_samples) / dt
    return DriftDiffusion(x, drift, drift_se, cov, cov_se, dt, int(n_samples))


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
