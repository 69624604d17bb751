"""Example 4.5: multiscale stochastic oscillator (Chekroun et al. 2020), paper eq. (22).

::

    dx1 = (lam x1 - theta x2 - gamma x1 y) dt + sigma dW1
    dx2 = (theta x1 + lam x2 - gamma x2 y) dt + sigma dW2
    dy  = -(1/eps) (y - x1^2 - x2^2) dt + sigma sqrt(2/eps) dW3

lam = theta = gamma = 1, sigma = 0.1, eps = 0.001, with the paper's noise on x (the
authors' script has none). Given x, y ~ N(x1^2 + x2^2, sigma^2).

Effective equation: the Stuart-Landau (Hopf normal form) model
dx1 = ((lam - gamma r^2) x1 - theta x2) dt + sigma dW1,
dx2 = (theta x1 + (lam - gamma r^2) x2) dt + sigma dW2, r^2 = x1^2 + x2^2:
a noisy limit cycle of radius sqrt(lam/gamma) = 1 and angular frequency theta = 1.
"""

from __future__ import annotations

import math

from .base import System


def drift(lam, theta, gamma, sigma, eps):
    ie = 1.0 / eps

    def f(s):
        return (
            lam * s[0] - theta * s[1] - gamma * s[0] * s[2],
            theta * s[0] + lam * s[1] - gamma * s[1] * s[2],
            -ie * (s[2] - s[0] * s[0] - s[1] * s[1]),
        )

    return f


def diffusion(lam, theta, gamma, sigma, eps):
    sy = sigma * math.sqrt(2.0 / eps)

    def g(s):
        return (sigma, sigma, sy)

    return g


def fast_sampler(x, rng, lam, theta, gamma, sigma, eps):
    r2 = x[:, 0:1] ** 2 + x[:, 1:2] ** 2
    return r2 + sigma * rng.standard_normal((x.shape[0], 1))


def _avg_drift(lam, theta, gamma, sigma):
    def f(s):
        k = lam - gamma * (s[0] * s[0] + s[1] * s[1])
        return (k * s[0] - theta * s[1], theta * s[0] + k * s[1])

    return f


def _avg_diffusion(lam, theta, gamma, sigma):
    def g(s):
        return (sigma, sigma)

    return g


def _averaged(lam, theta, gamma, sigma, eps):
    return System(
        name="oscillator_averaged",
        slow_dim=2,
        fast_dim=0,
        drift=_avg_drift,
        diffusion=_avg_diffusion,
        noise=(True, True),
        params={"lam": lam, "theta": theta, "gamma": gamma, "sigma": sigma},
        train_box=((-1.5, 1.5), (-1.5, 1.5)),
        x0=(1.0, 1.0),
        t_end=20.0,
        description="Stuart-Landau oscillator",
    )


SYSTEM = System(
    name="oscillator",
    aliases=("ex4.5",),
    description="Stochastic Hopf oscillator whose amplitude is damped by a fast variable",
    slow_dim=2,
    fast_dim=1,
    drift=drift,
    diffusion=diffusion,
    noise=(True, True, True),
    params={"lam": 1.0, "theta": 1.0, "gamma": 1.0, "sigma": 0.1, "eps": 0.001},
    param_source="paper eq. (22), section 4.5 (noise on x as in the paper)",
    train_box=((-1.5, 1.5), (-1.5, 1.5), (0.1, 2.5)),
    x0=(1.0, 1.0),
    t_end=20.0,
    plot_times=(4.0, 8.0, 12.0, 16.0),
    fast_sampler=fast_sampler,
    averaged=_averaged(1.0, 1.0, 1.0, 0.1, 0.001),
    averaged_note="Stuart-Landau: dx = ((1 - r^2) x1 - x2, x1 + (1 - r^2) x2) dt + 0.1 dW",
    pairs_per_traj=12,
    eps=0.001,
    extra={"rebuild_averaged": _averaged},
)
