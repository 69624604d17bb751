"""Ornstein-Uhlenbeck process (single scale), from the predecessor sFML papers.

``dx = theta (mu - x) dt + sigma dW`` with theta = 1, mu = 1.2, sigma = 0.3 (Chen & Xiu,
JCP 2024, example 1; training starts uniform in (0, 2.5), test start 1.5 to T = 4).

Its transition law over a step h is exactly Gaussian:
mean mu + (x - mu) exp(-theta h), variance sigma^2 (1 - exp(-2 theta h)) / (2 theta).
"""

from __future__ import annotations

import numpy as np

from .base import System


def drift(theta, mu, sigma):
    def f(s):
        return (theta * (mu - s[0]),)

    return f


def diffusion(theta, mu, sigma):
    def g(s):
        return (sigma,)

    return g


def exact_transition(x, h, theta, mu, sigma):
    """Exact one-step law: mean (n, 1) and covariance (n, 1, 1) after time h."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    mean = mu + (x - mu) * np.exp(-theta * h)
    var = sigma**2 * (1.0 - np.exp(-2.0 * theta * h)) / (2.0 * theta)
    return mean, np.full((x.shape[0], 1, 1), var)


SYSTEM = System(
    name="ou",
    aliases=("ornstein_uhlenbeck",),
    description="Ornstein-Uhlenbeck process (exact Gaussian transition law)",
    slow_dim=1,
    fast_dim=0,
    drift=drift,
    diffusion=diffusion,
    noise=(True,),
    params={"theta": 1.0, "mu": 1.2, "sigma": 0.3},
    param_source="Chen & Xiu, JCP 508 (2024) 112984, example 1",
    train_box=((0.0, 2.5),),
    x0=(1.5,),
    t_end=4.0,
    plot_times=(1.0, 2.0, 3.0, 4.0),
    exact_transition=exact_transition,
)
