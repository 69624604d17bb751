"""A Markov state model of the dihedrals (phi, psi), the field's standard tool, with deeptime.

States are the cells of a regular grid on the torus [-pi, pi)^2 (``n_bins`` per angle;
a regular-space discretization that needs no clustering and that every source can be
histogrammed on). From the same bursts the learned map is trained on, transition counts at
the lag tau ("sliding" windows, never across bursts) give a reversible maximum-likelihood
MSM on the largest connected set (deeptime's ``MaximumLikelihoodMSM``). Its stationary
distribution, implied timescales, the Chapman-Kolmogorov test and the propagation of a
start's distribution over multiples of tau are what is compared with MD.

Basins (used for populations): alpha_L is phi > 0 (with C7ax), alpha_R is phi < 0 and
-2.2 < psi < 0.9 rad (-125 to 50 degrees), beta/C7eq is the rest of phi < 0.
"""

from __future__ import annotations

import math

import numpy as np

from . import require

BASINS = ("beta", "alpha_R", "alpha_L")


def basin_of(x: np.ndarray) -> np.ndarray:
    """Basin index (0 beta, 1 alpha_R, 2 alpha_L) of points (..., 2) (phi, psi) in radians."""
    phi, psi = x[..., 0], x[..., 1]
    alpha_r = (phi < 0) & (psi > -2.2) & (psi < 0.9)
    return np.where(phi >= 0, 2, np.where(alpha_r, 1, 0))


def basin_fractions(x: np.ndarray) -> dict:
    b = basin_of(np.asarray(x).reshape(-1, 2))
    return {name: float(np.mean(b == i)) for i, name in enumerate(BASINS)}


def states(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Grid-cell index (...,) of points (..., 2) on [-pi, pi)^2."""
    cell = np.floor((np.asarray(x) + math.pi) / (2 * math.pi) * n_bins).astype(int) % n_bins
    return cell[..., 0] * n_bins + cell[..., 1]


def histogram(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Fractions (n_bins^2,) of points (..., 2) in the grid cells."""
    s = states(np.asarray(x).reshape(-1, 2), n_bins)
    return np.bincount(s, minlength=n_bins * n_bins) / max(1, s.size)


def fit_msm(bursts: list, lag: int, n_bins: int):
    """Reversible MSM at lag ``lag`` (observations) from trajectories [(L_i, 2)]."""
    markov = require("deeptime.markov")
    msm_mod = require("deeptime.markov.msm")
    dtrajs = [states(b, n_bins).astype(np.int32) for b in bursts if len(b) > lag]
    counts = markov.TransitionCountEstimator(lagtime=lag, count_mode="sliding").fit(dtrajs)
    counts = counts.fetch_model().submodel_largest()
    return msm_mod.MaximumLikelihoodMSM(reversible=True).fit(counts).fetch_model()


def stationary(msm, n_bins: int) -> np.ndarray:
    """The MSM's stationary distribution over all grid cells (zero off its connected set)."""
    p = np.zeros(n_bins * n_bins)
    p[msm.count_model.state_symbols] = msm.stationary_distribution
    return p


def implied_timescales(bursts: list, lags: list[int], n_bins: int, k: int = 3) -> dict:
    """The ``k`` slowest implied timescales (in observations) at each lag."""
    out = {}
    for lag in lags:
        msm = fit_msm(bursts, lag, n_bins)
        ts = msm.timescales(k=min(k, msm.n_states - 1))
        out[int(lag)] = [float(t) for t in ts]
    return out


def ck_test(bursts: list, lag: int, n_bins: int, multiples=(1, 2, 3, 4), n_sets: int = 3):
    """Chapman-Kolmogorov test: for each metastable set (PCCA+ of the MSM at ``lag``), the
    probability to be in it after k lags starting in it, predicted (T(tau)^k) and
    estimated (an MSM at lag k tau). Returns {"multiples", "predicted", "estimated"}."""
    base = fit_msm(bursts, lag, n_bins)
    pcca = base.pcca(n_sets)
    sets = [np.flatnonzero(pcca.assignments == i) for i in range(n_sets)]
    pred, est = [], []
    for m in multiples:
        tk = np.linalg.matrix_power(base.transition_matrix, m)
        other = fit_msm(bursts, lag * m, n_bins)
        sym = list(base.count_model.state_symbols)
        osym = {s: i for i, s in enumerate(other.count_model.state_symbols)}
        row_p, row_e = [], []
        for st in sets:
            pi = base.stationary_distribution[st] / base.stationary_distribution[st].sum()
            row_p.append(float(pi @ tk[np.ix_(st, st)].sum(1)))
            cells = [sym[i] for i in st]
            keep = [c for c in cells if c in osym]
            if not keep:
                row_e.append(float("nan"))
                continue
            oi = [osym[c] for c in keep]
            w = other.stationary_distribution[oi] / other.stationary_distribution[oi].sum()
            row_e.append(float(w @ other.transition_matrix[np.ix_(oi, oi)].sum(1)))
        pred.append(row_p)
        est.append(row_e)
    return {"multiples": list(multiples), "predicted": pred, "estimated": est}


def propagate(msm, start: np.ndarray, n_lags: int, n_bins: int) -> np.ndarray:
    """Distributions over all grid cells (n_lags + 1, n_bins^2) after 0..n_lags lags from
    the cell of ``start`` (phi, psi)."""
    sym = list(msm.count_model.state_symbols)
    cell = int(states(np.asarray(start)[None], n_bins)[0])
    if cell not in sym:  # the start's cell is off the connected set: its nearest member
        cell = min(
            sym,
            key=lambda c: (c // n_bins - cell // n_bins) ** 2 + (c % n_bins - cell % n_bins) ** 2,
        )
    p = np.zeros(len(sym))
    p[sym.index(cell)] = 1.0
    out = np.zeros((n_lags + 1, n_bins * n_bins))
    for k in range(n_lags + 1):
        out[k, sym] = p
        p = p @ msm.transition_matrix
    return out


def sample_cells(
    probs: np.ndarray, members: np.ndarray, member_cells: np.ndarray, n: int, seed: int
):
    """``n`` points drawn from a distribution over cells, each cell represented by the
    observed points in it (``members`` (m, 2) with their cells): the MSM's law of (phi, psi)
    at one time."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(probs.size, size=n, p=probs / probs.sum())
    order = np.argsort(member_cells, kind="stable")
    sorted_cells = member_cells[order]
    lo = np.searchsorted(sorted_cells, cells, "left")
    hi = np.searchsorted(sorted_cells, cells, "right")
    pick = lo + (rng.random(n) * np.maximum(hi - lo, 1)).astype(int)
    pick = np.minimum(pick, len(order) - 1)
    return members[order[pick]]
