"""Memory as correlated noise: an autoregression of the standardized one-step residuals.

When the fast variables decorrelate on a time comparable to Delta, the slow variable is not
Markov at Delta: its successive increments are correlated. The closed-form maps then carry
the memory in their noise, a regression with autoregressive errors:

    x_{n+1} = x_n + Delta a(x_n) + L(x_n) xi_{n+1},   L L^T = Delta Sigma(x_n),
    xi_{n+1} = A_1 xi_n + ... + A_K xi_{n-K+1} + C eta_{n+1},   eta ~ N(0, I),

with xi_m = L(x_{m-1})^{-1} (x_m - x_{m-1} - Delta a(x_{m-1})) the standardized residual of
the step that ended at x_m. The window (x_{n-K}, ..., x_n) of the last K + 1 observations
gives the K residuals the next step needs, so the map keeps the Distribution contract of a
map with memory K. The drift a, the one-step covariance Sigma (given x_n alone) and the
innovation covariance Q = C C^T are all fitted in closed form.

Why the noise and not the window's increments as inputs of the drift basis: the memory of
the increments scales with the local noise (multiplicative noise makes it a relative one,
x_n times a function of x_n / x_{n-1}), which a polynomial in (x_n, x_n - x_{n-1}) follows
badly near x = 0; standardized residuals are free of that scale, and a linear
autoregression on them is stable by construction (its companion matrix is checked).

Estimation is Cochrane-Orcutt iteration (Cochrane & Orcutt, JASA 44, 1949): given the
drift, A and Q by least squares on the residual windows; given A, the drift again by least
squares on the quasi-differenced equation eta = xi_{n+1} - sum_k A_k xi_{n+1-k}, which is
linear in the drift's coefficients (the residuals with memory are not those of the
one-step drift: x_n carries information about xi_n, and the one-step drift E[dx | x_n]
absorbs its average).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import batched
from .basis import features_np

#: Cochrane-Orcutt rounds (drift given A, A given drift); the AR coefficients settle in two.
ROUNDS = 3
#: Largest spectral radius of the companion matrix accepted (1: a unit root).
MAX_RADIUS = 0.98
#: Largest mean square of the Cochrane-Orcutt fit's standardized residuals (1 where its
#: covariance describes them; 0.99-1.04 measured on ex4.1-ex4.3 and the exp-mean OU up to
#: eps = 10 Delta) for which its drift is kept.
MAX_RESIDUAL_SCALE = 2.0


@dataclass(frozen=True)
class ARFit:
    """xi_{n+1} = sum_k coef[k-1] xi_{n+1-k} + chol eta: the autoregression of the
    standardized residuals."""

    coef: np.ndarray  # (K, d, d): A_1 (the most recent residual) ... A_K
    chol: np.ndarray  # (d, d): lower Cholesky factor of the innovation covariance Q
    radius: float  # spectral radius of the companion matrix
    n_windows: int
    #: which drift the residuals are of: "cochrane-orcutt" (refitted given the
    #: autoregression) or "one-step" (kept where the rounds' residuals were not standardized)
    drift: str = "cochrane-orcutt"
    #: the largest per-component mean square of the rounds' standardized residuals
    residual_scale: float | None = None

    @property
    def memory(self) -> int:
        return int(self.coef.shape[0])

    def summary(self) -> dict:
        q = self.chol @ self.chol.T
        return {
            "memory": self.memory,
            "coef": self.coef.tolist(),
            "innovation_cov": q.tolist(),
            "companion_radius": float(self.radius),
            "n_windows": int(self.n_windows),
            "drift": self.drift,
            "residual_scale": self.residual_scale,
        }


def steps(h: np.ndarray, x1: np.ndarray, periods) -> tuple[np.ndarray, np.ndarray]:
    """The K + 1 steps of windows h (N, K + 1, d) and targets x1 (N, d): starts (N, K + 1,
    d) and increments (periodic ones on the circle), oldest first."""
    from ..data import wrap_delta

    pts = np.concatenate([h, x1[:, None, :]], axis=1)
    inc = pts[:, 1:] - pts[:, :-1]
    for j, r in enumerate(periods or []):
        if r is not None:
            inc[..., j] = wrap_delta(inc[..., j], r[1] - r[0])
    return pts[:, :-1], inc


def residuals(starts, inc, drift, cov, dt: float, coords) -> tuple[np.ndarray, np.ndarray]:
    """Standardized residuals xi (N, S, d) of steps with starts (N, S, d) and increments
    (N, S, d), and the Cholesky factors L (N, S, d, d) of Delta Sigma at the starts;
    ``coords`` maps points (n, d) to the basis's coordinates."""
    n, s, d = starts.shape
    z = coords(starts.reshape(-1, d))
    r = inc.reshape(-1, d) - dt * drift.drift(z)
    chol = batched.cholesky(cov.sigma(z) * dt)
    xi = batched.solve_lower(chol, r)
    return xi.reshape(n, s, d), chol.reshape(n, s, d, d)


def fit_ar(xi: np.ndarray) -> ARFit:
    """Least squares of xi[:, -1] on xi[:, -2], ..., xi[:, 0] (windows (N, K + 1, d)); a
    fit whose companion matrix has a root beyond ``MAX_RADIUS`` is shrunk (A_k times c^k)
    until its largest root is ``MAX_RADIUS``."""
    n, s, d = xi.shape
    k = s - 1
    past = xi[:, -2::-1].reshape(n, k * d)  # most recent first
    target = xi[:, -1]
    gram = past.T @ past
    beta = np.linalg.solve(gram + 1e-9 * np.trace(gram) * np.eye(k * d), past.T @ target)
    coef = beta.T.reshape(d, k, d).transpose(1, 0, 2)  # (K, d, d)
    radius = _radius(coef)
    if radius > MAX_RADIUS:  # A_k -> c^k A_k scales every root of the companion by c
        c = MAX_RADIUS / radius
        coef = coef * c ** np.arange(1, k + 1)[:, None, None]
        radius = _radius(coef)
    resid = target - past @ coef.transpose(1, 0, 2).reshape(d, k * d).T
    q = resid.T @ resid / max(1, n)
    chol = np.linalg.cholesky(q + 1e-12 * np.eye(d))
    return ARFit(coef, chol, float(radius), int(n))


def _radius(coef: np.ndarray) -> float:
    k, d, _ = coef.shape
    comp = np.zeros((k * d, k * d))
    comp[:d] = coef.transpose(1, 0, 2).reshape(d, k * d)
    comp[d:, :-d] = np.eye((k - 1) * d)
    return float(np.abs(np.linalg.eigvals(comp)).max())


def predicted(ar: ARFit, xi_past: np.ndarray) -> np.ndarray:
    """sum_k A_k xi_{n+1-k} for pasts (N, K, d) given oldest first."""
    return np.einsum("kij,nkj->ni", ar.coef, xi_past[:, ::-1])


def drift_given_ar(starts, inc, drift, chol, ar: ARFit, dt: float, coords, chunk=50_000):
    """The drift's coefficients by least squares on the quasi-differenced equation
    C^-1 (xi_{n+1} - sum_k A_k xi_{n+1-k}) = eta, linear in them (the same features and
    degree as ``drift``); returns a DriftFit with the new coefficients and their
    covariance."""
    d = starts.shape[-1]
    p = drift.coef.shape[0]
    gram, rhs = np.zeros((d * p, d * p)), np.zeros(d * p)
    for i in range(0, starts.shape[0], chunk):
        sl = slice(i, i + chunk)
        tf, ty = _quasi_differenced(starts[sl], inc[sl], drift, chol[sl], ar, dt, coords)
        gram += tf.T @ tf
        rhs += tf.T @ ty
    gram_inv = np.linalg.pinv(gram)
    coef = (gram_inv @ rhs).reshape(d, p).T
    cov = np.stack([gram_inv[i * p : (i + 1) * p, i * p : (i + 1) * p] for i in range(d)])
    return replace(drift, coef=coef, cov=cov, weights="residual autoregression")


def _quasi_differenced(starts, inc, drift, chol, ar: ARFit, dt: float, coords):
    """Rows (n d, d p) and targets (n d,) of the quasi-differenced equation."""
    n, s, d = starts.shape
    z = coords(starts.reshape(-1, d))
    phi = features_np(z, drift.lo, drift.hi, drift.expo).reshape(n, s, -1)
    linv = batched.inv(chol)  # (n, S, d, d)
    y = np.einsum("nsij,nsj->nsi", linv, inc)  # the standardized increments
    # the drift's part of xi: Delta L^-1 (I kron phi^T) vec(B), as (n, S, d, d p)
    feat = dt * np.einsum("nsij,nsp->nsijp", linv, phi).reshape(n, s, d, -1)
    ty, tf = y[:, -1].copy(), feat[:, -1].copy()
    for k in range(ar.memory):
        a = ar.coef[k]
        ty -= y[:, -2 - k] @ a.T
        tf -= np.einsum("ij,njq->niq", a, feat[:, -2 - k])
    ci = np.linalg.inv(ar.chol)
    ty, tf = ty @ ci.T, np.einsum("ij,njq->niq", ci, tf)
    return tf.reshape(n * d, -1), ty.reshape(-1)


def fit_residual_ar(h, x1, groups, drift, cov, dt, coords, periods, refit_cov):
    """Cochrane-Orcutt rounds from the one-step fits ``drift``, ``cov``: returns the drift,
    the covariance (``refit_cov(residuals)`` refits it to the final drift's one-step
    residuals) and the :class:`ARFit` of the residuals they standardize.

    Near a unit root the quasi-differenced equation hardly identifies the drift (x_n and
    x_{n-1} almost coincide), and the rounds can settle where the drift's error dominates
    the residuals: on a skew product whose fast time is 50 Delta, residuals whose mean
    square was ~10^4 times what the covariance says (innovation variance 2,388), and
    rollouts that exploded. Such a
    fit is not a standardization at all, so where the rounds' residuals have a mean
    square above ``MAX_RESIDUAL_SCALE`` (per component) the one-step drift and covariance
    are kept with their own autoregression (``ARFit.drift`` says which was kept). The
    likelihood would not be the right judge: the one-step drift with an autoregression
    counts the memory twice (its drift already holds the residual's conditional mean) and
    can score better on the training windows while its rollouts drift off (exp-mean OU,
    eps = 10 Delta: W1/floor 12-18 against 1.2-1.9)."""
    starts, inc = steps(h, x1, periods)
    drift0, cov0 = drift, cov
    for _ in range(ROUNDS):
        xi, chol = residuals(starts, inc, drift, cov, dt, coords)
        drift = drift_given_ar(starts, inc, drift, chol, fit_ar(xi), dt, coords)
    cov = refit_cov(inc[:, -1] - dt * drift.drift(coords(starts[:, -1])))
    xi, _ = residuals(starts, inc, drift, cov, dt, coords)
    scale = float(np.mean(xi**2, axis=(0, 1)).max())
    if not scale <= MAX_RESIDUAL_SCALE:
        xi0, _ = residuals(starts, inc, drift0, cov0, dt, coords)
        return drift0, cov0, replace(fit_ar(xi0), drift="one-step", residual_scale=scale)
    return drift, cov, replace(fit_ar(xi), residual_scale=scale)
