"""Example 4.1: skew-product SDE (Pavliotis & Stuart, Multiscale Methods, ch. 10).

Paper eq. (18)::

    dx = (1 - y^2) x dt
    dy = -(alpha / eps) y dt + sqrt(2 lambda / eps) dW

alpha = 1, lambda = 2.4, eps = 0.005. Given x, y is an OU process with stationary law
N(0, lambda / alpha), independent of x.

Effective equation. log x(t) - log x(0) = integral of (1 - y^2), exactly. Averaging gives
d log x = (1 - lambda/alpha) dt; the central-limit correction of the y^2 fluctuations adds
a noise of variance b^2 = 2 (lambda/alpha)^2 eps / alpha per unit time (= 0.0576, b = 0.24).
In Ito form the effective equation is the geometric Brownian motion
``dx = (1 - lambda/alpha + b^2/2) x dt + b x dW``. As eps -> 0, b -> 0 and the plain
average dx = -1.4 x dt remains.
"""

from __future__ import annotations

import math

from .base import System


def drift(alpha, lam, eps):
    def f(s):
        return ((1.0 - s[1] * s[1]) * s[0], -(alpha / eps) * s[1])

    return f


def diffusion(alpha, lam, eps):
    sy = math.sqrt(2.0 * lam / eps)

    def g(s):
        return (0.0, sy)

    return g


def fast_sampler(x, rng, alpha, lam, eps):
    return rng.normal(0.0, math.sqrt(lam / alpha), size=(x.shape[0], 1))


def _averaged(alpha, lam, eps):
    b = (lam / alpha) * math.sqrt(2.0 * eps / alpha)
    a = 1.0 - lam / alpha + 0.5 * b * b

    def avg_drift(a, b):
        def f(s):
            return (a * s[0],)

        return f

    def avg_diffusion(a, b):
        def g(s):
            return (b * s[0],)

        return g

    return System(
        name="skew_product_averaged",
        slow_dim=1,
        fast_dim=0,
        drift=avg_drift,
        diffusion=avg_diffusion,
        noise=(True,),
        params={"a": a, "b": b},
        train_box=((-1.5, 2.0),),
        x0=(1.5,),
        t_end=4.0,
        description="effective GBM of the skew product (averaging + CLT correction)",
    )


SYSTEM = System(
    name="skew_product",
    aliases=("ex4.1",),
    description="Skew-product SDE: x driven by the square of a fast OU process",
    slow_dim=1,
    fast_dim=1,
    drift=drift,
    diffusion=diffusion,
    noise=(False, True),
    params={"alpha": 1.0, "lam": 2.4, "eps": 0.005},
    param_source="paper eq. (18), section 4.1",
    train_box=((-1.5, 2.0), (-1.0, 1.6)),
    x0=(1.5,),
    t_end=4.0,
    plot_times=(1.0, 2.0, 3.0, 4.0),
    fast_sampler=fast_sampler,
    averaged=_averaged(1.0, 2.4, 0.005),
    averaged_note=(
        "dx = (1 - lam/alpha + b^2/2) x dt + b x dW, b = (lam/alpha) sqrt(2 eps/alpha): "
        "averaging plus the central-limit correction (derived; the paper gives none)"
    ),
    pairs_per_traj=4,
    eps=0.005,
    extra={"rebuild_averaged": _averaged},
)
