"""The drift as a linear combination of a generic basis, fitted in closed form.

One-step likelihood training hardly sees drift errors (at Delta = 0.01 a 10 % drift error
moves the NLL by ~3e-5 nats), while long rollouts are ruled by the drift. The information
about the drift in the data is the total observed time, and a linear-in-parameters
estimator uses all of it: the increments' rates y_n = (x_{n+1} - x_n) / Delta are regressed
on the features phi(x_n) of a tensor Legendre basis of total degree <= p (Stochastic Force
Inference's recipe, Frishman & Ronceray 2020, with Legendre polynomials on the data's box
instead of monomials for conditioning).

* **Degree** chosen by K-fold cross-validation over groups of pairs (whole trajectories),
  from the sufficient statistics of one pass over the data (the Gram matrices of the
  highest degree hold those of every lower one), with the one-standard-error rule: the
  lowest degree whose held-out loss is within one standard error (of the paired
  difference over folds) of the best.
* **Weights**: weighted least squares per component, each pair weighted by the inverse
  of its component's conditional variance. Given (``weights=``, e.g. from a model's
  learned scale) or, by default, one step of feasible generalized least squares: each
  component's squared residual of the unweighted fit is regressed on a degree-2 basis and
  inverted (floored). Multiplicative noise (diffusion growing with |x|) then no longer lets
  the noisiest states dominate the fit, nor the quietest ones be fitted loosely.
* **Error bars**: a cluster-robust (sandwich) covariance of the coefficients, clustered by
  trajectory, so correlated residuals within a burst (memory at Delta) widen them honestly.

Outside the data's box the features are evaluated at the nearest point of the box (the
drift continues as a constant), so a polynomial never extrapolates into a blow-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

import numpy as np
import torch

from ..errors import ConfigError

#: Largest total degree tried per number of variables (more variables: fewer degrees).
MAX_DEGREE = {1: 8, 2: 6, 3: 5, 4: 4}
#: Most features a basis may have (a d = 5 cubic basis has 56).
MAX_FEATURES = 300
WEIGHT_FLOOR = 0.05  # a variance is floored at this fraction of its mean before inverting


def exponents(dim: int, degree: int) -> np.ndarray:
    """Multi-indices (P, dim) of total degree <= ``degree``, ordered by degree (so the
    features of degree <= p are the first ``n_features(dim, p)`` columns).

    Examples
    --------
    >>> exponents(2, 2).tolist()
    [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    """
    rows = [np.zeros(dim, dtype=np.int64)]
    for k in range(1, degree + 1):
        for combo in combinations_with_replacement(range(dim), k):
            e = np.zeros(dim, dtype=np.int64)
            for j in combo:
                e[j] += 1
            rows.append(e)
    return np.stack(rows)


def n_features(dim: int, degree: int) -> int:
    return math.comb(dim + degree, degree)


def max_degree(dim: int, n_pairs: int) -> int:
    """The highest degree tried: ``MAX_DEGREE`` (3 beyond d = 4), lowered until the basis
    has at most ``MAX_FEATURES`` features and at least 50 pairs per feature."""
    p = MAX_DEGREE.get(dim, 3)
    while p > 1 and (
        n_features(dim, p) > MAX_FEATURES or n_features(dim, p) * 50 > max(n_pairs, 1)
    ):
        p -= 1
    return p


def _legendre_table(u, degree: int, lib):
    """P_0..P_degree at u (..., d) -> (..., d, degree + 1); ``lib`` is numpy or torch."""
    cols = [lib.ones_like(u), u]
    for k in range(1, degree):
        cols.append(((2 * k + 1) * u * cols[k] - k * cols[k - 1]) / (k + 1))
    return lib.stack(cols[: degree + 1], -1)


def features_np(
    x: np.ndarray, lo: np.ndarray, hi: np.ndarray, expo: np.ndarray, rows: int = 16384
) -> np.ndarray:
    """Features (n, P) of points x (n, d) on the box [lo, hi] (clipped to it); computed in
    blocks of ``rows`` points, which keeps the products in the CPU's caches (2x faster
    than whole columns at 10^6 points)."""
    n, d = x.shape
    top = int(expo.max(initial=0))
    out = np.empty((n, expo.shape[0]))
    for i in range(0, n, rows):
        u = np.clip(2.0 * (x[i : i + rows] - lo) / (hi - lo) - 1.0, -1.0, 1.0)
        table = _legendre_table(u, top, np)  # (r, d, top + 1)
        block = table[:, 0, expo[:, 0]] if d else np.ones((u.shape[0], expo.shape[0]))
        for j in range(1, d):
            block *= table[:, j, expo[:, j]]
        out[i : i + rows] = block
    return out


def features_torch(x: torch.Tensor, lo, hi, expo: torch.Tensor) -> torch.Tensor:
    """Torch version of :func:`features_np` (differentiable, on x's device)."""
    u = torch.clamp(2.0 * (x - lo) / (hi - lo) - 1.0, -1.0, 1.0)
    table = _legendre_table(u, int(expo.max()) if expo.numel() else 0, torch)
    out = torch.ones(x.shape[:-1] + (expo.shape[0],), dtype=x.dtype, device=x.device)
    for j in range(x.shape[-1]):
        out = out * table[..., j, :][..., expo[:, j]]
    return out


def box(x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The data's box: per-variable min and max of the starts (a zero width is widened)."""
    lo, hi = x0.min(0).astype(np.float64), x0.max(0).astype(np.float64)
    width = np.where(hi - lo > 0, hi - lo, np.maximum(np.abs(lo), 1.0))
    same = hi - lo <= 0
    lo, hi = np.where(same, lo - 0.5 * width, lo), np.where(same, hi + 0.5 * width, hi)
    return lo, hi


@dataclass
class DriftFit:
    """A fitted basis drift a(x) = B^T phi(x) with its selection record."""

    lo: np.ndarray
    hi: np.ndarray
    degree: int
    coef: np.ndarray  # (P, d)
    cov: np.ndarray  # (d, P, P): covariance of each component's coefficients
    cv_loss: dict = field(default_factory=dict)  # degree -> held-out loss above the best
    cv_se: dict = field(default_factory=dict)  # its standard error (paired over folds)
    n_pairs: int = 0
    n_groups: int = 0
    weights: str = "residual"  # how the pairs were weighted ("residual" or "given")

    @property
    def expo(self) -> np.ndarray:
        return exponents(len(self.lo), self.degree)

    def drift(self, x) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        return features_np(x, self.lo, self.hi, self.expo) @ self.coef

    def component_cov(self) -> np.ndarray:
        """(d, P, P): the covariance of each component's coefficients."""
        return self.cov

    def drift_se(self, x) -> np.ndarray:
        """Standard error (n, d) of the fitted drift at points x (n, d)."""
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        phi = features_np(x, self.lo, self.hi, self.expo)
        var = np.einsum("np,ipq,nq->ni", phi, self.component_cov(), phi)
        return np.sqrt(np.maximum(var, 0.0))

    def summary(self) -> dict:
        return {
            "degree": int(self.degree),
            "n_features": int(self.coef.shape[0]),
            "cv_loss": {int(k): float(v) for k, v in self.cv_loss.items()},
            "cv_se": {int(k): float(v) for k, v in self.cv_se.items()},
            "n_pairs": int(self.n_pairs),
            "n_groups": int(self.n_groups),
            "weights": self.weights,
        }


def solve_normal(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Least-squares coefficients from normal equations, with a tiny ridge for rank safety."""
    p = gram.shape[0]
    ridge = 1e-10 * max(np.trace(gram) / p, 1e-300)
    return np.linalg.solve(gram + ridge * np.eye(p), rhs)


@dataclass
class Moments:
    """Weighted sufficient statistics of ``m`` targets that share one weight per row, per
    cross-validation fold: everything the fits of every degree and fold need."""

    gram: np.ndarray  # (k, P, P)
    cross: np.ndarray  # (k, P, m)
    yy: np.ndarray  # (k, m)
    mass: np.ndarray  # (k,) sum of weights

    @classmethod
    def of(cls, phi, y, w, bounds) -> Moments:
        """``y`` (n, m) or (n,); ``bounds``: fold f is rows bounds[f]:bounds[f + 1] (rows
        sorted by fold)."""
        y = y.reshape(y.shape[0], -1)
        k, p, m = len(bounds) - 1, phi.shape[1], y.shape[1]
        out = cls(np.zeros((k, p, p)), np.zeros((k, p, m)), np.zeros((k, m)), np.zeros(k))
        for f in range(k):
            sl = slice(bounds[f], bounds[f + 1])
            pw = phi[sl] * w[sl, None]
            out.gram[f], out.cross[f] = pw.T @ phi[sl], pw.T @ y[sl]
            out.yy[f], out.mass[f] = w[sl] @ (y[sl] ** 2), float(w[sl].sum())
        return out

    def coef(self, n_feat: int, leave_out: int | None = None) -> np.ndarray:
        """Coefficients (n_feat, m) on the first ``n_feat`` features (all folds but one)."""
        g, c = self.gram.sum(0), self.cross.sum(0)
        if leave_out is not None:
            g, c = g - self.gram[leave_out], c - self.cross[leave_out]
        return solve_normal(g[:n_feat, :n_feat], c[:n_feat])

    def heldout(self, max_deg: int, dim: int) -> np.ndarray:
        """Held-out weighted mean squared error per fold, degree and target
        (k, max_deg + 1, m); ``dim``: the number of variables the features are built on."""
        k, m = self.yy.shape
        per = np.empty((k, max_deg + 1, m))
        for deg in range(max_deg + 1):
            nf = n_features(dim, deg)
            for f in range(k):
                beta = self.coef(nf, leave_out=f)
                g, c = self.gram[f][:nf, :nf], self.cross[f][:nf]
                sse = self.yy[f] - 2.0 * (beta * c).sum(0) + np.einsum("pi,pq,qi->i", beta, g, beta)
                per[f, deg] = sse / max(self.mass[f], 1e-300)
        return per


def choose_degree(per: np.ndarray) -> tuple[int, dict, dict]:
    """The one-standard-error rule on paired fold differences: the lowest degree whose mean
    held-out loss exceeds the best degree's by less than one standard error of the
    difference (extra features that do not clearly help only add variance). ``per``:
    held-out losses (folds, degrees)."""
    k = per.shape[0]
    mean = per.mean(0)
    best = int(np.argmin(mean))
    se = (per - per[:, [best]]).std(0, ddof=1) / math.sqrt(k)
    chosen = next(p for p in range(per.shape[1]) if mean[p] - mean[best] <= se[p])
    excess = {p: float(mean[p] - mean[best]) for p in range(per.shape[1])}
    return chosen, excess, {p: float(se[p]) for p in range(per.shape[1])}


@dataclass
class Folds:
    """Rows reordered so that cross-validation folds and groups are contiguous slices."""

    order: np.ndarray  # row permutation
    bounds: np.ndarray  # fold f is rows bounds[f]:bounds[f + 1] (after ``order``)
    starts: np.ndarray  # first row of each group (after ``order``)
    n_groups: int

    @classmethod
    def of(cls, groups: np.ndarray, folds: int, seed: int) -> Folds:
        uniq, inv = np.unique(groups, return_inverse=True)
        k = int(max(1, min(folds, len(uniq))))
        fold = np.random.default_rng(seed).permutation(len(uniq))[inv] % k
        order = np.lexsort((inv, fold))
        inv, fold = inv[order], fold[order]
        bounds = np.searchsorted(fold, np.arange(k + 1))
        starts = np.flatnonzero(np.r_[True, inv[1:] != inv[:-1]])
        return cls(order, bounds, starts, len(uniq))

    @property
    def k(self) -> int:
        return len(self.bounds) - 1


def _residual_weights(x0, resid, lo, hi) -> np.ndarray:
    """(N, d): per component, 1 / (its squared residual regressed on a degree-2 basis)."""
    d = x0.shape[1]
    deg = 2 if n_features(d, 2) * 50 <= x0.shape[0] else 1
    phi = features_np(x0, lo, hi, exponents(d, deg))
    q = resid**2
    qhat = phi @ solve_normal(phi.T @ phi, phi.T @ q)
    return 1.0 / np.maximum(qhat, WEIGHT_FLOOR * q.mean(0))


def _cluster_cov(phi, resid, w, starts, gram) -> np.ndarray:
    """Sandwich covariance (P, P) of one component's coefficients, clustered by groups
    (rows sorted by group; ``starts``: the first row of each group); ``gram`` = Phi' W Phi."""
    scores = np.add.reduceat(phi * (w * resid)[:, None], starts, axis=0)
    bread = np.linalg.pinv(gram)
    return bread @ (scores.T @ scores) @ bread


def fit_drift(
    x0: np.ndarray,
    x1: np.ndarray,
    dt: float,
    groups: np.ndarray | None = None,
    degree: int | None = None,
    weights: np.ndarray | None = None,
    folds: int = 10,
    seed: int = 0,
    context: np.ndarray | None = None,
) -> DriftFit:
    """Least-squares drift on a Legendre basis, degree chosen by cross-validation.

    Parameters
    ----------
    x0, x1 : arrays (N, d)
        Pairs of consecutive observations at step ``dt``.
    groups : array (N,) of ints, optional
        Which trajectory each pair comes from: folds and error bars keep a group whole.
        None: every pair is its own group.
    degree : int, optional
        Fix the total degree instead of choosing it.
    weights : array (N, d), optional
        Per pair and component, the inverse of the increment's conditional variance (any
        common scale). None: estimated from the residuals of an unweighted fit.
    folds : int
        Number of cross-validation folds.
    context : array (N, p), optional
        The variables the drift is a function of (default ``x0``): for a map with memory,
        the coordinates of the window of past observations.

    Returns
    -------
    DriftFit

    Examples
    --------
    Pairs of an Ornstein-Uhlenbeck process dx = -x dt + 0.5 dW at step 0.01:

    >>> rng = np.random.default_rng(0)
    >>> x0 = rng.uniform(-2, 2, size=(100_000, 1))
    >>> x1 = x0 - 0.01 * x0 + 0.05 * rng.standard_normal(x0.shape)
    >>> fit = fit_drift(x0, x1, dt=0.01)
    >>> fit.degree
    1
    >>> a, se = fit.drift([[1.0]]), fit.drift_se([[1.0]])
    >>> bool(abs(a[0, 0] + 1.0) < 4 * se[0, 0])
    True
    """
    x0 = np.asarray(x0, dtype=np.float64)
    y = (np.asarray(x1, dtype=np.float64) - x0) / float(dt)
    n, d = x0.shape
    if n < 2:
        raise ConfigError(f"the drift estimator needs at least 2 pairs, got {n}")
    z = x0 if context is None else np.asarray(context, dtype=np.float64).reshape(n, -1)
    p_dim = z.shape[1]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    top = int(degree) if degree is not None else max_degree(p_dim, n)
    lo, hi = box(z)
    cv = Folds.of(groups, folds, seed)
    z, y = z[cv.order], y[cv.order]
    phi = features_np(z, lo, hi, exponents(p_dim, top))
    how = "given"
    if weights is None:
        beta0 = solve_normal(phi.T @ phi, phi.T @ y)
        weights, how = _residual_weights(z, y - phi @ beta0, lo, hi), "residual"
    else:
        weights = np.asarray(weights, dtype=np.float64).reshape(n, -1)[cv.order]
    weights = np.broadcast_to(weights, (n, d))
    moments = [Moments.of(phi, y[:, i], weights[:, i], cv.bounds) for i in range(d)]
    loss, se, best = {}, {}, top
    if degree is None and cv.k >= 2:
        best, loss, se = choose_degree(sum(mo.heldout(top, p_dim)[..., 0] for mo in moments))
    m = n_features(p_dim, best)
    phi = np.ascontiguousarray(phi[:, :m])
    coef = np.concatenate([mo.coef(m) for mo in moments], 1)
    resid = y - phi @ coef
    cov = np.stack(
        [
            _cluster_cov(phi, resid[:, i], weights[:, i], cv.starts, mo.gram.sum(0)[:m, :m])
            for i, mo in enumerate(moments)
        ]
    )
    return DriftFit(lo, hi, best, coef, cov, loss, se, n, cv.n_groups, how)
