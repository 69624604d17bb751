"""Example 4.4: 3-D nonlinear SDE after Feng, Gao, Dai & Duan (Chaos 2023), paper eq. (21).

::

    dx1 = x2 dt + sigma1 dW1
    dx2 = (-x1 - x2 + y^2) dt + sigma2 dW2
    dy  = -(1/eps) (y - x1/4) dt + sigma3 sqrt(2/eps) dW3

sigma1 = sigma2 = 0.3, sigma3 = 0.1, eps = 0.001. Given x, y ~ N(x1/4, sigma3^2).

Effective equation (averaging E[y^2] = x1^2/16 + sigma3^2; the O(sqrt eps) fluctuation
corrections are negligible here): dx1 = x2 dt + sigma1 dW1,
dx2 = (-x1 - x2 + x1^2/16 + sigma3^2) dt + sigma2 dW2.
"""

from __future__ import annotations

import math

from .base import System


def drift(s1, s2, s3, eps):
    ie = 1.0 / eps

    def f(s):
        return (s[1], -s[0] - s[1] + s[2] * s[2], -ie * (s[2] - 0.25 * s[0]))

    return f


def diffusion(s1, s2, s3, eps):
    sy = s3 * math.sqrt(2.0 / eps)

    def g(s):
        return (s1, s2, sy)

    return g


def fast_sampler(x, rng, s1, s2, s3, eps):
    return 0.25 * x[:, :1] + s3 * rng.standard_normal((x.shape[0], 1))


def _avg_drift(s1, s2, c):
    def f(s):
        return (s[1], -s[0] - s[1] + s[0] * s[0] / 16.0 + c)

    return f


def _avg_diffusion(s1, s2, c):
    def g(s):
        return (s1, s2)

    return g


def _averaged(s1, s2, s3, eps):
    return System(
        name="nonlinear3d_averaged",
        slow_dim=2,
        fast_dim=0,
        drift=_avg_drift,
        diffusion=_avg_diffusion,
        noise=(True, True),
        params={"s1": s1, "s2": s2, "c": s3 * s3},
        train_box=((-1.5, 2.5), (-2.0, 1.5)),
        x0=(1.5, 1.0),
        t_end=8.0,
        description="averaged 3-D nonlinear SDE",
    )


SYSTEM = System(
    name="nonlinear3d",
    aliases=("ex4.4",),
    description="Damped oscillator forced by the square of a fast OU process",
    slow_dim=2,
    fast_dim=1,
    drift=drift,
    diffusion=diffusion,
    noise=(True, True, True),
    params={"s1": 0.3, "s2": 0.3, "s3": 0.1, "eps": 0.001},
    param_source="paper eq. (21), section 4.4",
    train_box=((-1.5, 2.5), (-2.0, 1.5), (-0.6, 1.0)),
    x0=(1.5, 1.0),
    t_end=8.0,
    plot_times=(2.0, 4.0, 6.0, 8.0),
    fast_sampler=fast_sampler,
    averaged=_averaged(0.3, 0.3, 0.1, 0.001),
    averaged_note="dx1 = x2 dt + 0.3 dW1, dx2 = (-x1 - x2 + x1^2/16 + 0.01) dt + 0.3 dW2 (derived)",
    pairs_per_traj=12,
    eps=0.001,
    extra={"rebuild_averaged": _averaged},
)
