"""The effective drift and diffusion read off a learned map, and the data's own
binned increment statistics to compare them with."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError
from ..io.atomic import atomic_open
from ..io.limits import check_memory
from ..model.flowmap import FlowMap
from ..model.score import sample_with as _sample
from .starts import draw_histories, warn_outside


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

    def save(self, path) -> None:
        """Write ``x``, ``drift``, ``drift_se``, ``diffusion``, ``diffusion_se`` and ``dt``
        to an ``.npz`` file (atomically)."""
        keys = ("x", "drift", "drift_se", "diffusion", "diffusion_se", "dt")
        with atomic_open(path) as fh:
            np.savez(fh, **{k: getattr(self, k) for k in keys})


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
        warn_outside(model, x)
    fit_se = None
    if model.config.uses_basis:
        # with memory: the error of the drift averaged over the drawn histories
        z = np.stack([model.drift_coords(w) for w in windows]) if k else x
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


def data_drift_diffusion(data, n_bins: int):
    """The data's own drift and diffusion, binned: ``n_bins`` quantile bins of the first
    component of x_n. Returns the bins' centres (m, d), drift (m, d) = mean increment / dt
    and diffusion diagonal (m, d) = increment variance / dt, over the m bins holding at
    least 2 pairs."""
    from ..data import make_pairs

    x0, x1 = make_pairs(data)
    edges = np.quantile(x0[:, 0], np.linspace(0.0, 1.0, int(n_bins) + 1))
    centers, mean, std, counts = binned_increment_stats(x0, x1, edges)
    ok = counts >= 2
    return centers[ok], mean[ok] / data.dt, std[ok] ** 2 / data.dt
