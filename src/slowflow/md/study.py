"""``slowflow reproduce alanine``: real molecular dynamics, slowflow and an MSM side by side.

Stages (each cached under the output folder; MD is never recomputed for the same settings):

1. **MD** (:mod:`slowflow.md.alanine`): training bursts from restrained starts on a grid
   over the Ramachandran plane, long unbiased runs (the stationary reference), and
   ensembles of runs from two fixed starts (the relaxation reference).
2. **The observation step**: the closed-form map is fitted to the bursts subsampled at each
   Delta of ``deltas_ps`` and checked on held-out bursts; the smallest Delta whose map is
   calibrated is used (if none is, the least miscalibrated one).
3. **Models** at that Delta from the same bursts: slowflow's default and its map with memory
   chosen from the data, the Kramers-Moyal baseline, and a Markov state model
   (:mod:`slowflow.md.msm`) at the lag whose slowest implied timescale has converged.
4. **Comparison with MD**: the stationary free-energy surface (RMS difference in kT over
   the grid cells holding >= 1 % of MD's mass, after removing the mean difference, since a
   free energy is defined up to a constant), the basin populations, the relaxation time
   of the alpha_L population (the lag at which the autocorrelation of 1[phi > 0] falls to
   1/e, with a block-bootstrap 95 % interval for MD), and the relaxation of the ensembles
   from the fixed starts (W1 on the circle of each dihedral over time; the MSM is defined at
   multiples of its lag only).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..data import Trajectories, declare_periodic
from . import require
from .alanine import MDConfig, run_jobs, start_configuration
from .msm import (
    BASINS,
    basin_fractions,
    basin_of,
    ck_test,
    fit_msm,
    histogram,
    implied_timescales,
    propagate,
    sample_cells,
    states,
    stationary,
)

NAMES = ("phi", "psi")
RANGE = (-math.pi, math.pi)


@dataclass(frozen=True)
class AlanineConfig:
    """Sizes of the study (defaults: the full run, about 35 ns of MD)."""

    grid: int = 12  # burst starts per angle (grid points over the Ramachandran plane)
    reps: int = 6  # bursts per grid point
    burst_ps: float = 10.0
    long_runs: int = 4
    long_ns: float = 5.0
    fixed_starts: tuple = ((-1.4, 2.6), (1.0, 0.6))  # (phi, psi): beta and alpha_L
    fixed_runs: int = 100
    fixed_ps: float = 20.0
    deltas_ps: tuple = (0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
    msm_bins: int = 12
    msm_lags_ps: tuple = (0.5, 1.0, 2.0, 5.0)
    rollout_paths: int = 200
    rollout_ns: float = 20.0
    relax_paths: int = 2000
    workers: int = 2
    seed: int = 0

    def key(self, *names) -> str:
        d = asdict(self)
        blob = json.dumps({n: d[n] for n in names}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]


QUICK = AlanineConfig(
    grid=3,
    reps=1,
    burst_ps=2.0,
    long_runs=2,
    long_ns=0.02,
    fixed_runs=8,
    fixed_ps=2.0,
    deltas_ps=(0.1, 0.2),
    msm_bins=6,
    msm_lags_ps=(0.1, 0.2),
    rollout_paths=20,
    rollout_ns=0.05,
    relax_paths=200,
)


def _log(msg: str) -> None:
    print(f"[alanine] {msg}", flush=True)


def _traj(x: np.ndarray, dt: float, meta=None) -> Trajectories:
    data = Trajectories(x=x, dt=dt, names=NAMES, meta=dict(meta or {}))
    return declare_periodic(data, NAMES, "alanine MD", RANGE)


def generate_md(cfg: AlanineConfig, md: MDConfig, folder: Path) -> dict:
    """The MD of the study (cached): bursts, long runs, fixed-start ensembles, as
    Trajectories at the save step, and the measured cost."""
    folder.mkdir(parents=True, exist_ok=True)
    k = cfg.key("grid", "reps", "burst_ps", "long_runs", "long_ns", "fixed_starts",
                "fixed_runs", "fixed_ps", "seed") + hashlib.sha1(
        json.dumps(asdict(md), sort_keys=True).encode()).hexdigest()[:6]  # fmt: skip
    path = folder / f"md_{k}.npz"
    info_path = folder / f"md_{k}.json"
    if path.exists() and info_path.exists():
        _log(f"reuse MD: {path}")
        z = np.load(path)
        info = json.loads(info_path.read_text())
        dt = md.save_ps
        fixed = [_traj(z[f"fixed{i}"], dt) for i in range(len(cfg.fixed_starts))]
        return {"bursts": _traj(z["bursts"], dt), "long": _traj(z["long"], dt), "fixed": fixed,
                "info": info}  # fmt: skip
    grid = (np.arange(cfg.grid) + 0.5) / cfg.grid * 2 * math.pi - math.pi
    n_burst = int(round(cfg.burst_ps / md.save_ps)) + 1
    n_long = int(round(cfg.long_ns * 1000 / md.save_ps)) + 1
    n_fixed = int(round(cfg.fixed_ps / md.save_ps)) + 1
    per_burst = cfg.burst_ps + md.equilibrate_ps
    jobs = []
    for i, phi in enumerate(grid):
        for j, psi in enumerate(grid):
            seed = cfg.seed * 100_000 + i * cfg.grid + j + 1
            jobs.append(("burst", f"b{i}_{j}", seed, ((phi, psi), n_burst, cfg.reps),
                         cfg.reps * per_burst))  # fmt: skip
    for r in range(cfg.long_runs):
        jobs.append(("long", f"l{r}", cfg.seed * 100_000 + 50_000 + r, (n_long,),
                     cfg.long_ns * 1000 + 10.0))  # fmt: skip
    for s, start in enumerate(cfg.fixed_starts):
        pos = start_configuration(md, start, seed=cfg.seed + 7 + s)
        per = max(1, cfg.fixed_runs // max(1, cfg.workers))
        for c, r0 in enumerate(range(0, cfg.fixed_runs, per)):
            n = min(per, cfg.fixed_runs - r0)
            jobs.append(("fixed", f"f{s}_{c}", cfg.seed * 100_000 + 70_000 + 100 * s + c,
                         (pos, n, n_fixed), n * cfg.fixed_ps))  # fmt: skip
    # the long jobs first, so that the workers stay busy until the end
    jobs.sort(key=lambda j: -j[4])
    out = run_jobs(jobs, md, cfg.workers, "alanine MD")
    bursts = np.concatenate([out[j[1]] for j in jobs if j[0] == "burst"])
    longs = np.concatenate([out[j[1]] for j in jobs if j[0] == "long"])
    fixed = [
        np.concatenate([out[j[1]] for j in sorted(jobs, key=lambda j: j[1])
                        if j[0] == "fixed" and j[1].startswith(f"f{s}_")])
        for s in range(len(cfg.fixed_starts))
    ]  # fmt: skip
    info = {
        "ns": out["_ns"],
        "seconds": out["_seconds"],
        "ns_per_day": out["_ns"] / out["_seconds"] * 86400,
        "workers": cfg.workers,
        "md": asdict(md),
        "fixed_start_angles": [[float(v) for v in f[0, 0]] for f in fixed],
    }
    _log(f"MD: {info['ns']:.2f} ns in {info['seconds']:.0f} s ({info['ns_per_day']:.0f} ns/day "
         f"on {cfg.workers} workers)")  # fmt: skip
    arrays = {"bursts": bursts, "long": longs, **{f"fixed{i}": f for i, f in enumerate(fixed)}}
    from ..io.atomic import atomic_write

    with atomic_write(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    info_path.write_text(json.dumps(info, indent=2))
    dt = md.save_ps
    return {"bursts": _traj(bursts, dt), "long": _traj(longs, dt),
            "fixed": [_traj(f, dt) for f in fixed], "info": info}  # fmt: skip


def subsample(data: Trajectories, every: int) -> Trajectories:
    return _traj(data.x[:, ::every], data.dt * every)


def _split(data: Trajectories, seed: int, frac: float = 0.2):
    rng = np.random.default_rng([seed, 3])
    perm = rng.permutation(data.n_traj)
    n_held = max(1, int(round(frac * data.n_traj)))
    return data.subset(np.sort(perm[n_held:])), data.subset(np.sort(perm[:n_held]))


def delta_sweep(bursts: Trajectories, cfg: AlanineConfig, seed: int) -> list[dict]:
    """Per Delta: the closed-form map fitted to 80 % of the bursts and checked on the rest."""
    from ..evaluate.calibration import check_calibration
    from ..train import fit

    rows = []
    for delta in cfg.deltas_ps:
        every = int(round(delta / bursts.dt))
        sub = subsample(bursts, every)
        if sub.n_obs < 4:
            continue
        train, held = _split(sub, seed)
        model = fit(train, None, seed=seed, progress=False)
        lead = int(min(10, sub.n_obs - 2))
        res = check_calibration(model, held, max_lead=lead, n_starts=2000, n_members=50, seed=seed)
        rows.append(
            {
                "delta_ps": float(delta),
                "calibrated": bool(res.calibrated),
                "max_lead": lead,
                "dispersion": [float(v) for v in np.abs(res.pit_dispersion - 1).max(0)],
                "bias": [float(v) for v in np.abs(res.pit_bias).max(0)],
                "reasons": res.reasons,
            }
        )
        _log(f"Delta {delta:g} ps: {'calibrated' if res.calibrated else 'flagged'} "
             f"(max |12Var(PIT) - 1| {max(rows[-1]['dispersion']):.3f})")  # fmt: skip
    return rows


def choose_delta(rows: list[dict]) -> float:
    """The smallest calibrated Delta; if none is, the least miscalibrated one: the smallest
    worst excess over ``check``'s thresholds (PIT dispersion over its tolerance of 0.1,
    PIT bias over 0.03), so that a sweep where every Delta is flagged still uses the best
    kernel rather than the coarsest step."""
    from ..evaluate.calibration import BIAS_MAX

    ok = [r["delta_ps"] for r in rows if r["calibrated"]]
    if ok:
        return min(ok)

    def excess(r: dict) -> float:
        return max(max(r["dispersion"]) / 0.1, max(r["bias"]) / BIAS_MAX)

    return min(rows, key=excess)["delta_ps"]


def choose_lag(its: dict, tol: float = 0.1) -> int:
    """The smallest lag whose slowest implied timescale is within ``tol`` of the next
    lag's (converged); the largest lag if none is."""
    lags = sorted(its)
    for a, b in zip(lags, lags[1:]):
        ta, tb = its[a][0], its[b][0]
        if ta > 0 and abs(tb - ta) / tb <= tol:
            return a
    return lags[-1]


def fes_rms(p_model: np.ndarray, p_md: np.ndarray, mass: float = 0.01) -> float:
    """RMS difference of -log p (kT) over cells holding >= ``mass`` of MD's probability,
    the mean difference removed (free energies are defined up to a constant); cells where
    the model has no mass count as 10 kT apart."""
    cells = p_md >= mass
    with np.errstate(divide="ignore"):
        diff = -np.log(np.where(p_model[cells] > 0, p_model[cells], np.nan)) + np.log(p_md[cells])
    diff = np.where(np.isfinite(diff), diff, 10.0)
    diff = diff - diff.mean()
    return float(np.sqrt(np.mean(diff**2)))


def _lag_sums(f: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``f`` (n, L) and k = 0..max_lag (< L): S[k] = sum_t f_t f_{t+k}
    (by FFT), A[k] = sum_{t < L-k} f_t and B[k] = sum_{t >= k} f_t, each (n, max_lag + 1).
    From these the autocorrelation about any mean follows without a pass per lag (a loop
    over 12,500 lags of 200 rollouts of 200,000 steps took hours)."""
    n, length = f.shape
    size = 1 << int(math.ceil(math.log2(2 * length)))
    sums = np.empty((n, max_lag + 1))
    for i in range(0, n, 16):  # rows in groups: the FFT buffers stay small
        spec = np.fft.rfft(f[i : i + 16], size)
        sums[i : i + 16] = np.fft.irfft(spec * spec.conj(), size)[:, : max_lag + 1]
    c = np.cumsum(f, axis=1)
    k = np.arange(max_lag + 1)
    before = np.concatenate([np.zeros((n, 1)), c[:, :max_lag]], axis=1)
    return sums, c[:, length - 1 - k], c[:, -1:] - before


def _acf_of_sums(sums, a, b, totals, length: int, max_lag: int) -> np.ndarray:
    """The pooled normalized autocorrelation of 0/1 rows from their :func:`_lag_sums`
    (summed over the rows used) and their totals: mean and variance pooled over all."""
    n_rows = totals.size
    m = totals.sum() / (n_rows * length)
    v = m - m * m  # a 0/1 variable
    if v <= 0:
        return np.full(max_lag + 1, np.nan)
    k = np.arange(max_lag + 1)
    num = sums.sum(0) - m * (a.sum(0) + b.sum(0)) + m * m * n_rows * (length - k)
    return num / (n_rows * (length - k)) / v


#: The basins whose relaxation is measured: the exchange of alpha_R with beta, and alpha_L.
RELAX_BASINS = ("alpha_R", "alpha_L")


def core_centres(points: np.ndarray, n: int = 36) -> dict[int, np.ndarray]:
    """Each basin's most visited point (the centre of its fullest cell of an n x n grid)
    among ``points`` (m, 2): the centres of the basins' cores."""
    cells, basins = states(points, n), basin_of(points)
    out = {}
    for i in range(len(BASINS)):
        sel = cells[basins == i]
        if sel.size:
            c = int(np.bincount(sel, minlength=n * n).argmax())
            out[i] = (np.array([c // n, c % n]) + 0.5) / n * 2 * math.pi - math.pi
    return out


def milestones(x: np.ndarray, centres: dict, radius: float = 0.5) -> np.ndarray:
    """Basin labels (n, L) of trajectories (n, L, 2): the last basin whose core (points
    within ``radius`` rad on the torus of its centre) was visited; before the first core
    visit, the basin itself. A crossing of a basin's edge that returns before reaching
    another core is then no transition: the fast recrossings that made the indicator of
    phi > 0 decorrelate in 0.1 ps do not count."""
    core = np.full(x.shape[:-1], -1)
    for i, c in centres.items():
        d = np.angle(np.exp(1j * (x - c)))  # wrapped differences
        core[np.hypot(d[..., 0], d[..., 1]) < radius] = i
    t = np.where(core >= 0, np.arange(core.shape[-1]), 0)
    filled = np.take_along_axis(core, np.maximum.accumulate(t, axis=-1), axis=-1)
    return np.where(filled >= 0, filled, basin_of(x))


def _basin_acf(labels: np.ndarray, basin: int, max_lag: int) -> np.ndarray:
    """Normalized autocorrelation (max_lag + 1,) of 1[label == basin] pooled over
    trajectories (n, L), with the pooled mean and variance (NaN at lags >= L)."""
    f = (labels == basin).astype(float)
    length = f.shape[1]
    k_max = min(int(max_lag), length - 1)
    out = np.full(int(max_lag) + 1, np.nan)
    sums, a, b = _lag_sums(f, k_max)
    out[: k_max + 1] = _acf_of_sums(sums, a, b, f.sum(1), length, k_max)
    return out


def relaxation_time(acf: np.ndarray, dt: float) -> float:
    """The lag (in time units) at which an autocorrelation falls to 1/e (interpolated)."""
    below = np.flatnonzero(acf < 1 / math.e)
    if below.size == 0 or below[0] == 0:
        return float("nan")
    k = below[0]
    a, b = acf[k - 1], acf[k]
    return float(dt * (k - 1 + (a - 1 / math.e) / (a - b)))


def md_relaxation(long: Trajectories, centres: dict, dt_ps: float, max_ps: float, seed: int):
    """MD's relaxation times of the basins in :data:`RELAX_BASINS` (milestoned labels),
    each with a 95 % block-bootstrap interval (blocks of at least 1 ns)."""
    every = int(round(dt_ps / long.dt))
    labels = milestones(long.x[:, ::every], centres)
    max_lag = int(max_ps / dt_ps)
    block = min(labels.shape[1], max(max_lag + 1, int(1000.0 / dt_ps)))
    blocks = np.stack([
        labels[i, s : s + block]
        for i in range(labels.shape[0])
        for s in range(0, labels.shape[1] - block + 1, block)
    ])  # fmt: skip
    k_max = min(max_lag, block - 1)
    rng = np.random.default_rng([seed, 5])
    picks = [
        rng.integers(0, len(blocks), len(blocks)) for _ in range(200 if len(blocks) > 1 else 0)
    ]
    taus, cis = {}, {}
    for name in RELAX_BASINS:
        i = BASINS.index(name)
        taus[name] = relaxation_time(_basin_acf(labels, i, max_lag), dt_ps)
        f = (blocks == i).astype(float)
        sums, a, b = _lag_sums(f, k_max)
        totals = f.sum(1)
        boot = np.array([
            relaxation_time(_acf_of_sums(sums[p], a[p], b[p], totals[p], block, k_max), dt_ps)
            for p in picks
        ])  # fmt: skip
        boot = boot[np.isfinite(boot)]
        cis[name] = (
            [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))]
            if boot.size > 10
            else [float("nan")] * 2
        )
    return taus, cis, len(blocks)


def md_population_ci(long: Trajectories, burn: int, seed: int, block_ps: float = 1000.0):
    """95 % block-bootstrap intervals of MD's basin populations (blocks of 1 ns of the
    long runs after ``burn`` frames): how precisely the reference itself knows them."""
    x = long.x[:, burn:]
    block = max(1, min(x.shape[1], int(round(block_ps / long.dt))))
    fractions = np.array([
        [v for v in basin_fractions(x[i, s : s + block]).values()]
        for i in range(x.shape[0])
        for s in range(0, x.shape[1] - block + 1, block)
    ])  # fmt: skip
    if fractions.shape[0] < 2:
        return {b: [float("nan")] * 2 for b in BASINS}
    rng = np.random.default_rng([seed, 6])
    picks = rng.integers(0, fractions.shape[0], (1000, fractions.shape[0]))
    boot = fractions[picks].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return {b: [float(lo[j]), float(hi[j])] for j, b in enumerate(BASINS)}


def msm_relaxation(msm, n_bins: int, lag_ps: float, max_ps: float, basin: str) -> float:
    """The MSM's relaxation time of ``basin``: the 1/e lag of its exact autocorrelation of
    1[cell centre in the basin], at multiples of its lag (an MSM's states are coarse
    already: no milestoning)."""
    centers = (np.arange(n_bins) + 0.5) / n_bins * 2 * math.pi - math.pi
    grid = np.stack([np.repeat(centers, n_bins), np.tile(centers, n_bins)], axis=-1)
    f = (basin_of(grid)[msm.count_model.state_symbols] == BASINS.index(basin)).astype(float)
    pi = msm.stationary_distribution
    m = pi @ f
    v = pi @ (f - m) ** 2
    g = f - m
    t = msm.transition_matrix
    acf, vec = [], g.copy()
    for _ in range(int(max_ps / lag_ps) + 1):
        acf.append(float(pi @ (g * vec)) / v if v > 0 else float("nan"))
        vec = t @ vec
    return relaxation_time(np.array(acf), lag_ps)


def _fit_models(train: Trajectories, seed: int) -> tuple[dict, object]:
    """slowflow's maps (one-step and with memory) and the Kramers-Moyal baseline (None
    when the bursts hold too few pairs for it)."""
    from ..baselines import fit_kramers_moyal
    from ..errors import ConfigError
    from ..train import fit
    from ..train.memory import fit_memory_auto

    models = {"slowflow": fit(train, None, seed=seed, progress=False)}
    models["slowflow memory"] = fit_memory_auto(train, None, progress=False)
    try:
        km = fit_kramers_moyal(train, n_grid=72)  # 5-degree cells
    except ConfigError as exc:  # the quick run's few bursts
        _log(f"Kramers-Moyal skipped: {exc}")
        km = None
    return models, km


def _msm_stage(bursts: Trajectories, cfg: AlanineConfig) -> dict:
    """The MSM from the bursts at the save step, at the lag whose slowest implied
    timescale has converged, with its Chapman-Kolmogorov test."""
    runs = [b[: int(n)] for b, n in zip(bursts.x, bursts.lengths, strict=True)]
    lags = [max(1, int(round(lag / bursts.dt))) for lag in cfg.msm_lags_ps]
    its = implied_timescales(runs, lags, cfg.msm_bins)
    lag = choose_lag(its)
    msm = fit_msm(runs, lag, cfg.msm_bins)
    ck = ck_test(runs, lag, cfg.msm_bins, multiples=(1, 2, 3), n_sets=min(3, msm.n_states - 1))
    _log(
        f"MSM: {msm.n_states} states, lag {lag * bursts.dt:g} ps, slowest timescale "
        f"{its[lag][0] * bursts.dt:.1f} ps"
    )
    return {"msm": msm, "lag_ps": lag * bursts.dt, "its": its, "ck": ck}


def _sample(m, starts, n_steps: int, n_paths, seed: int) -> np.ndarray:
    """Paths of a learned map or of the Kramers-Moyal baseline."""
    from ..rollout import predict

    if hasattr(m, "config"):
        return predict(m, starts, n_steps, n_paths, seed=seed, progress=False)
    return m.simulate(starts, n_steps, n_paths, seed=seed)


def _stationary(sources, msm_stage, long, train, delta, cfg, seed) -> tuple[dict, dict, dict]:
    """Long rollouts from the bursts' starts against the long MD runs: free-energy
    surfaces, basin populations and the alpha_L relaxation time of every source."""
    burn = int(round(10.0 / long.dt))  # the long runs' first 10 ps
    md_points = long.x[:, burn:].reshape(-1, 2)
    p_md = histogram(md_points, cfg.msm_bins)
    n_roll = int(round(cfg.rollout_ns * 1000 / delta))
    rng = np.random.default_rng([seed, 9])
    starts = train.x[rng.integers(0, train.n_traj, cfg.rollout_paths), 0]
    skip = int(round(1000.0 / delta))  # the rollouts' first ns, at most half of them
    roll = {name: _sample(m, starts, n_roll, None, seed + 11) for name, m in sources.items()}
    stat = {name: p[:, min(p.shape[1] // 2, skip) :] for name, p in roll.items()}
    p_src = {name: histogram(v.reshape(-1, 2), cfg.msm_bins) for name, v in stat.items()}
    msm, lag_ps = msm_stage["msm"], msm_stage["lag_ps"]
    p_src["MSM"] = stationary(msm, cfg.msm_bins)
    cells = states(md_points, cfg.msm_bins)
    pops_md = basin_fractions(md_points)
    max_ps = min(2000.0, cfg.long_ns * 1000 / 4)
    centres = core_centres(md_points)
    tau_md, ci_md, n_blocks = md_relaxation(long, centres, delta, max_ps, seed)
    pop_ci = md_population_ci(long, burn, seed)
    table = {}
    for name in [*sources, "MSM"]:
        if name == "MSM":
            samples = sample_cells(p_src["MSM"], md_points, cells, 200_000, seed)
            tau = {b: msm_relaxation(msm, cfg.msm_bins, lag_ps, max_ps, b) for b in RELAX_BASINS}
        else:
            samples = stat[name].reshape(-1, 2)
            labels = milestones(stat[name], centres)
            tau = {
                b: relaxation_time(_basin_acf(labels, BASINS.index(b), int(max_ps / delta)), delta)
                for b in RELAX_BASINS
            }
        pops = basin_fractions(samples)
        within = {b: bool(pop_ci[b][0] <= pops[b] <= pop_ci[b][1]) for b in BASINS}
        table[name] = {
            "populations_in_md_ci": within,
            "fes_rms_kT": fes_rms(p_src[name], p_md),
            "populations": pops,
            "population_rel_error": {
                b: (pops[b] - pops_md[b]) / pops_md[b] if pops_md[b] > 0 else None for b in BASINS
            },
            "relaxation_ps": tau,
            "relaxation_in_md_ci": {
                b: bool(np.isfinite(tau[b]) and ci_md[b][0] <= tau[b] <= ci_md[b][1])
                for b in RELAX_BASINS
            },
        }
    reference = {
        "populations": pops_md,
        "populations_ci95": pop_ci,
        "relaxation_ps": tau_md,
        "relaxation_ci95": ci_md,
        "bootstrap_blocks": n_blocks,
        "core_centres": {BASINS[i]: [float(v) for v in c] for i, c in centres.items()},
        "frames": int(md_points.shape[0]),
    }
    return table, reference, {"md_points": md_points, "stat": stat, "p_src": p_src}


def _relaxation(sources, msm_stage, fixed, md_points, every, delta, cfg, seed) -> dict:
    """Ensembles from the fixed starts against MD's: W1 on the circle over time (the
    MSM's only at multiples of its lag)."""
    from ..evaluate.metrics import w1_marginals

    msm, lag_ps = msm_stage["msm"], msm_stage["lag_ps"]
    cells = states(md_points, cfg.msm_bins)
    relax = {}
    for s, ens in enumerate(fixed):
        ref = ens.x[:, ::every]
        n_steps = ref.shape[1] - 1
        x0 = ref[0, 0]
        curves = {
            name: w1_marginals(
                _sample(m, x0, n_steps, cfg.relax_paths, seed + 21), ref, [RANGE, RANGE]
            )
            for name, m in sources.items()
        }
        n_lag = int(n_steps * delta / lag_ps)
        dist = propagate(msm, x0, n_lag, cfg.msm_bins)
        msm_w1 = []
        for k in range(n_lag + 1):
            pts = sample_cells(dist[k], md_points, cells, cfg.relax_paths, seed + k)
            idx = int(round(k * lag_ps / delta))
            msm_w1.append(w1_marginals(pts[:, None], ref[:, idx : idx + 1], [RANGE, RANGE])[0])
        msm_times = [k * lag_ps for k in range(n_lag + 1)]
        on_msm = [int(round(t / delta)) for t in msm_times if t > 0]
        relax[f"start {s}"] = {
            "x0": [float(v) for v in x0],
            "times_ps": [k * delta for k in range(n_steps + 1)],
            "w1": {k: v.tolist() for k, v in curves.items()},
            "msm_times_ps": msm_times,
            "msm_w1": [list(map(float, v)) for v in msm_w1],
            "time_avg_w1_where_msm_defined": {
                **{k: [float(c) for c in v[on_msm].mean(0)] for k, v in curves.items()},
                "MSM": [float(c) for c in np.mean(msm_w1[1:], 0)] if len(msm_w1) > 1 else None,
            },
            "time_avg_w1": {k: [float(c) for c in v[1:].mean(0)] for k, v in curves.items()},
        }
    return relax


def reproduce_alanine(out, quick: bool = False, seed: int = 0, workers: int | None = None) -> dict:
    """Run the whole study; writes ``OUT/alanine/metrics.json``, ``report.md`` and figures."""
    from .alanine import quiet_import

    require("openmm")
    quiet_import("openmmtools")
    require("deeptime")
    from ..evaluate.report import write_json

    cfg = replace(QUICK if quick else AlanineConfig(), seed=int(seed))
    if workers is not None:
        cfg = replace(cfg, workers=int(workers))
    folder = Path(out) / "alanine"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = generate_md(cfg, MDConfig(), folder)
    bursts, long = data["bursts"], data["long"]
    sweep = delta_sweep(bursts, cfg, seed)
    delta = choose_delta(sweep)
    every = int(round(delta / bursts.dt))
    train = subsample(bursts, every)
    _log(f"observation step Delta = {delta:g} ps ({train.n_traj} bursts x {train.n_obs} obs)")
    models, km = _fit_models(train, seed)
    sources = {**models, **({"kramers-moyal": km} if km is not None else {})}
    msm_stage = _msm_stage(bursts, cfg)
    table, reference, stat = _stationary(sources, msm_stage, long, train, delta, cfg, seed)
    relax = _relaxation(
        sources, msm_stage, data["fixed"], stat["md_points"], every, delta, cfg, seed
    )
    its = msm_stage["its"]
    results = {
        "config": asdict(cfg),
        "md": data["info"],
        "delta_sweep": sweep,
        "delta_ps": delta,
        "memory_chosen": models["slowflow memory"].history["memory_selection"]["chosen"],
        "msm": {
            "lag_ps": msm_stage["lag_ps"],
            "n_states": int(msm_stage["msm"].n_states),
            "bins": cfg.msm_bins,
            "implied_timescales_ps": {
                str(k * bursts.dt): [t * bursts.dt for t in v] for k, v in its.items()
            },
            "ck_test": msm_stage["ck"],
        },
        "md_reference": reference,
        "comparison": table,
        "relaxation": relax,
        "seconds": time.perf_counter() - t0,
    }
    stat_samples = {k: v.reshape(-1, 2) for k, v in stat["stat"].items()}
    results["figures"] = _figures(
        folder, stat["md_points"], stat_samples, stat["p_src"], relax, its, bursts.dt, cfg
    )
    write_json(results, folder / "metrics.json")
    _report(results, folder / "report.md")
    _log(f"done in {results['seconds']:.0f} s -> {folder / 'report.md'}")
    return results


def _figures(folder, md_points, stat, p_src, relax, its, dt, cfg) -> list[str]:
    from ..evaluate import plots

    samples = {"MD": md_points, **{k: v for k, v in stat.items() if k != "kramers-moyal"}}
    rng = np.random.default_rng(0)
    cells = states(md_points, cfg.msm_bins)
    samples["MSM"] = sample_cells(p_src["MSM"], md_points, cells, 200_000, 1)
    samples = {k: v[rng.permutation(len(v))[:400_000]] for k, v in samples.items()}
    names = []
    fig = plots.free_energy_2d(samples, (RANGE, RANGE), bins=36, names=("phi (rad)", "psi (rad)"))
    names.append(plots.save_figure(fig, folder / "free_energy.png").name)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6 * len(relax)), layout="constrained")
    axes = fig.subplots(len(relax), 2, squeeze=False)
    for r, (label, rel) in enumerate(relax.items()):
        for c in range(2):
            ax = axes[r, c]
            for name, w in rel["w1"].items():
                ax.plot(rel["times_ps"][1:], np.asarray(w)[1:, c], label=name)
            ax.plot(rel["msm_times_ps"][1:], np.asarray(rel["msm_w1"])[1:, c], "o-", label="MSM")
            ax.set_title(f"{label} {tuple(round(v, 2) for v in rel['x0'])}: {NAMES[c]}")
            ax.set_xlabel("time (ps)")
            ax.set_ylabel("W1 to MD (rad, on the circle)")
            ax.legend(fontsize=7)
    names.append(plots.save_figure(fig, folder / "relaxation.png").name)
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    lags = sorted(its)
    for i in range(len(its[lags[0]])):
        ax.plot(
            [lag * dt for lag in lags], [its[lag][i] * dt for lag in lags], "o-", label=f"t{i + 2}"
        )
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("implied timescale (ps)")
    ax.set_yscale("log")
    ax.legend()
    names.append(plots.save_figure(fig, folder / "implied_timescales.png").name)
    return names


def _report(r: dict, path: Path) -> None:
    from ..io.atomic import atomic_write

    md = r["md"]
    lines = [
        "# Alanine dipeptide: MD, slowflow and an MSM\n",
        f"MD: {md['ns']:.2f} ns in {md['seconds']:.0f} s, {md['ns_per_day']:.0f} ns/day on "
        f"{md['workers']} worker(s) (OpenMM CPU, 1 thread each; {md['md']['timestep_fs']:g} fs, "
        f"hydrogen mass {md['md']['hydrogen_mass']} amu). Observation step chosen by "
        f"calibration: Delta = {r['delta_ps']:g} ps. Memory chosen: {r['memory_chosen']}. "
        f"MSM: {r['msm']['n_states']} states on a {r['msm']['bins']}x{r['msm']['bins']} grid, "
        f"lag {r['msm']['lag_ps']:g} ps.\n",
        "| Delta (ps) | calibrated | max abs(12Var(PIT) - 1) (phi, psi) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {s['delta_ps']:g} | {s['calibrated']} | {', '.join(f'{v:.3f}' for v in s['dispersion'])} |"
        for s in r["delta_sweep"]
    ]
    ref = r["md_reference"]
    md_tau = ", ".join(
        f"{b} {ref['relaxation_ps'][b]:.1f} ps ({ref['relaxation_ci95'][b][0]:.1f}-"
        f"{ref['relaxation_ci95'][b][1]:.1f})"
        for b in RELAX_BASINS
    )
    lines += [
        "",
        f"MD reference: populations {', '.join(f'{k} {v:.3f}' for k, v in ref['populations'].items())}; "
        f"relaxation times (milestoned basins, 95 % intervals from {ref['bootstrap_blocks']} "
        f"blocks): {md_tau}.\n",
        "| source | FES RMS (kT, cells >= 1 % mass) | beta | alpha_R | alpha_L | alpha_R relaxation (ps, in MD's CI) | alpha_L relaxation (ps, in MD's CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in r["comparison"].items():
        p = row["populations"]
        taus = " | ".join(
            f"{row['relaxation_ps'][b]:.1f} ({row['relaxation_in_md_ci'][b]})" for b in RELAX_BASINS
        )
        lines.append(
            f"| {name} | {row['fes_rms_kT']:.2f} | {p['beta']:.3f} | {p['alpha_R']:.3f} | "
            f"{p['alpha_L']:.3f} | {taus} |"
        )
    lines += [
        "",
        "| start | source | time-avg W1 where the MSM is defined (phi, psi) | over all times |",
        "|---|---|---|---|",
    ]
    for label, rel in r["relaxation"].items():
        for name, v in rel["time_avg_w1_where_msm_defined"].items():
            allt = rel["time_avg_w1"].get(name)
            lines.append(
                f"| {label} | {name} | {', '.join(f'{c:.3f}' for c in v) if v else '-'} | "
                f"{', '.join(f'{c:.3f}' for c in allt) if allt else '-'} |"
            )
    lines += ["", "## Figures", *[f"![{f}]({f})" for f in r["figures"]]]
    with atomic_write(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


__all__ = ["AlanineConfig", "QUICK", "reproduce_alanine"]
