"""Example 4.3: the triad model of mean-flow/wave interaction (paper eq. (20)).

::

    dx  = -(2/eps) y1 y2 dt
    dy1 = (-(1/eps^2) y1 + (1/eps) x y2) dt + (sigma/eps) dW1
    dy2 = (-(2/eps^2) y2 + (1/eps) x y1) dt + (sigma/eps) dW2

sigma = 1 and eps^2 = 0.001 (the paper; the authors' script uses eps^2 = 0.1).

Effective equation (E, Liu & Vanden-Eijnden 2005, cited by the paper): for sigma = 1,
dx = -x/2 dt + (1/sqrt(3)) dW. For other sigma the coefficients scale as -sigma^2 x / 2
and sigma^2 / sqrt(3) (the fast fluctuations scale with sigma; derived, not in the paper).

Given x, (y1, y2) is a linear (OU) system; its stationary law is Gaussian with zero mean
and the covariance that solves the 2x2 Lyapunov equation A S + S A^T + Q = 0.
"""

from __future__ import annotations

import math

import numpy as np

from .base import System


def drift(eps, sigma):
    a = 2.0 / eps
    ie = 1.0 / eps
    ie2 = 1.0 / (eps * eps)

    def f(s):
        return (
            -a * s[1] * s[2],
            -ie2 * s[1] + ie * s[0] * s[2],
            -2.0 * ie2 * s[2] + ie * s[0] * s[1],
        )

    return f


def diffusion(eps, sigma):
    sy = sigma / eps

    def g(s):
        return (0.0, sy, sy)

    return g


def stationary_cov(x, eps, sigma):
    """Covariance (n, 2, 2) of (y1, y2) with x frozen, from the Lyapunov equation."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    p, q, r, s = -1.0 / eps**2, x / eps, x / eps, -2.0 / eps**2
    n = x.shape[0]
    m = np.zeros((n, 3, 3))
    m[:, 0, 0], m[:, 0, 1] = 2 * p, 2 * q
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = r, p + s, q
    m[:, 2, 1], m[:, 2, 2] = 2 * r, 2 * s
    qn = (sigma / eps) ** 2
    rhs = np.broadcast_to(np.array([-qn, 0.0, -qn]), (n, 3))
    a, b, c = np.linalg.solve(m, rhs[..., None])[..., 0].T
    return np.stack([np.stack([a, b], -1), np.stack([b, c], -1)], -2)


def fast_sampler(x, rng, eps, sigma):
    cov = stationary_cov(x[:, 0], eps, sigma)
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((x.shape[0], 2, 1))
    return (chol @ z)[..., 0]


def _avg_drift(a, b):
    def f(s):
        return (-a * s[0],)

    return f


def _avg_diffusion(a, b):
    def g(s):
        return (b,)

    return g


def _averaged(eps, sigma):
    return System(
        name="triad_averaged",
        slow_dim=1,
        fast_dim=0,
        drift=_avg_drift,
        diffusion=_avg_diffusion,
        noise=(True,),
        params={"a": 0.5 * sigma**2, "b": sigma**2 / math.sqrt(3.0)},
        train_box=((-2.0, 3.0),),
        x0=(1.0,),
        t_end=5.0,
        description="homogenised OU limit of the triad",
    )


SYSTEM = System(
    name="triad",
    aliases=("ex4.3",),
    description="Triad model: a slow mean flow coupled to two fast waves",
    slow_dim=1,
    fast_dim=2,
    drift=drift,
    diffusion=diffusion,
    noise=(False, True, True),
    params={"eps": math.sqrt(0.001), "sigma": 1.0},
    param_source="paper eq. (20), section 4.3 (eps^2 = 0.001)",
    train_box=((-2.0, 3.0), (-1.0, 1.0), (-1.0, 1.0)),
    x0=(1.0,),
    t_end=5.0,
    plot_times=(1.0, 3.0, 5.0),
    fast_sampler=fast_sampler,
    averaged=_averaged(math.sqrt(0.001), 1.0),
    averaged_note="dx = -x/2 dt + (1/sqrt 3) dW (E, Liu & Vanden-Eijnden 2005)",
    pairs_per_traj=6,
    eps=math.sqrt(0.001),
    extra={"rebuild_averaged": _averaged},
)
