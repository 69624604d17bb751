"""A ring of coupled double wells damped by fast OU variables: a benchmark of any size.

``ell`` slow variables x_1..x_ell on a ring (indices mod ell) and ``n_fast`` fast variables,
split into contiguous blocks B_i of m_i = n_fast // ell or n_fast // ell + 1 variables, one
block per slow variable (the first ``n_fast % ell`` blocks get the extra one)::

    dx_i    = (alpha x_i - x_i ybar_i + c (x_{i-1} - 2 x_i + x_{i+1})) dt + sigma dW_i
    dy_ij   = -(1/eps) (y_ij - x_i^2) dt + sigma_y sqrt(2/eps) dV_ij,     j in B_i
    ybar_i  = (1/m_i) sum_{j in B_i} y_ij

alpha = 1, c = 0.5, sigma = 0.5, sigma_y = 0.5, eps = 0.001 (chosen here; not from the paper).
For ell = 1 the coupling term vanishes; for ell = 2 it reads 2 c (x_other - x_i). As in
example 4.5's oscillator, each slow variable is damped by fast variables that relax to its
square. The state is ordered (x_1..x_ell, y of block 1, y of block 2, ...). The simulator's
default step dt = 1e-4 resolves the fast relaxation (dt / eps = 0.1).

Fast law given x (exact): with x frozen, the y_ij are independent OU processes with mean
x_i^2, rate 1/eps and stationary variance (sigma_y sqrt(2/eps))^2 / (2/eps) = sigma_y^2, so
y_ij ~ N(x_i^2, sigma_y^2) independently; ``fast_sampler`` draws from this law.

Averaged equation (first-order averaging: Khasminskii 1968; Pavliotis & Stuart, *Multiscale
Methods*, 2008, ch. 10): for dx = f(x, y) dt + sigma dW with y fast and ergodic for frozen x,
the slow variables converge in law on bounded time intervals, as eps -> 0, to
dX = F(X) dt + sigma dW with F(x) = E[f(x, y)] under the fast law above. Here f_i is affine
in y, so F_i uses E[ybar_i | x] = x_i^2::

    dX_i = (alpha X_i - X_i^3 + c (X_{i-1} - 2 X_i + X_{i+1})) dt + sigma dW_i

a lattice of ell coupled double wells (wells at +-sqrt(alpha) when c = 0), i.e. a spatial
discretisation of a stochastic Allen-Cahn equation on a circle. Corrections at finite eps
are O(eps): the fluctuation ybar_i - x_i^2 is an OU process of variance sigma_y^2 / m_i and
correlation time eps, so x_i ybar_i adds a diffusion of variance rate
2 eps sigma_y^2 x_i^2 / m_i (central-limit correction; 5e-4 x_i^2 / m_i against
sigma^2 = 0.25 with the defaults), and the lag of y behind x_i^2 changes the drift by
O(eps). With eps = 0.001 these are below the Monte-Carlo noise of 10^4 paths.

``SYSTEM`` (registered as ``ring``) has ell = 4 and n_fast = 40 (d = 44); :func:`make_ring`
builds any size. Since drift and diffusion must return a tuple of d components written out
(numba compiles them into the simulator's kernel), the factories for a size are generated
as source text and compiled once per size.
"""

from __future__ import annotations

import linecache
import math
from functools import cache, partial

import numpy as np

from .base import System

DEFAULT_ELL = 4
DEFAULT_N_FAST = 40
DEFAULT_PARAMS = {"alpha": 1.0, "c": 0.5, "sigma": 0.5, "sigma_y": 0.5, "eps": 0.001}
_AVG_KEYS = ("alpha", "c", "sigma")


def block_sizes(ell: int, n_fast: int) -> tuple[int, ...]:
    """Number of fast variables m_i attached to each slow variable (contiguous blocks)."""
    return tuple(n_fast // ell + (1 if i < n_fast % ell else 0) for i in range(ell))


def fast_owner(ell: int, n_fast: int) -> np.ndarray:
    """For each fast variable, the index of the slow variable it belongs to, shape (n_fast,)."""
    return np.repeat(np.arange(ell), block_sizes(ell, n_fast))


def _slow_term(i: int, ell: int) -> str:
    """Drift of x_i without the fast term (source text)."""
    term = f"alpha * x{i}"
    if ell > 1:
        im, ip = (i - 1) % ell, (i + 1) % ell
        term += f" + c * (x{im} - 2.0 * x{i} + x{ip})"
    return term


def _compile(name: str, lines: list[str]):
    """Compile generated factory source; registered in linecache so tracebacks show it."""
    src = "\n".join(lines) + "\n"
    filename = f"<slowflow.systems.ring:{name}>"
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    namespace: dict = {"math": math}
    exec(compile(src, filename, "exec"), namespace)
    return namespace[name]


@cache
def _factories(ell: int, n_fast: int):
    """Drift and diffusion factories for one size.

    Cached, so every system of one size shares its factory objects and the simulator's
    compiled kernel (keyed by the factories' identity) is reused.
    """
    sizes = block_sizes(ell, n_fast)
    read = [f"        x{i} = s[{i}]" for i in range(ell)]
    start = ell
    means, slow, fast = [], [], []
    for i, m in enumerate(sizes):
        terms = " + ".join(f"s[{k}]" for k in range(start, start + m))
        means.append(f"        yb{i} = ({terms}) * {1.0 / m!r}")
        slow.append(f"{_slow_term(i, ell)} - x{i} * yb{i}")
        fast += [f"-ie * (s[{k}] - x{i} * x{i})" for k in range(start, start + m)]
        start += m
    body = ",\n            ".join(slow + fast)
    drift = _compile(
        "drift",
        [
            "def drift(alpha, c, sigma, sigma_y, eps):",
            "    ie = 1.0 / eps",
            "    def f(s):",
            *read,
            *means,
            f"        return (\n            {body},\n        )",
            "    return f",
        ],
    )
    noise = ", ".join(["sigma"] * ell + ["sy"] * n_fast)
    diffusion = _compile(
        "diffusion",
        [
            "def diffusion(alpha, c, sigma, sigma_y, eps):",
            "    sy = sigma_y * math.sqrt(2.0 / eps)",
            "    def g(s):",
            f"        return ({noise},)",
            "    return g",
        ],
    )
    return drift, diffusion


@cache
def _averaged_factories(ell: int):
    """Drift and diffusion factories of the averaged equation with ``ell`` variables."""
    read = [f"        x{i} = s[{i}]" for i in range(ell)]
    avg_body = ",\n            ".join(
        f"{_slow_term(i, ell)} - x{i} * x{i} * x{i}" for i in range(ell)
    )
    avg_drift = _compile(
        "avg_drift",
        [
            "def avg_drift(alpha, c, sigma):",
            "    def f(s):",
            *read,
            f"        return (\n            {avg_body},\n        )",
            "    return f",
        ],
    )
    avg_noise = ", ".join(["sigma"] * ell)
    avg_diffusion = _compile(
        "avg_diffusion",
        [
            "def avg_diffusion(alpha, c, sigma):",
            "    def g(s):",
            f"        return ({avg_noise},)",
            "    return g",
        ],
    )
    return avg_drift, avg_diffusion


def _fast_sampler(x, rng, *, owner, alpha, c, sigma, sigma_y, eps):
    """y_ij ~ N(x_i^2, sigma_y^2) independently: the exact law of the fast OU variables
    with x frozen. x: (n, ell) -> (n, n_fast)."""
    mean = x[:, owner] ** 2
    return mean + sigma_y * rng.standard_normal(mean.shape)


def _name(ell: int, n_fast: int) -> str:
    if (ell, n_fast) == (DEFAULT_ELL, DEFAULT_N_FAST):
        return "ring"
    return f"ring_l{ell}_n{n_fast}"


def _start(ell: int) -> tuple[float, ...]:
    """Test start x0_i = 0.5 + cos(2 pi i / ell): a pattern the coupling has to smooth out,
    with components at or below the barrier x = 0 for ell >= 3 (ell = 1: x0 = 1.5)."""
    return tuple(round(0.5 + math.cos(2.0 * math.pi * i / ell), 12) for i in range(ell))


def _averaged(ell: int, name: str, **params) -> System:
    avg_drift, avg_diffusion = _averaged_factories(ell)
    return System(
        name=f"{name}_averaged",
        description=f"ring of {ell} coupled double wells (averaged equation)",
        slow_dim=ell,
        fast_dim=0,
        drift=avg_drift,
        diffusion=avg_diffusion,
        noise=(True,) * ell,
        params={k: params[k] for k in _AVG_KEYS},
        train_box=((-2.0, 2.0),) * ell,
        x0=_start(ell),
        t_end=5.0,
        plot_times=(1.0, 2.5, 5.0),
    )


def make_ring(ell: int = DEFAULT_ELL, n_fast: int = DEFAULT_N_FAST, **params: float) -> System:
    """The ring system with ``ell`` slow and ``n_fast`` fast variables (n_fast >= ell).

    Parameters
    ----------
    ell, n_fast : int
        Sizes; d = ell + n_fast. Tested up to ell = 10, n_fast = 100.
    **params :
        Overrides of ``alpha``, ``c``, ``sigma``, ``sigma_y``, ``eps`` (see the module
        docstring).

    Returns
    -------
    System named ``ring`` for the default size (4, 40), else ``ring_l{ell}_n{n_fast}``,
    with its averaged equation. ``extra`` holds ``ell``, ``n_fast`` and ``blocks`` (m_i).
    """
    if int(ell) != ell or ell < 1:
        raise ValueError(f"ell must be an integer >= 1, got {ell!r}")
    if int(n_fast) != n_fast or n_fast < ell:
        raise ValueError(f"n_fast must be an integer >= ell = {ell}, got {n_fast!r}")
    ell, n_fast = int(ell), int(n_fast)
    unknown = set(params) - set(DEFAULT_PARAMS)
    if unknown:
        raise KeyError(f"ring has no parameter(s) {sorted(unknown)}")
    values = {**DEFAULT_PARAMS, **{k: float(v) for k, v in params.items()}}
    drift, diffusion = _factories(ell, n_fast)
    name = _name(ell, n_fast)
    sizes = block_sizes(ell, n_fast)
    m = f"{sizes[0]}" if len(set(sizes)) == 1 else f"{min(sizes)}-{max(sizes)}"
    return System(
        name=name,
        description=(
            f"Ring of {ell} coupled double wells, each damped by the mean of {m} fast OU variables"
        ),
        slow_dim=ell,
        fast_dim=n_fast,
        drift=drift,
        diffusion=diffusion,
        noise=(True,) * (ell + n_fast),
        params=values,
        param_source="slowflow's scalable benchmark (module docstring); not from the paper",
        train_box=((-2.0, 2.0),) * ell + ((0.0, 4.0),) * n_fast,
        x0=_start(ell),
        t_end=5.0,
        plot_times=(1.0, 2.5, 5.0),
        fast_sampler=partial(_fast_sampler, owner=fast_owner(ell, n_fast)),
        averaged=_averaged(ell, name, **values),
        averaged_note=(
            "dx_i = (alpha x_i - x_i^3 + c (x_{i-1} - 2 x_i + x_{i+1})) dt + sigma dW_i "
            "(first-order averaging, ybar_i -> x_i^2)"
        ),
        pairs_per_traj=12,  # not a paper system: the authors' choice for their 2-D examples
        eps=values["eps"],
        extra={
            "ell": ell,
            "n_fast": n_fast,
            "blocks": sizes,
            "rebuild_averaged": partial(_averaged, ell, name),
        },
    )


SYSTEM = make_ring()
