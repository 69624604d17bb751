"""Kramers-Moyal baseline: drift and diffusion from conditional moments of the increments.

For pairs (x_n, x_{n+1}) with increments D = x_{n+1} - x_n at step Delta,

    a(x)     = E[D | x_n = x] / Delta,
    Sigma(x) = Cov[D | x_n = x] / Delta,

estimated on a regular grid (ell <= 2) by a Gaussian-kernel (Nadaraya-Watson) smoother:
the sums of 1, D and D D^T are binned on a fine grid and smoothed with a Gaussian filter of
bandwidth ``h`` per dimension (default: Silverman's rule, 1.06 std n^(-1/5)). Grid cells
with too little kernel mass take the value of the nearest well-estimated cell (constant
extrapolation). Rollouts use Euler-Maruyama with the interpolated coefficients at the
data's step Delta (optionally with substeps). Written here rather than taken from the
``kramersmoyal`` package because that package expects one long time series, while
slowflow's data are many short bursts whose pairs must not be joined.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from ..data import Trajectories, make_pairs
from ..errors import ConfigError
from ._em import EulerMaruyama


@dataclass
class KramersMoyal(EulerMaruyama):
    """Drift (G..., d) and diffusion (G..., d, d) tabulated on a regular grid."""

    axes: list[np.ndarray]
    drift_grid: np.ndarray
    diffusion_grid: np.ndarray
    dt: float
    bandwidth: np.ndarray

    @property
    def dim(self) -> int:
        return len(self.axes)

    def _interp(self, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        lo = np.array([a[0] for a in self.axes])
        hi = np.array([a[-1] for a in self.axes])
        xc = np.clip(x, lo, hi)
        f = RegularGridInterpolator(self.axes, table, method="linear")
        return f(xc)

    def coefficients(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Drift (n, d) and diffusion (n, d, d) at points x (n, d)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        return self._interp(self.drift_grid, x), self._interp(self.diffusion_grid, x)


def fit_kramers_moyal(
    data: Trajectories, n_grid: int = 101, bandwidth=None, min_mass: float = 20.0
) -> KramersMoyal:
    """Estimate the drift and diffusion of ``data`` (d <= 2) on an ``n_grid`` grid per axis."""
    if data.dim > 2:
        raise ConfigError(f"the Kramers-Moyal baseline supports d <= 2, the data have d={data.dim}")
    x0, x1 = make_pairs(data)
    inc = x1 - x0
    n, d = x0.shape
    lo = np.quantile(x0, 0.001, axis=0)
    hi = np.quantile(x0, 0.999, axis=0)
    axes = [np.linspace(lo[i], hi[i], n_grid) for i in range(d)]
    step = (hi - lo) / (n_grid - 1)
    h = (
        (1.06 * x0.std(0) * n ** (-1 / 5))
        if bandwidth is None
        else np.broadcast_to(np.asarray(bandwidth, dtype=float), (d,))
    )
    idx = np.clip(np.rint((x0 - lo) / step).astype(int), 0, n_grid - 1)
    flat = np.ravel_multi_index(tuple(idx.T), (n_grid,) * d)
    size = n_grid**d

    def binned(w):
        return np.bincount(flat, weights=w, minlength=size).reshape((n_grid,) * d)

    sigma = h / step
    smooth = lambda a: ndimage.gaussian_filter(a, sigma=sigma, mode="constant")  # noqa: E731
    s0 = smooth(binned(np.ones(n)))
    s1 = np.stack([smooth(binned(inc[:, i])) for i in range(d)], -1)
    s2 = np.empty((*(n_grid,) * d, d, d))
    for i in range(d):
        for j in range(i, d):
            s2[..., i, j] = s2[..., j, i] = smooth(binned(inc[:, i] * inc[:, j]))
    good = s0 >= min_mass
    if not good.any():
        raise ConfigError("too few pairs for the Kramers-Moyal estimator")
    safe = np.where(good, s0, 1.0)
    mean = s1 / safe[..., None]
    cov = s2 / safe[..., None, None] - mean[..., :, None] * mean[..., None, :]
    # constant extrapolation from the nearest well-estimated cell
    _, nearest = ndimage.distance_transform_edt(~good, return_indices=True)
    mean = mean[tuple(nearest)]
    cov = cov[tuple(nearest)]
    return KramersMoyal(axes, mean / data.dt, cov / data.dt, data.dt, np.asarray(h))
