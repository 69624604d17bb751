"""Ground-truth simulator: vectorized Euler-Maruyama in float64 with substeps.

The paper's reference solver is Euler-Maruyama with step 1e-4, i.e. ``m = 100`` substeps per
observation step Delta = 0.01 (digest section 1). Here each path is integrated by a compiled
(numba) loop, paths in parallel over the available cores; only the observations are kept,
so memory is ``n_paths * (n_steps + 1) * k`` floats whatever the number of substeps.

Random numbers: every path has its own xoshiro256+ generator, seeded from
``numpy.random.SeedSequence(seed)``; Gaussian increments come from Marsaglia's polar method.
A path's noise therefore depends only on the seed and its index, not on the number of
threads or on how paths are batched: the same seed gives identical output on one machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import lru_cache

import numba
import numpy as np
from numba import uint64

from .data import Trajectories
from .errors import ConfigError
from .systems import System, get_system

REFERENCE_DT = 1e-4  # the paper's Euler-Maruyama step


@numba.njit(inline="always")
def _rotl(x, k):
    return (x << uint64(k)) | (x >> uint64(64 - k))


@numba.njit(inline="always")
def _next(s0, s1, s2, s3):
    # xoshiro256+ (Blackman & Vigna); the top 53 bits are used, which are of full quality.
    result = s0 + s3
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return result, s0, s1, s2, s3


@numba.njit(inline="always")
def _uniform_pm1(r):
    return (r >> uint64(11)) * (2.0 / 9007199254740992.0) - 1.0


def _build_kernel(drift_py, diffusion_py, noise: tuple[bool, ...], n_keep: int):
    drift = numba.njit(inline="always")(drift_py)
    diffusion = numba.njit(inline="always")(diffusion_py)
    d = len(noise)
    noisy = np.array(noise, dtype=np.bool_)

    @numba.njit(parallel=True, nogil=True)
    def kernel(s_init, seeds, n_steps, m, dt, out):
        sqdt = math.sqrt(dt)
        for i in numba.prange(s_init.shape[0]):
            a0, a1, a2, a3 = seeds[i, 0], seeds[i, 1], seeds[i, 2], seeds[i, 3]
            s = s_init[i].copy()
            have_spare = False
            spare = 0.0
            for c in range(n_keep):
                out[i, 0, c] = s[c]
            for k in range(n_steps):
                for _ in range(m):
                    f = drift(s)
                    g = diffusion(s)
                    for c in range(d):
                        if noisy[c]:
                            if have_spare:
                                z = spare
                                have_spare = False
                            else:
                                while True:
                                    r, a0, a1, a2, a3 = _next(a0, a1, a2, a3)
                                    u = _uniform_pm1(r)
                                    r, a0, a1, a2, a3 = _next(a0, a1, a2, a3)
                                    v = _uniform_pm1(r)
                                    q = u * u + v * v
                                    if 0.0 < q < 1.0:
                                        break
                                fac = math.sqrt(-2.0 * math.log(q) / q)
                                z = u * fac
                                spare = v * fac
                                have_spare = True
                            s[c] += f[c] * dt + g[c] * sqdt * z
                        else:
                            s[c] += f[c] * dt
                for c in range(n_keep):
                    out[i, k + 1, c] = s[c]

    return kernel


@lru_cache(maxsize=64)
def _kernel_for(system_key: tuple, n_keep: int):
    system = _KEYED[system_key]
    return _build_kernel(system.drift_fn(), system.diffusion_fn(), tuple(system.noise), n_keep)


_KEYED: dict[tuple, System] = {}


def _key(system: System) -> tuple:
    key = (
        system.name,
        tuple(sorted(system.params.items())),
        id(system.drift),
        id(system.diffusion),
    )
    _KEYED[key] = system
    return key


def _torch_threads(restore: int | None = None) -> int | None:
    """Read (or restore) torch's intra-op thread count: numba's threading layer resets it,
    which would undo a user's ``torch.set_num_threads``."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if restore is not None:
        torch.set_num_threads(restore)
    return torch.get_num_threads()


def path_seeds(seed: int, n: int) -> np.ndarray:
    """Per-path generator states (n, 4) uint64 derived from ``SeedSequence(seed)``."""
    state = np.random.SeedSequence(int(seed)).generate_state(4 * n, np.uint64).reshape(n, 4)
    state[:, 0] |= np.uint64(1)  # an all-zero xoshiro state is invalid
    return state


def resolve_steps(t_end: float, dt_obs: float, substeps: int | None) -> tuple[int, int]:
    """Number of observation steps for ``t_end`` and substeps per step (default: dt = 1e-4)."""
    if not (dt_obs > 0 and math.isfinite(dt_obs)):
        raise ConfigError(f"dt_obs must be a positive number, got {dt_obs}")
    if not (t_end > 0 and math.isfinite(t_end)):
        raise ConfigError(f"t_end must be a positive number, got {t_end}")
    n_steps = round(t_end / dt_obs)
    if n_steps < 1 or abs(n_steps * dt_obs - t_end) > 1e-6 * max(t_end, dt_obs):
        raise ConfigError(
            f"t_end={t_end} is not a whole number of observation steps dt_obs={dt_obs}"
        )
    if substeps is None:
        substeps = max(1, round(dt_obs / REFERENCE_DT))
    if int(substeps) < 1:
        raise ConfigError(f"substeps must be >= 1, got {substeps}")
    return n_steps, int(substeps)


def simulate_paths(
    system: System | str,
    s0: np.ndarray,
    n_steps: int,
    dt_obs: float,
    substeps: int,
    seed: int = 0,
    keep: str = "slow",
    progress: bool | None = None,
) -> np.ndarray:
    """Integrate the full system from given full states and keep observations.

    Parameters
    ----------
    s0 : array (n, d)
        Full initial states (slow then fast components).
    n_steps : int
        Observation steps; the output has ``n_steps + 1`` observations (the start included).
    dt_obs, substeps :
        Observation step Delta and Euler-Maruyama substeps per step (dt = Delta / substeps).
    keep : {"slow", "all"}
        Keep only the slow components, or the full state.
    progress : bool or None
        Show a progress bar; None shows one when the run is expected to exceed ~3 s.

    Returns
    -------
    array (n, n_steps + 1, k), float64, with k = l or d.
    """
    system = get_system(system)
    s0 = np.ascontiguousarray(s0, dtype=np.float64)
    if s0.ndim != 2 or s0.shape[1] != system.dim:
        raise ConfigError(f"initial states must have shape (n, {system.dim}), got {s0.shape}")
    if keep not in ("slow", "all"):
        raise ConfigError(f"keep must be 'slow' or 'all', got {keep!r}")
    n = s0.shape[0]
    n_keep = system.slow_dim if keep == "slow" else system.dim
    kernel = _kernel_for(_key(system), n_keep)
    seeds = path_seeds(seed, n)
    out = np.empty((n, n_steps + 1, n_keep))
    dt = dt_obs / substeps
    work = n * n_steps * substeps
    # Batches of paths keep the progress bar moving; results do not depend on batching.
    batch = max(256, min(n, int(2e8 // max(1, n_steps * substeps))))
    show = progress if progress is not None else work > 3e8
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, unit="path", desc=f"simulate {system.name}", leave=False)
    torch_threads = _torch_threads()
    try:
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            kernel(s0[start:stop], seeds[start:stop], n_steps, substeps, dt, out[start:stop])
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()
        _torch_threads(torch_threads)
    bad = ~np.isfinite(out).all(axis=(1, 2))
    if bad.any():
        import warnings

        warnings.warn(
            f"{system.name}: {int(bad.sum())} of {n} simulated paths became non-finite "
            f"(first: path {int(np.flatnonzero(bad)[0])}); reduce dt_obs/substeps ratio",
            RuntimeWarning,
            stacklevel=2,
        )
    return out


def _check_size(system: System, n: int, n_steps: int, keep_fast: bool, count: str) -> None:
    """Refuse, before allocating, an output that does not fit in memory: ``n`` paths of
    ``n_steps + 1`` observations (float64), plus the checks that validate it."""
    from .io.limits import check_memory

    k = system.dim if keep_fast else system.slow_dim
    n_bytes = 1.5 * 8.0 * n * (n_steps + 1) * k + 8.0 * n * (4 + 2 * system.dim)
    obs = n_steps + 1 if n_steps < 10**15 else f"{n_steps + 1:.3g}"
    flag = count.replace("_", "-")
    check_memory(n_bytes, f"{count}={n} x {obs} observations (CLI: --{flag}, --t-end, --dt-obs)")


def _meta(system: System, **kw) -> dict:
    from . import __version__

    return {
        "system": system.name,
        "params": dict(system.params),
        "slowflow_version": __version__,
        **kw,
    }


def simulate_bursts(
    system: System | str,
    n_traj: int | None = None,
    t_end: float | None = None,
    dt_obs: float | None = None,
    substeps: int | None = None,
    seed: int = 0,
    box: Sequence[tuple[float, float]] | None = None,
    keep_fast: bool = False,
    progress: bool | None = None,
) -> Trajectories:
    """Training bursts: ``n_traj`` trajectories from uniform starts in the training box.

    Defaults are the paper's: 10,000 bursts of T = 1 at Delta = 0.01 with dt = 1e-4,
    slow and fast starts uniform in the system's box (digest section 1).

    Returns
    -------
    Trajectories with x of shape (n_traj, round(t_end / dt_obs) + 1, l) (d with keep_fast).
    """
    system = get_system(system)
    n_traj = system.n_train_traj if n_traj is None else int(n_traj)
    t_end = system.t_train if t_end is None else float(t_end)
    dt_obs = system.dt_obs if dt_obs is None else float(dt_obs)
    if n_traj < 1:
        raise ConfigError(f"n_traj must be >= 1, got {n_traj}")
    n_steps, substeps = resolve_steps(t_end, dt_obs, substeps)
    _check_size(system, n_traj, n_steps, keep_fast, "n_traj")
    box = np.asarray(system.train_box if box is None else box, dtype=np.float64)
    if box.shape != (system.dim, 2):
        raise ConfigError(f"box must have shape ({system.dim}, 2), got {box.shape}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
    s0 = rng.uniform(box[:, 0], box[:, 1], size=(n_traj, system.dim))
    return _observe(system, s0, n_steps, dt_obs, substeps, seed, keep_fast, progress, kind="bursts")


def _observe(system, s0, n_steps, dt_obs, substeps, seed, keep_fast, progress, **meta):
    """Simulate from full states ``s0`` and wrap the observations with their provenance."""
    t0 = time.perf_counter()
    x = simulate_paths(
        system, s0, n_steps, dt_obs, substeps, seed, "all" if keep_fast else "slow", progress
    )
    meta = _meta(
        system,
        seed=int(seed),
        substeps=substeps,
        seconds=round(time.perf_counter() - t0, 3),
        **meta,
    )
    return Trajectories(x=x, dt=dt_obs, names=_names(system, keep_fast), meta=meta)


def _names(system: System, keep_fast: bool) -> tuple[str, ...]:
    names = [f"x{i + 1}" for i in range(system.slow_dim)]
    if keep_fast:
        names += [f"y{i + 1}" for i in range(system.fast_dim)]
    return tuple(names)


def initial_states(system: System, x0, n_paths: int, rng: np.random.Generator) -> np.ndarray:
    """Full states (n_paths, d): the slow start x0 and fast variables from their
    stationary law conditioned on x0 (the paper's test protocol, digest 2.4)."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    if x0.shape[0] != system.slow_dim:
        raise ConfigError(
            f"x0 has {x0.shape[0]} components but {system.name} has {system.slow_dim} slow variables"
        )
    x = np.broadcast_to(x0, (n_paths, system.slow_dim)).copy()
    y = system.sample_fast(x, rng)
    return np.concatenate([x, y], axis=1)


def simulate_ensemble(
    system: System | str,
    x0=None,
    n_paths: int = 10_000,
    t_end: float | None = None,
    dt_obs: float | None = None,
    substeps: int | None = None,
    seed: int = 0,
    keep_fast: bool = False,
    progress: bool | None = None,
) -> Trajectories:
    """A test ensemble: ``n_paths`` paths from the slow start ``x0`` (default: the paper's),
    fast variables drawn from their conditional stationary law.

    Returns
    -------
    Trajectories with x of shape (n_paths, n_steps + 1, l) (d with keep_fast).
    """
    system = get_system(system)
    x0 = system.x0 if x0 is None else x0
    t_end = system.t_end if t_end is None else float(t_end)
    dt_obs = system.dt_obs if dt_obs is None else float(dt_obs)
    if int(n_paths) < 1:
        raise ConfigError(f"n_paths must be >= 1, got {n_paths}")
    n_steps, substeps = resolve_steps(t_end, dt_obs, substeps)
    _check_size(system, int(n_paths), n_steps, keep_fast, "n_paths")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    s0 = initial_states(system, x0, int(n_paths), rng)
    return _observe(
        system,
        s0,
        n_steps,
        dt_obs,
        substeps,
        seed,
        keep_fast,
        progress,
        kind="ensemble",
        x0=[float(v) for v in np.ravel(x0)],
    )
