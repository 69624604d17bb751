"""Example 4.2: OU process with an exponential mean (paper eq. (19)).

::

    dx = (1 - x + y) dt
    dy = (1/eps) (exp(-x) - y) dt + sqrt(2/eps) dW

eps = 0.001. Given x, y is OU with stationary law N(exp(-x), 1). The test start is
x0 = 1.1 (the figures and the authors' data script; the captions' 1.5 is a copy error).

Effective equation: averaging gives dx = (1 - x + exp(-x)) dt, with the stable point
x* = 1 + W(1/e) = 1.2785. The central-limit correction of the y fluctuations (variance 1,
correlation time eps) adds sqrt(2 eps) dW.
"""

from __future__ import annotations

import math

import numpy as np

from .base import System


def drift(eps):
    def f(s):
        return (1.0 - s[0] + s[1], (np.exp(-s[0]) - s[1]) / eps)

    return f


def diffusion(eps):
    sy = math.sqrt(2.0 / eps)

    def g(s):
        return (0.0, sy)

    return g


def fast_sampler(x, rng, eps):
    return np.exp(-x[:, :1]) + rng.standard_normal((x.shape[0], 1))


def _avg_drift(b):
    def f(s):
        return (1.0 - s[0] + np.exp(-s[0]),)

    return f


def _avg_diffusion(b):
    def g(s):
        return (b,)

    return g


def _averaged(eps):
    return System(
        name="exp_ou_averaged",
        slow_dim=1,
        fast_dim=0,
        drift=_avg_drift,
        diffusion=_avg_diffusion,
        noise=(True,),
        params={"b": math.sqrt(2.0 * eps)},
        train_box=((-1.5, 2.0),),
        x0=(1.1,),
        t_end=4.0,
        description="averaged exp-mean OU with its central-limit noise",
    )


SYSTEM = System(
    name="exp_ou",
    aliases=("ex4.2",),
    description="Slow OU-like variable forced by a fast OU process with mean exp(-x)",
    slow_dim=1,
    fast_dim=1,
    drift=drift,
    diffusion=diffusion,
    noise=(False, True),
    params={"eps": 0.001},
    param_source="paper eq. (19), section 4.2",
    train_box=((-1.5, 2.0), (-4.0, 4.0)),
    x0=(1.1,),
    t_end=4.0,
    plot_times=(1.0, 2.0, 3.0, 4.0),
    fast_sampler=fast_sampler,
    averaged=_averaged(0.001),
    averaged_note="dx = (1 - x + exp(-x)) dt + sqrt(2 eps) dW (averaging + CLT correction, derived)",
    pairs_per_traj=4,
    eps=0.001,
    extra={"rebuild_averaged": _averaged},
)
