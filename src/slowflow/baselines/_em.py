"""Euler-Maruyama rollouts of an estimated SDE, shared by the classical baselines.

A baseline that provides ``coefficients(x) -> (drift (n, d), Sigma (n, d, d))`` (Sigma =
Cov[increment] / dt), ``dt`` and ``dim`` inherits :meth:`EulerMaruyama.simulate` and the
sampler protocol of :func:`slowflow.evaluate.calibration.check_calibration`.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def noise_factor(sigma: np.ndarray) -> np.ndarray:
    """Cholesky factors (n, d, d) of Sigma after clipping negative eigenvalues (an estimated
    diffusion need not be positive semidefinite everywhere), plus a tiny jitter."""
    d = sigma.shape[-1]
    if d == 1:
        return np.sqrt(np.clip(sigma, 0.0, None))
    sym = 0.5 * (sigma + np.swapaxes(sigma, -1, -2))
    w, v = np.linalg.eigh(sym)
    w = np.clip(w, 0.0, None)
    jitter = 1e-10 * np.maximum(w.max(-1), 1e-300)
    psd = np.einsum("nij,nj,nkj->nik", v, w, v) + jitter[:, None, None] * np.eye(d)
    return np.linalg.cholesky(psd)


class EulerMaruyama:
    """Mixin: rollouts of ``self.coefficients`` at the step ``self.dt``."""

    dt: float

    @property
    def dim(self) -> int:  # pragma: no cover - defined by the estimators
        raise NotImplementedError

    def coefficients(self, x) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _starts(self, x0, n_paths: int | None) -> np.ndarray:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim <= 1:
            if n_paths is None:
                raise ConfigError("n_paths is needed with a single start")
            x = np.broadcast_to(x0.reshape(1, -1), (int(n_paths), x0.size)).copy()
        else:
            x = x0.reshape(x0.shape[0], -1).copy()
        if x.shape[1] != self.dim:
            raise ConfigError(f"x0 has d={x.shape[1]} but the estimator has d={self.dim}")
        return x

    def _step(self, x: np.ndarray, z: np.ndarray, h: float) -> np.ndarray:
        a, s = self.coefficients(x)
        x = x + a * h + np.sqrt(h) * np.einsum("nij,nj->ni", noise_factor(s), z)
        for j, r in enumerate(getattr(self, "periods", None) or []):
            if r is not None:  # an angle stays in its range
                x[:, j] = r[0] + np.mod(x[:, j] - r[0], r[1] - r[0])
        return x

    def simulate(
        self, x0, n_steps: int, n_paths: int | None = None, seed: int = 0, substeps: int = 1
    ) -> np.ndarray:
        """Euler-Maruyama rollout, (n_paths, n_steps + 1, d).

        ``x0`` is one start (d,) broadcast to ``n_paths`` paths, or starts (n, d). Paths that
        become non-finite (a polynomial drift far outside the data) stay NaN.
        """
        x = self._starts(x0, n_paths)
        if int(substeps) < 1:
            raise ConfigError(f"substeps must be >= 1, found {substeps}")
        rng = np.random.default_rng(seed)
        out = np.empty((x.shape[0], int(n_steps) + 1, self.dim))
        out[:, 0] = x
        h = self.dt / int(substeps)
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(int(n_steps)):
                for _ in range(int(substeps)):
                    z = rng.standard_normal(x.shape)
                    ok = np.isfinite(x).all(1)
                    if ok.all():
                        x = self._step(x, z, h)
                    else:
                        x[ok] = self._step(x[ok], z[ok], h)
                        x[~ok] = np.nan
                out[:, k + 1] = x
        return out

    def sampler(self):
        """The sampler protocol of :func:`slowflow.evaluate.calibration.check_calibration`."""

        def sample(starts, n_steps, seed):
            return self.simulate(starts, n_steps, seed=seed)

        return sample
