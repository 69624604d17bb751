"""The law of the innovation: N(0, I), or the training innovations' own law near x_n.

The Gaussian maps write the next observation as x_{n+1} = loc + L u, where loc and L come
from the drift and the covariance (and, with memory, the residual autoregression) and u is
the standardized innovation, N(0, I) by default. When the fast variables make the steps
skewed or heavy-tailed, the step's mean and variance are right but its shape is not, and
the shape accumulates over a rollout. On ex4.1 at Delta = 0.01 the innovations have skewness
-2.2 for x > 0, +2.2 for x < 0 and kurtosis 11.

:class:`EmpiricalInnovation` replaces N(0, I) by the law of the training innovations near
x_n, and it cannot move the step's mean or covariance:

* k-means cuts the map's standardized coordinates of x_n into M cells;
* each cell's innovations (at most ``BANK_PER_CELL``) are centred and whitened by their own
  mean and covariance, so every cell's law has mean 0 and covariance I exactly, and the
  drift and the covariance stay the least-squares ones;
* a draw is a random innovation of x_n's cell plus a Gaussian kernel of bandwidth h (a
  smoothed bootstrap, shrunk by sqrt(1 + h^2) to keep the covariance I), and with
  probability ``DEFENSIVE`` a draw of N(0, I) instead. That share bounds the density
  from below by 2 % of the Gaussian's, so a held-out innovation beyond the stored ones
  (a tail the bank did not sample) costs at most log 50 nats, not (u / h)^2 / 2; both parts
  have mean 0 and covariance I, so the mixture has them too;
* its density is that mixture, so the one-step likelihood stays defined.

:func:`choose_law` picks M on the validation bursts' innovations. It tries M in ``CELLS``
(cells of at least ``MIN_CELL`` innovations) and measures each one's held-out log-likelihood
gain per pair over N(0, I). N(0, I) is kept unless one cell gains more than ``Z_ACCEPT``
standard errors and ``MIN_GAIN`` nats; more cells are kept while each beats the best so far
by ``Z_ACCEPT`` standard errors of the paired difference. The one-step likelihood is the right judge here,
unlike for the drift: an error in the one-step law's shape is a first-order effect on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

#: Numbers of cells tried.
CELLS = (1, 4, 16, 64)
#: Fewest training innovations a cell may hold (smaller k-means cells are merged away).
MIN_CELL = 400
#: Innovations kept per cell (the model file holds M x BANK_PER_CELL x d numbers).
BANK_PER_CELL = 2000
#: Held-out gain over N(0, I), in standard errors and in nats per pair, needed to switch.
#: Below 0.01 nats the shape is not worth a law of a few thousand stored draws: on ex4.3
#: gains of 0.004-0.006 nats (4-6 standard errors) came with rollouts no better than
#: N(0, I)'s (W1/floor 1.27 against 1.11, mean of 3 rollout seeds of one fitted model),
#: while on ex4.1 the gain is 0.3 nats and W1/floor falls from 3.8 to 1.6.
Z_ACCEPT = 3.0
MIN_GAIN = 0.01
#: Share of N(0, I) in the law (a defensive mixture: bounded tails, mean and covariance kept).
DEFENSIVE = 0.02


@dataclass(frozen=True)
class InnovationLaw:
    """Cells (their centres in the map's standardized coordinates) and, per cell, the
    standardized innovations (padded to a common length) and the kernel bandwidth."""

    centers: np.ndarray  # (M, p)
    bank: np.ndarray  # (M, B, d), rows count[j]: of cell j
    count: np.ndarray  # (M,)
    bandwidth: np.ndarray  # (M,)

    @property
    def n_cells(self) -> int:
        return int(self.centers.shape[0])

    def summary(self) -> dict:
        return {
            "cells": self.n_cells,
            "innovations_per_cell": [int(c) for c in self.count],
            "bandwidth": [float(h) for h in self.bandwidth],
            "gaussian_share": DEFENSIVE,
        }


def nearest(c, centers):
    """Index of the nearest centre (M, p) of each point c (..., p); numpy or torch."""
    if isinstance(c, Tensor):
        flat = c.reshape(-1, c.shape[-1])
        return torch.cdist(flat, centers).argmin(-1).reshape(c.shape[:-1])
    out = np.empty(c.shape[0], dtype=np.int64)
    for i in range(0, c.shape[0], 65536):
        sq = ((c[i : i + 65536, None, :] - centers[None]) ** 2).sum(-1)
        out[i : i + 65536] = sq.argmin(-1)
    return out


def _cells(c: np.ndarray, m: int, seed: int) -> np.ndarray:
    """k-means centres of the coordinates c (N, p); the smallest cell is dropped until
    every cell holds ``MIN_CELL`` points."""
    from scipy.cluster.vq import kmeans2

    rng = np.random.default_rng([seed, 23])
    if m == 1:
        return c.mean(0, keepdims=True)
    sample = c[rng.choice(c.shape[0], min(c.shape[0], 200 * m), replace=False)]
    centers, _ = kmeans2(sample, m, minit="++", seed=rng)
    while centers.shape[0] > 1:
        count = np.bincount(nearest(c, centers), minlength=centers.shape[0])
        if count.min() >= MIN_CELL:
            break
        centers = np.delete(centers, count.argmin(), axis=0)
    return centers


def _standardized(u: np.ndarray) -> np.ndarray:
    """u (n, d) centred and whitened by its own mean and covariance."""
    r = u - u.mean(0)
    cov = r.T @ r / r.shape[0]
    chol = np.linalg.cholesky(cov + 1e-9 * np.trace(cov) / cov.shape[0] * np.eye(cov.shape[0]))
    return np.linalg.solve(chol, r.T).T


def _bandwidth(w: np.ndarray) -> float:
    """Silverman's rule for a whitened sample (n, d): robust to heavy tails (the IQR)."""
    n, d = w.shape
    iqr = np.subtract(*np.percentile(w, [75, 25], axis=0)) / 1.349
    spread = float(np.clip(iqr, 1e-3, 1.0).mean())
    return spread * (4.0 / (d + 2)) ** (1.0 / (d + 4)) * n ** (-1.0 / (d + 4))


def fit_law(c: np.ndarray, u: np.ndarray, m: int, seed: int) -> InnovationLaw:
    """The law of innovations u (N, d) in (at most) m cells of their coordinates c (N, p)."""
    centers = _cells(c, m, seed)
    cell = nearest(c, centers)
    rng = np.random.default_rng([seed, 29])
    d, k = u.shape[1], centers.shape[0]
    counts = np.bincount(cell, minlength=k)
    b = int(min(BANK_PER_CELL, counts.max()))
    bank, count, bw = np.zeros((k, b, d)), np.zeros(k, dtype=np.int64), np.zeros(k)
    for j in range(k):
        rows = np.flatnonzero(cell == j)
        rows = rng.choice(rows, min(b, rows.size), replace=False)
        w = _standardized(u[rows])
        bank[j, : w.shape[0]], count[j], bw[j] = w, w.shape[0], _bandwidth(w)
    return InnovationLaw(centers, bank, count, bw)


def _log_density(bank: Tensor, count: Tensor, bw: Tensor, cell: Tensor, u: Tensor) -> Tensor:
    """log-density of the law of ``cell`` at u (n, d), per point: the kernel mixture of the
    cell's innovations, with the share ``DEFENSIVE`` of N(0, I)."""
    d = u.shape[-1]
    out = torch.empty(u.shape[0], dtype=u.dtype, device=u.device)
    for j in torch.unique(cell).tolist():
        rows = torch.nonzero(cell == j).squeeze(-1)
        n = int(count[j])
        shrink = torch.sqrt(1.0 + bw[j] ** 2)
        pts, h = bank[j, :n] / shrink, bw[j] / shrink
        const = math.log(n) + 0.5 * d * torch.log(2 * math.pi * h**2)
        for i in range(0, rows.numel(), 4096):
            r = rows[i : i + 4096]
            sq = torch.cdist(u[r], pts) ** 2
            out[r] = torch.logsumexp(-0.5 * sq / h**2, -1) - const
    gauss = -0.5 * (u**2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
    return torch.logaddexp(out + math.log1p(-DEFENSIVE), gauss + math.log(DEFENSIVE))


class EmpiricalInnovation(Distribution):
    """The innovation's law given the standardized coordinates c (..., p) of x_n: batch
    shape ``c.shape[:-1]``, event shape (d,). :meth:`draw` maps standard normals z and
    uniforms v to draws, so that rollouts can pass their own random numbers."""

    arg_constraints: dict = {}
    support = constraints.real_vector
    has_rsample = False
    #: rollouts draw a uniform per row besides the normals (see slowflow.model.score)
    needs_uniform = True

    def __init__(self, centers: Tensor, bank: Tensor, count: Tensor, bw: Tensor, c: Tensor):
        self.bank, self.count, self.bw = bank, count, bw
        self.cell = nearest(c, centers)
        super().__init__(c.shape[:-1], bank.shape[-1:], validate_args=False)

    @property
    def mean(self) -> Tensor:
        return self.bank.new_zeros(self.batch_shape + self.event_shape)

    @property
    def stddev(self) -> Tensor:
        return self.bank.new_ones(self.batch_shape + self.event_shape)

    def draw(self, z: Tensor, v: Tensor) -> Tensor:
        """Draws from normals z (batch, d) and uniforms v (batch,) in [0, 1): v below
        ``DEFENSIVE`` draws N(0, I) (z itself), above it picks the stored innovation."""
        n = self.count[self.cell]
        pick = (v - DEFENSIVE).clamp_min(0.0) / (1.0 - DEFENSIVE)
        idx = torch.minimum((pick * n).long(), n - 1)
        h = self.bw[self.cell].unsqueeze(-1).to(z.dtype)
        boot = (self.bank[self.cell, idx].to(z.dtype) + h * z) / torch.sqrt(1.0 + h**2)
        return torch.where((v < DEFENSIVE).unsqueeze(-1), z, boot)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        z = torch.randn(shape + self.event_shape, device=self.bank.device)
        v = torch.rand(shape, device=self.bank.device)
        return self.draw(z, v)

    def log_prob(self, value: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        u = value.expand(*shape, value.shape[-1]).reshape(-1, value.shape[-1])
        cell = self.cell.expand(shape).reshape(-1)
        bank = self.bank.to(u.dtype)
        return _log_density(bank, self.count, self.bw.to(u.dtype), cell, u).reshape(shape)


def _gain(law: InnovationLaw, c: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per point: log-density of u under ``law`` minus that under N(0, I)."""
    t = {k: torch.as_tensor(v) for k, v in vars(law).items()}
    ut = torch.as_tensor(u, dtype=torch.float64)
    cell = nearest(torch.as_tensor(c, dtype=torch.float64), t["centers"].double())
    emp = _log_density(t["bank"].double(), t["count"], t["bandwidth"].double(), cell, ut)
    gauss = -0.5 * (ut**2).sum(-1) - 0.5 * u.shape[1] * math.log(2 * math.pi)
    return (emp - gauss).numpy()


def choose_law(c_train, u_train, c_val, u_val, seed: int, force: bool = False):
    """(law or None for N(0, I), record): the number of cells by held-out gain (module
    docstring; ``force``: the best number of cells even where N(0, I) does better).
    c: standardized coordinates (N, p), u: innovations (N, d)."""
    record, best, best_g = [], None, None
    for m in CELLS:
        if u_train.shape[0] < m * MIN_CELL and m > 1:
            break
        law = fit_law(c_train, u_train, m, seed)
        g = _gain(law, c_val, u_val)
        mean, se = float(g.mean()), float(g.std(ddof=1) / math.sqrt(g.size))
        if best_g is None:  # against N(0, I)
            ok = force or (mean > MIN_GAIN and mean > Z_ACCEPT * se)
        else:  # more cells: against the best so far, paired point by point
            diff = g - best_g
            ok = diff.mean() > Z_ACCEPT * diff.std(ddof=1) / math.sqrt(diff.size)
        record.append({"cells": law.n_cells, "gain": mean, "se": se, "better": bool(ok)})
        if ok:
            best, best_g = law, g
    return best, {
        "candidates": record,
        "chosen": "gaussian" if best is None else f"empirical, {best.n_cells} cells",
        "n_train": int(u_train.shape[0]),
        "n_val": int(u_val.shape[0]),
    }
