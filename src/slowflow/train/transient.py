"""Do the first observations of the bursts move as the later ones do? The transient test
behind the automatic skip-first.

Bursts whose fast variables start away from their conditional equilibrium (the paper's
bursts start with y0 uniform in a box) have a transient: their first increments follow
another law than increments from the same slow state later on. On ex4.5 (eps = Delta / 10)
it lasts one step and shifts the first increment's mean by about 0.1 of its noise; only
1 % of the pairs, but enough to bias the drift by about its own standard error, which a
rollout of 2,000 steps turns into a shift of the ensemble. A held-out one-step score of
later targets barely sees that bias (paired z about -1), while the first increments
themselves show it plainly.

So :func:`transient_length` tests it directly. A drift and a covariance are fitted (by
:func:`~slowflow.model.basis.fit_drift` and
:func:`~slowflow.model.covariance.fit_covariance`) on the pairs that start at position
``max_skip`` or later of their burst (the reference). The increments from position j = 0,
1, ... of every burst are standardized by that reference, u = L(x_j)^-1 (x_{j+1} - x_j -
Delta a(x_j)), and tested for a conditional mean (a least-squares regression of u on
Legendre polynomials of degree <= 2 in x_j, heteroscedasticity-robust Wald statistic) and
a variance (mean of u^2 - 1, robust t) that differ from the reference's. The bursts are
independent, so under the hypothesis of no transient the statistic is chi^2 with as many
degrees of freedom as coefficients tested. Position j is skipped when its p-value is below
``alpha`` (1e-3: a false skip only costs 1 / n_obs of the data); the test runs on until a
position passes, at most ``max_skip`` positions.

On data with memory at Delta the test also sees the law of the history relax: the
one-step law of x_{j+1} given x_j depends on how x_{j-1}, ... are spread, and that spread
starts out of its stationary law too (an AR(2) process started at x_1 = x_0 + noise fails
at every position the test reaches). The test then skips up to ``max_skip`` positions,
which costs ``max_skip / n_obs`` of the pairs and nothing else (ex4.1: W1/floor unchanged).

Why the reference's own error does not fake a transient: it is fitted on all the later
pairs of the bursts, so its error is about sqrt(n_obs) times smaller than the resolution
of a test on one pair per burst.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..data import Trajectories, make_windows, periodic_ranges, window_positions
from ..model import batched
from ..model.basis import box, exponents, features_np, fit_drift, n_features
from ..model.covariance import fit_covariance
from .closed_form import condition_parts

#: p-value below which a position's increments count as a transient.
ALPHA = 1e-3
#: Pairs the reference fit uses at most (drawn at random beyond that).
REFERENCE_PAIRS = 300_000
#: Tested pairs needed per coefficient tested.
PAIRS_PER_COEF = 20


def transient_length(
    data: Trajectories, max_skip: int, seed: int = 0, alpha: float = ALPHA
) -> dict:
    """The number of leading observations whose increments are a transient (module
    docstring), with the test's record: ``{"skip": s, "positions": [{"position", "wald",
    "dof", "p_value", "variance_ratio", "n_pairs"}, ...], "alpha", "max_skip"}``
    (``skip`` 0 and no positions when the bursts are too short or too few)."""
    out: dict = {"skip": 0, "positions": [], "alpha": float(alpha), "max_skip": int(max_skip)}
    if max_skip < 1:
        return out
    h, x1, traj = make_windows(data, 0, 0)
    x0 = h[:, 0]
    pos = window_positions(traj)
    periods = periodic_ranges(data)
    ref = _reference(x0, x1, traj, pos >= max_skip, data.dt, periods, seed)
    if ref is None:
        return out
    for j in range(int(max_skip)):
        entry = _test_position(x0[pos == j], x1[pos == j], ref, data.dt, periods)
        if entry is None:
            break
        entry["position"] = j
        out["positions"].append(entry)
        if not entry["p_value"] < alpha:
            break
        out["skip"] = j + 1
    return out


def _reference(x0, x1, traj, keep, dt, periods, seed):
    """(drift, covariance) fitted on the pairs ``keep`` (None: too few of them)."""
    idx = np.flatnonzero(keep)
    if idx.size < 100:
        return None
    if idx.size > REFERENCE_PAIRS:
        rng = np.random.default_rng([seed, 23])
        idx = np.sort(rng.choice(idx, REFERENCE_PAIRS, replace=False))
    a, b, g = x0[idx], x1[idx], traj[idx]
    z = condition_parts(a, 0, periods)[1]
    drift = fit_drift(a, b, dt, g, seed=seed, context=z)
    cov = fit_covariance(b - a - dt * drift.drift(z), dt, z, g, seed=seed)
    return drift, cov


def _test_position(a, b, ref, dt, periods) -> dict | None:
    """The Wald test of one position's standardized increments (None: too few pairs)."""
    drift, cov = ref
    n, d = a.shape
    z = condition_parts(a, 0, periods)[1]
    degree = next(
        (k for k in (2, 1, 0) if n >= PAIRS_PER_COEF * d * (n_features(z.shape[1], k) + 1)),
        None,
    )
    if degree is None:
        return None
    chol = batched.cholesky(cov.sigma(z) * dt)
    u = batched.solve_lower(chol, b - a - dt * drift.drift(z))
    lo, hi = box(z)
    phi = features_np(z, lo, hi, exponents(z.shape[1], degree))
    wald = _mean_wald(phi, u) + _variance_wald(u)
    dof = d * (phi.shape[1] + 1)
    return {
        "wald": float(wald),
        "dof": int(dof),
        "p_value": float(stats.chi2.sf(wald, dof)),
        "variance_ratio": [float(v) for v in (u**2).mean(0)],
        "n_pairs": int(n),
        "degree": int(degree),
    }


def _mean_wald(phi: np.ndarray, u: np.ndarray) -> float:
    """Sum over components of beta' V^-1 beta, beta the regression of u_k on phi and V its
    heteroscedasticity-robust (HC0) covariance."""
    gram_inv = np.linalg.pinv(phi.T @ phi)
    total = 0.0
    for k in range(u.shape[1]):
        beta = gram_inv @ (phi.T @ u[:, k])
        meat = (phi * u[:, k : k + 1] ** 2).T @ phi
        v = gram_inv @ meat @ gram_inv
        total += float(beta @ np.linalg.lstsq(v, beta, rcond=None)[0])
    return total


def _variance_wald(u: np.ndarray) -> float:
    """Sum over components of t^2, t the robust t statistic of mean(u_k^2) - 1."""
    v = u**2 - 1.0
    sd = v.std(0, ddof=1)
    t = np.where(sd > 0, v.mean(0) / np.maximum(sd, 1e-300) * math.sqrt(v.shape[0]), 0.0)
    return float((t**2).sum())
