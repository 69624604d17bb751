"""The conditional covariance of the increments, fitted in closed form.

The one-step law of a Gaussian map is x_{n+1} = x_n + Delta a(x_n) + L(x_n) z with
L L^T = Delta Sigma(x_n). With the drift fitted (:mod:`slowflow.model.basis`), the
residuals r_n = x_{n+1} - x_n - Delta a(x_n) satisfy E[r r^T | x_n] = Delta Sigma(x_n), so
every entry of Sigma is a regression of r_i r_j / Delta on the same Legendre basis
(Stochastic Force Inference's diffusion estimator, Frishman & Ronceray 2020, with the
degree chosen by cross-validation over whole trajectories and the one-standard-error rule).
The regression is then repeated, each entry weighted by the inverse variance of its target
under the previous fit (r_i r_j / Delta has variance Sigma_ii Sigma_jj + Sigma_ij^2 for
Gaussian residuals: iteratively reweighted least squares, the Gaussian quasi-likelihood).
Unweighted, the fit is accurate in absolute terms only: where Sigma nearly vanishes (noise
that grows like |x|, ex4.1) it fell on the positivity floor, and held-out pairs there cost
~1e5 nats each (a mean held-out NLL of +69 nats per pair on ex4.1 against -3.62 now).

Why not let a network learn the scale by likelihood: the long-time spread of a rollout is
set by Sigma to the precision of the data, and a 2 % error of the variance, which moves the
one-step NLL by only ~1e-4 nats, already shows in W1 over hundreds of steps. The
regression uses every pair at once (the variance of a constant Sigma is known to
sqrt(2 / N)), takes seconds, and gives the same answer on every run.

A regression need not be positive semidefinite everywhere: the fitted matrices are
projected onto the cone by clipping their eigenvalues, in units of the data's overall
residual scale, at ``EIG_FLOOR`` (so the map never loses a direction of noise, and
variables of very different scales are treated alike).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from .basis import (
    Folds,
    Moments,
    box,
    choose_degree,
    exponents,
    features_np,
    max_degree,
    n_features,
)

#: Smallest eigenvalue of Sigma(x) relative to the overall residual variance (per unit time).
EIG_FLOOR = 1e-6
#: Rounds of reweighting: each entry's regression is weighted by the inverse variance of
#: its target under the previous round's Sigma (Gaussian quasi-likelihood), so that where
#: Sigma is small it is fitted to relative, not absolute, precision.
IRLS_ROUNDS = 3
#: A variance is floored at this fraction of its overall level before it weighs a pair (at
#: 1e-3 the pairs near a vanishing Sigma took over a misspecified fit: ex4.1's memory map
#: came out 30 % too wide elsewhere; 1e-2 keeps ex4.1's held-out NLL at -3.623).
IRLS_FLOOR = 1e-2
#: Highest degree tried for the covariance (variances are smoother than drifts need to be
#: resolved; higher degrees only add noise to the spread).
MAX_COV_DEGREE = 4


def entries(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the upper triangle, the order of the stored entries."""
    return np.triu_indices(d)


@dataclass
class CovarianceFit:
    """A fitted Sigma(x) = sym(B^T phi(x)) (per unit time) with its selection record."""

    lo: np.ndarray
    hi: np.ndarray
    degree: int
    coef: np.ndarray  # (P, d (d + 1) / 2): upper-triangle entries of Sigma
    scale: np.ndarray  # (d,) overall residual std per unit time (units of the PSD floor)
    cv_loss: dict = field(default_factory=dict)
    cv_se: dict = field(default_factory=dict)
    n_pairs: int = 0
    n_groups: int = 0

    @property
    def dim(self) -> int:
        return int(self.scale.shape[0])

    @property
    def expo(self) -> np.ndarray:
        return exponents(len(self.lo), self.degree)

    def raw(self, z) -> np.ndarray:
        """The regression's symmetric matrices (n, d, d) at points (n, p), not projected."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float64))
        q = features_np(z, self.lo, self.hi, self.expo) @ self.coef
        rows, cols = entries(self.dim)
        out = np.zeros((z.shape[0], self.dim, self.dim))
        out[:, rows, cols] = q
        out[:, cols, rows] = q
        return out

    def sigma(self, z) -> np.ndarray:
        """Sigma (n, d, d) at points (n, p), projected onto the positive definite cone."""
        return project_psd(self.raw(z), self.scale)

    def summary(self) -> dict:
        return {
            "degree": int(self.degree),
            "n_features": int(self.coef.shape[0]),
            "cv_loss": {int(k): float(v) for k, v in self.cv_loss.items()},
            "cv_se": {int(k): float(v) for k, v in self.cv_se.items()},
            "n_pairs": int(self.n_pairs),
            "n_groups": int(self.n_groups),
        }


def project_psd(s: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Symmetric matrices (n, d, d) with eigenvalues clipped at ``EIG_FLOOR`` in the units
    ``scale`` (d,) (numpy version of :func:`cholesky_torch`'s projection)."""
    unit = np.outer(scale, scale)
    if s.shape[-1] == 1:  # the eigenvalue is the entry
        return np.maximum(s, EIG_FLOOR * unit)
    w, v = np.linalg.eigh(0.5 * (s + np.swapaxes(s, -1, -2)) / unit)
    w = np.maximum(w, EIG_FLOOR)
    return np.einsum("nij,nj,nkj->nik", v, w, v) * unit


def cholesky_torch(q: torch.Tensor, scale: torch.Tensor, dim: int) -> torch.Tensor:
    """Lower Cholesky factors (n, d, d) of the upper-triangle entries ``q`` (n, m) after the
    projection of :func:`project_psd`.

    Matrices whose eigenvalues all exceed the floor (those where a Cholesky factorization
    of S - floor I succeeds), nearly all of them, are factorized directly; only the others
    go through an eigendecomposition (the rollout's cost is then that of two batched
    Cholesky factorizations)."""
    if dim == 1:
        return (q.clamp_min(EIG_FLOOR * scale[0] ** 2)).sqrt().unsqueeze(-1)
    rows, cols = torch.triu_indices(dim, dim, device=q.device)
    s = torch.zeros(q.shape[:-1] + (dim, dim), dtype=q.dtype, device=q.device)
    s[..., rows, cols] = q
    s[..., cols, rows] = q
    unit = scale.unsqueeze(-1) * scale.unsqueeze(-2)
    s = s / unit
    eye = torch.eye(dim, dtype=q.dtype, device=q.device)
    nonfinite = ~torch.isfinite(s).all(-1).all(-1)
    _, info = torch.linalg.cholesky_ex(s - EIG_FLOOR * eye)
    bad = info != 0
    if bool(bad.any()):
        s = s.clone()
        s[bad] = _project_ill(s[bad])
    chol, info = torch.linalg.cholesky_ex(s)
    failed = (info != 0) | nonfinite
    if bool(failed.any()):  # non-finite entries: the path is reported, never a crash
        chol = chol.masked_fill(failed[..., None, None], float("nan"))
    return chol * scale.unsqueeze(-1)


def _project_ill(s: torch.Tensor) -> torch.Tensor:
    """The projection of matrices (k, d, d) that fail the direct factorization, in float64:
    eigenvalues clipped at ``EIG_FLOOR`` and at 1e-7 of the largest one, so that the
    result factorizes in float32 too (without the relative floor a covariance extrapolated
    to large values kept a condition number beyond float32's precision, and the
    factorization failed inside a rollout). Non-finite entries are zeroed here and the
    factor marked non-finite by the caller."""
    sd = torch.nan_to_num(s.double(), nan=0.0, posinf=0.0, neginf=0.0)
    w, v = torch.linalg.eigh(0.5 * (sd + sd.transpose(-1, -2)))
    floor = (w.amax(-1, keepdim=True) * 1e-7).clamp_min(EIG_FLOOR)
    psd = (v * torch.maximum(w, floor).unsqueeze(-2)) @ v.transpose(-1, -2)
    return (0.5 * (psd + psd.transpose(-1, -2))).to(s.dtype)


def fit_covariance(
    resid: np.ndarray,
    dt: float,
    z: np.ndarray,
    groups: np.ndarray | None = None,
    degree: int | None = None,
    folds: int = 10,
    seed: int = 0,
) -> CovarianceFit:
    """Sigma(z) from drift residuals by least squares on a Legendre basis.

    Parameters
    ----------
    resid : array (N, d)
        x_{n+1} - x_n - Delta a(z_n) for the fitted drift a.
    dt : float
        The observation step Delta.
    z : array (N, p)
        The points the covariance is a function of (x_n, or a window's coordinates).
    groups : array (N,), optional
        Trajectory of each pair: folds keep a group whole.
    degree : int, optional
        Fix the total degree instead of choosing it (0: a constant Sigma).

    Returns
    -------
    CovarianceFit

    Examples
    --------
    Additive noise of variance 0.25 per unit time:

    >>> rng = np.random.default_rng(0)
    >>> z = rng.uniform(-1, 1, size=(50_000, 1))
    >>> fit = fit_covariance(0.05 * rng.standard_normal((50_000, 1)), 0.01, z)
    >>> fit.degree
    0
    >>> round(float(fit.sigma([[0.3]])[0, 0, 0]), 2)
    0.25
    """
    resid = np.asarray(resid, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    n, d = resid.shape
    if n < 2:
        raise ConfigError(f"the covariance estimator needs at least 2 pairs, got {n}")
    p_dim = z.shape[1]
    rows, cols = entries(d)
    target = resid[:, rows] * resid[:, cols] / float(dt)  # (n, m)
    scale = np.sqrt(np.maximum(target[:, rows == cols].mean(0), 1e-300))
    groups = np.arange(n) if groups is None else np.asarray(groups)
    top = int(degree) if degree is not None else min(MAX_COV_DEGREE, max_degree(p_dim, n))
    lo, hi = box(z)
    cv = Folds.of(groups, folds, seed)
    z, target = z[cv.order], target[cv.order]
    phi = features_np(z, lo, hi, exponents(p_dim, top))
    # the degree is chosen on the unweighted losses: weighted by 1 / Sigma^2, a few pairs
    # where Sigma nearly vanishes dominate the held-out loss and its standard error, and
    # the one-standard-error rule then fell back to a constant Sigma (ex4.1 with memory)
    best, coef, loss, se = _weighted_fit(phi, target, None, cv, top, p_dim, degree)
    for _ in range(IRLS_ROUNDS):
        weights = _entry_weights(phi[:, : coef.shape[0]] @ coef, d, scale)
        coef = _weighted_fit(phi, target, weights, cv, best, p_dim, best)[1]
    return CovarianceFit(lo, hi, best, coef, scale, loss, se, n, cv.n_groups)


def _weighted_fit(phi, target, weights, cv, top, p_dim, degree):
    """(degree, coef, cv_loss, cv_se): each entry's weighted least squares on the features
    of degree <= ``top``, the degree chosen by cross-validation (``degree`` given: fixed)
    on the held-out losses summed over entries, each relative to its variance.
    ``weights`` (n, m) per pair and entry, or None (all 1: one pass for every entry)."""
    phi = phi[:, : n_features(p_dim, top)]
    if weights is None:
        mos = [Moments.of(phi, target, np.ones(target.shape[0]), cv.bounds)]
    else:
        m = target.shape[1]
        mos = [Moments.of(phi, target[:, e], weights[:, e], cv.bounds) for e in range(m)]
    best, loss, se = top, {}, {}
    if degree is None and cv.k >= 2:
        per = np.concatenate([mo.heldout(top, p_dim) for mo in mos], axis=-1)
        spread = np.maximum(target.var(0), 1e-300)  # entries on a common scale
        per = (per / spread).sum(-1)
        best, loss, se = choose_degree(per)
    coef = np.concatenate([mo.coef(n_features(p_dim, best)) for mo in mos], axis=-1)
    return best, coef, loss, se


def _entry_weights(q: np.ndarray, d: int, scale: np.ndarray) -> np.ndarray:
    """Per pair and entry, the inverse variance of r_i r_j / Delta under a Gaussian law of
    covariance ``q`` (upper-triangle entries (n, m)): Sigma_ii Sigma_jj + Sigma_ij^2, the
    variances floored at ``IRLS_FLOOR`` of their overall level."""
    rows, cols = entries(d)
    diag = np.maximum(q[:, rows == cols], IRLS_FLOOR * scale**2)
    return 1.0 / (diag[:, rows] * diag[:, cols] + np.where(rows == cols, 0.0, q**2))


__all__ = ["CovarianceFit", "cholesky_torch", "fit_covariance", "project_psd"]
