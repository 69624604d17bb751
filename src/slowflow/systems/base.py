"""Declarative description of a slow-fast stochastic system.

A system is data, not code that runs: its drift and diagonal diffusion, its parameters
(with the equation they come from), the box its training bursts start in, the test start
and horizon, a sampler of the fast variables' conditional stationary law, and its averaged
(effective) slow equation where one is known. :mod:`slowflow.simulate` integrates it.

Writing drift and diffusion
---------------------------
``drift(**params)`` and ``diffusion(**params)`` are *factories*: called with the parameter
values they return a function ``f(s)`` of the full state ``s = (x_1..x_l, y_1..y_m)`` that
returns a tuple of ``d = l + m`` components. The body may only index ``s`` and use
arithmetic and :mod:`math` functions, so the same function works

* on one path (``s`` a 1-D float array; compiled with numba inside the simulator), and
* on many paths at once (``s`` a ``(d, n)`` array, each ``s[i]`` a row; used by numpy code).

Parameters become compile-time constants of the simulator's kernel. The diffusion is
diagonal: component ``i`` receives ``diffusion(s)[i] * dW_i``. Components whose noise is
identically zero are listed as ``False`` in ``noise``, which lets the kernel skip them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

StateFn = Callable[[Any], tuple]
Factory = Callable[..., StateFn]


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class System:
    """A slow-fast SDE ``dx = f dt + sigma dW1``, ``dy = (1/eps) g dt + (1/sqrt(eps)) beta dW2``.

    Attributes
    ----------
    name, aliases:
        Registry name (``"triad"``) and alternative names (``("ex4.3",)``).
    slow_dim, fast_dim:
        l and d - l. Only the first ``slow_dim`` state components are observed.
    drift, diffusion:
        Factories, see the module docstring. The fast equations carry their own 1/eps.
    noise:
        Per state component, whether its diffusion can be nonzero.
    params:
        Parameter values, passed by keyword to the factories.
    param_source:
        Where the parameters come from (paper equation numbers).
    train_box:
        ``((lo, hi), ...)`` per state component (slow then fast): training bursts start
        uniformly in this box.
    x0, t_end:
        Test start (slow components) and horizon of the paper's figures.
    plot_times:
        Times at which the paper shows histograms (or, where it shows none, evenly spaced
        times over the horizon).
    fast_sampler:
        ``fast_sampler(x, rng, **params) -> y``: draws the fast variables from their
        stationary law conditioned on the slow state ``x`` of shape ``(n, l)``, returning
        ``(n, d - l)``. ``None`` for single-scale systems.
    averaged:
        The averaged (effective) slow equation as a single-scale :class:`System`, or None.
    averaged_note:
        What the averaged equation is and where it comes from.
    pairs_per_traj:
        The authors' number of random pairs per training trajectory (digest 2.3).
    eps:
        The scale-separation parameter for display (None for single-scale systems).
    exact_transition:
        Optional ``exact_transition(x, dt, **params) -> (mean, cov)`` for systems whose
        one-step law is known in closed form (Gaussian), used by tests and calibration.
    """

    name: str
    slow_dim: int
    fast_dim: int
    drift: Factory
    diffusion: Factory
    noise: tuple[bool, ...]
    params: Mapping[str, float]
    train_box: tuple[tuple[float, float], ...]
    x0: tuple[float, ...]
    t_end: float
    description: str = ""
    aliases: tuple[str, ...] = ()
    param_source: str = ""
    plot_times: tuple[float, ...] = ()
    fast_sampler: Callable[..., np.ndarray] | None = None
    averaged: System | None = None
    averaged_note: str = ""
    pairs_per_traj: int | None = None
    eps: float | None = None
    dt_obs: float = 0.01
    substeps: int = 100
    n_train_traj: int = 10_000
    t_train: float = 1.0
    exact_transition: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen(self.params))
        object.__setattr__(self, "extra", _frozen(self.extra))
        d = self.dim
        if len(self.noise) != d:
            raise ValueError(f"system {self.name}: noise has {len(self.noise)} entries, d={d}")
        if len(self.train_box) != d:
            raise ValueError(f"system {self.name}: train_box has {len(self.train_box)} rows, d={d}")
        if len(self.x0) != self.slow_dim:
            raise ValueError(
                f"system {self.name}: x0 has {len(self.x0)} entries, l={self.slow_dim}"
            )
        if self.fast_dim > 0 and self.fast_sampler is None:
            raise ValueError(f"system {self.name}: a multiscale system needs a fast_sampler")

    @property
    def dim(self) -> int:
        """Full state dimension d = l + (d - l)."""
        return self.slow_dim + self.fast_dim

    def drift_fn(self) -> StateFn:
        """The drift ``f(s) -> tuple`` with this system's parameters bound."""
        return self.drift(**self.params)

    def diffusion_fn(self) -> StateFn:
        """The diagonal diffusion ``g(s) -> tuple`` with this system's parameters bound."""
        return self.diffusion(**self.params)

    def with_params(self, **changes: float) -> System:
        """A copy with some parameters changed (e.g. ``eps``), for sweeps.

        The averaged equation is rebuilt by the system's ``extra['rebuild_averaged']``
        when it depends on the parameters.
        """
        unknown = set(changes) - set(self.params)
        if unknown:
            raise KeyError(f"system {self.name} has no parameter(s) {sorted(unknown)}")
        params = {**self.params, **changes}
        from dataclasses import replace

        averaged = self.averaged
        rebuild = self.extra.get("rebuild_averaged")
        if rebuild is not None:
            averaged = rebuild(**params)
        eps = params.get("eps", self.eps) if self.eps is not None else None
        return replace(self, params=params, averaged=averaged, eps=eps)

    def sample_fast(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Fast variables from their stationary law given the slow state ``x`` (n, l)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.slow_dim)
        if self.fast_dim == 0:
            return np.empty((x.shape[0], 0))
        y = self.fast_sampler(x, rng, **self.params)
        return np.asarray(y, dtype=np.float64).reshape(x.shape[0], self.fast_dim)

    def evaluate(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Drift and diagonal diffusion on many states at once.

        Parameters
        ----------
        s : array (n, d)

        Returns
        -------
        (drift, diffusion), each of shape (n, d).
        """
        s = np.asarray(s, dtype=np.float64)
        cols = s.T
        n = s.shape[0]
        f = self.drift_fn()(cols)
        g = self.diffusion_fn()(cols)
        f = np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (n,)) for c in f], axis=1)
        g = np.stack([np.broadcast_to(np.asarray(c, dtype=np.float64), (n,)) for c in g], axis=1)
        return f, g
