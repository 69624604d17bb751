"""Double-well SDE (single scale), from the predecessor sFML papers.

``dx = (x - x^3) dt + sigma dW`` with sigma = 0.5 (Chen & Xiu, JCP 2024, example 5;
training starts uniform in (-2.5, 2.5), test start 1.5). Paths switch between the wells at
+-1 on a time scale of tens of time units; the papers show densities at T = 0.5, 10, 30, 100.
"""

from __future__ import annotations

from .base import System


def drift(sigma):
    def f(s):
        return (s[0] - s[0] * s[0] * s[0],)

    return f


def diffusion(sigma):
    def g(s):
        return (sigma,)

    return g


SYSTEM = System(
    name="double_well",
    aliases=("doublewell",),
    description="Double-well potential with additive noise (rare switching)",
    slow_dim=1,
    fast_dim=0,
    drift=drift,
    diffusion=diffusion,
    noise=(True,),
    params={"sigma": 0.5},
    param_source="Chen & Xiu, JCP 508 (2024) 112984, example 5",
    train_box=((-2.5, 2.5),),
    x0=(1.5,),
    t_end=30.0,
    plot_times=(0.5, 10.0, 30.0),
)
