"""Kramers-Moyal baseline: drift and diffusion from conditional moments of the increments.

For pairs (x_n, x_{n+1}) with increments D = x_{n+1} - x_n at step Delta,

    a(x)     = E[D | x_n = x] / Delta,
    Sigma(x) = Cov[D | x_n = x] / Delta,

estimated on a regular grid (ell <= 2) by a Gaussian-kernel (Nadaraya-Watson) smoother:
the sums of 1, D and D D^T are binned on a fine grid and smoothed with a Gaussian filter of
bandwidth ``h`` per dimension (default: Silverman's rule, 1.06 std n^(-1/5)). Grid cells
with too little kernel mass take the value of the nearest well-estimated cell (constant
extrapolation). Rollouts use Euler-Maruyama with the interpolated coefficients at the
data's step Delta (optionally with substeps). A periodic variable (an angle) gets a grid
over its whole range, smoothing and interpolation that wrap around, increments taken on
the circle, and rollouts that stay in its range. Written here rather than taken from the
``kramersmoyal`` package because that package expects one long time series, while
slowflow's data are many short bursts whose pairs must not be joined.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.interpolate import RegularGridInterpolator

from ..data import Trajectories, make_windows, periodic_ranges
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
    periods: list = field(default_factory=list)  # per axis (lo, hi) of an angle, or None

    @property
    def dim(self) -> int:
        return len(self.axes)

    def _interp(self, table: np.ndarray, x: np.ndarray) -> np.ndarray:
        axes, x = list(self.axes), x.copy()
        for j, r in enumerate(self.periods or []):
            if r is not None:  # close the circle: the first grid slice again at lo + period
                axes[j] = np.append(axes[j], r[1])
                table = np.concatenate([table, np.take(table, [0], axis=j)], axis=j)
                x[:, j] = r[0] + np.mod(x[:, j] - r[0], r[1] - r[0])
        lo = np.array([a[0] for a in axes])
        hi = np.array([a[-1] for a in axes])
        f = RegularGridInterpolator(axes, table, method="linear")
        return f(np.clip(x, lo, hi))

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
    h0, x1, _ = make_windows(data)  # a periodic target is x_n + its increment on the circle
    x0 = h0[:, 0]
    inc = x1 - x0
    n, d = x0.shape
    periods = periodic_ranges(data)
    lo = np.quantile(x0, 0.001, axis=0)
    hi = np.quantile(x0, 0.999, axis=0)
    axes, step = [], np.empty(d)
    for i, r in enumerate(periods):
        if r is None:
            axes.append(np.linspace(lo[i], hi[i], n_grid))
            step[i] = (hi[i] - lo[i]) / (n_grid - 1)
        else:  # the whole circle, the last cell next to the first
            lo[i], step[i] = r[0], (r[1] - r[0]) / n_grid
            axes.append(r[0] + step[i] * np.arange(n_grid))
    h = (
        (1.06 * x0.std(0) * n ** (-1 / 5))
        if bandwidth is None
        else np.broadcast_to(np.asarray(bandwidth, dtype=float), (d,))
    )
    idx = np.rint((x0 - lo) / step).astype(int)
    for i, r in enumerate(periods):
        idx[:, i] = (
            np.mod(idx[:, i], n_grid) if r is not None else np.clip(idx[:, i], 0, n_grid - 1)
        )
    flat = np.ravel_multi_index(tuple(idx.T), (n_grid,) * d)
    size = n_grid**d

    def binned(w):
        return np.bincount(flat, weights=w, minlength=size).reshape((n_grid,) * d)

    sigma = h / step
    modes = ["wrap" if r is not None else "constant" for r in periods]
    smooth = lambda a: ndimage.gaussian_filter(a, sigma=sigma, mode=modes)  # noqa: E731
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
    return KramersMoyal(axes, mean / data.dt, cov / data.dt, data.dt, np.asarray(h), periods)
