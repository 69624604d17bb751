"""Alanine dipeptide in implicit solvent (OpenMM): trajectories of the dihedrals (phi, psi).

The system is openmmtools' ``AlanineDipeptideImplicit`` (Amber ff96 with the OBC
generalized-Born implicit solvent, 22 atoms), bonds to hydrogen constrained. Dynamics:
OpenMM's ``LangevinMiddleIntegrator`` at 300 K with friction 1/ps. By default hydrogen
masses are repartitioned to 3 amu (the heavy atoms they bind lose that mass, the total is
kept), which allows a 4 fs step; ``MDConfig(hydrogen_mass=None, timestep_fs=2)`` runs the
unmodified masses (:func:`check_hmr` compares the two).

Three kinds of runs, each a job for one worker process:

* **bursts** (training data in the paper's protocol): the dihedrals are restrained to a
  point (phi0, psi0) of a grid over the Ramachandran plane (k (1 - cos(theta - theta0))
  per dihedral) for ``equilibrate_ps``, the restraint is released, and the burst is
  recorded every ``save_ps``;
* **long runs** (the stationary reference): unbiased, from the minimized structure;
* **fixed-start ensembles** (the paper's test protocol): every run starts from the same
  configuration, with velocities drawn from the Maxwell-Boltzmann law.

Dihedrals are in radians on [-pi, pi): phi = C(ACE)-N-CA-C, psi = N-CA-C-N(NME).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import require

KJ_PER_KT_300 = 0.0083144626 * 300.0
PHI = (("ACE", "C"), ("ALA", "N"), ("ALA", "CA"), ("ALA", "C"))
PSI = (("ALA", "N"), ("ALA", "CA"), ("ALA", "C"), ("NME", "N"))


@dataclass(frozen=True)
class MDConfig:
    """Settings of the molecular dynamics."""

    temperature: float = 300.0  # K
    friction: float = 1.0  # 1/ps
    timestep_fs: float = 4.0
    hydrogen_mass: float | None = 3.0  # amu; None: unmodified masses
    save_ps: float = 0.1  # observation step of the recorded dihedrals
    equilibrate_ps: float = 2.0  # restrained equilibration before a burst
    restraint_kj: float = 200.0  # k of k (1 - cos(theta - theta0)), kJ/mol

    @property
    def steps_per_save(self) -> int:
        n = self.save_ps * 1000.0 / self.timestep_fs
        if abs(n - round(n)) > 1e-9 or round(n) < 1:
            raise ValueError(f"save_ps {self.save_ps} is not a multiple of the time step")
        return int(round(n))


def dihedrals(pos: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Dihedral angles (..., k) in radians on [-pi, pi) of positions (..., n_atoms, 3) for
    the atom quadruples ``idx`` (k, 4) (IUPAC sign convention)."""
    p = pos[..., idx, :]  # (..., k, 4, 3)
    b0, b1, b2 = (
        p[..., 0, :] - p[..., 1, :],
        p[..., 2, :] - p[..., 1, :],
        p[..., 3, :] - p[..., 2, :],
    )
    b1 = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1).sum(-1, keepdims=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdims=True) * b1
    x = (v * w).sum(-1)
    y = (np.cross(b1, v) * w).sum(-1)
    ang = np.arctan2(y, x)
    return np.where(ang >= math.pi, ang - 2 * math.pi, ang)


class Alanine:
    """One OpenMM context of alanine dipeptide (a worker holds one)."""

    def __init__(self, cfg: MDConfig, seed: int = 0, threads: int = 1) -> None:
        mm = require("openmm")
        unit = require("openmm.unit")
        app = require("openmm.app")
        testsystems = quiet_import("openmmtools.testsystems")
        self.cfg, self.mm, self.unit = cfg, mm, unit
        kw = {"constraints": app.HBonds}
        if cfg.hydrogen_mass is not None:
            kw["hydrogenMass"] = cfg.hydrogen_mass * unit.amu
        ts = testsystems.AlanineDipeptideImplicit(**kw)
        atoms = [(a.residue.name, a.name) for a in ts.topology.atoms()]
        self.idx = np.array([[atoms.index(a) for a in q] for q in (PHI, PSI)])
        system = ts.system
        force = mm.CustomTorsionForce("k_restraint * (1 - cos(theta - theta0))")
        force.addGlobalParameter("k_restraint", 0.0)
        force.addPerTorsionParameter("theta0")
        for q in self.idx:
            force.addTorsion(*[int(i) for i in q], [0.0])
        self.restraint = force
        system.addForce(force)
        self.integrator = mm.LangevinMiddleIntegrator(
            cfg.temperature * unit.kelvin,
            cfg.friction / unit.picosecond,
            cfg.timestep_fs * unit.femtosecond,
        )
        self.integrator.setRandomNumberSeed(int(seed) % 2**31 or 1)
        platform = mm.Platform.getPlatformByName("CPU")
        self.context = mm.Context(system, self.integrator, platform, {"Threads": str(threads)})
        self.context.setPositions(ts.positions)
        mm.LocalEnergyMinimizer.minimize(self.context)
        self.minimized = self.positions()
        self.seed = int(seed)

    def positions(self) -> np.ndarray:
        state = self.context.getState(getPositions=True)
        return state.getPositions(asNumpy=True).value_in_unit(self.unit.nanometer)

    def angles(self) -> np.ndarray:
        return dihedrals(self.positions(), self.idx)

    def _velocities(self, seed: int) -> None:
        self.context.setVelocitiesToTemperature(self.cfg.temperature * self.unit.kelvin, seed)

    def restrain(self, target, ps: float, seed: int) -> None:
        """Hold (phi, psi) near ``target`` for ``ps`` picoseconds, then release."""
        for i, q in enumerate(self.idx):
            self.restraint.setTorsionParameters(i, *[int(a) for a in q], [float(target[i])])
        self.restraint.updateParametersInContext(self.context)
        self.context.setParameter("k_restraint", self.cfg.restraint_kj)
        self._velocities(seed)
        self.integrator.step(int(round(ps * 1000.0 / self.cfg.timestep_fs)))
        self.context.setParameter("k_restraint", 0.0)

    def record(self, n_obs: int) -> np.ndarray:
        """(n_obs, 2) dihedrals every ``save_ps``, the first one now; progress is reported
        every 1,000 saves (see :func:`run_jobs`)."""
        out = np.empty((n_obs, 2))
        out[0] = self.angles()
        for k in range(1, n_obs):
            self.integrator.step(self.cfg.steps_per_save)
            out[k] = self.angles()
            if k % 1000 == 0:
                _report(1000 * self.cfg.save_ps)
        return out


#: In a worker process: where it reports simulated ps while a job runs, and the job's key.
_WORKER: dict = {"queue": None, "key": None}


def _report(ps: float) -> None:
    if _WORKER["queue"] is not None:
        _WORKER["queue"].put((_WORKER["key"], float(ps)))


def _job(args) -> tuple[str, int, np.ndarray, float]:
    """Run one job in a worker: ('burst', target, n_obs) / ('long', n_obs) /
    ('fixed', positions, n_runs, n_obs); returns (kind, key, array, seconds)."""
    kind, key, cfg_dict, seed, payload = args
    _WORKER["key"] = key
    t0 = time.perf_counter()
    sim = _worker_sim(MDConfig(**cfg_dict), seed)
    if kind == "burst":
        target, n_obs, reps = payload
        out = []
        for r in range(reps):
            sim.context.setPositions(sim.minimized)
            sim.restrain(target, sim.cfg.equilibrate_ps, seed * 1000 + r)
            out.append(sim.record(n_obs))
        arr = np.stack(out)
    elif kind == "long":
        (n_obs,) = payload
        sim.context.setPositions(sim.minimized)
        sim._velocities(seed)
        sim.integrator.step(int(round(10.0 * 1000.0 / sim.cfg.timestep_fs)))  # 10 ps
        arr = sim.record(n_obs)[None]
    else:
        positions, n_runs, n_obs = payload
        out = []
        for r in range(n_runs):
            sim.context.setPositions(positions)
            sim._velocities(seed * 1000 + r)
            out.append(sim.record(n_obs))
        arr = np.stack(out)
    return kind, key, arr, time.perf_counter() - t0


_SIM: dict = {}


def _worker_sim(cfg: MDConfig, seed: int) -> Alanine:
    """The worker's context (built once per process and settings); its integrator's
    random stream is reseeded for each job."""
    key = tuple(sorted(asdict(cfg).items()))
    if key not in _SIM:
        _SIM.clear()
        _SIM[key] = Alanine(cfg, seed, threads=1)
    sim = _SIM[key]
    sim.integrator.setRandomNumberSeed(int(seed) % 2**31 or 1)
    sim.context.reinitialize(preserveState=True)
    return sim


def run_jobs(jobs: list, cfg: MDConfig, workers: int, desc: str) -> dict:
    """Run MD jobs ``(kind, key, seed, payload, ps)`` on ``workers`` processes with a
    progress bar of the simulated ns and the ns/day (moving while long jobs run: the
    workers report every 1,000 saves); returns key -> array."""
    from tqdm.auto import tqdm

    total = sum(j[4] for j in jobs) / 1000.0
    out, t0 = {}, time.perf_counter()
    args = [(kind, key, asdict(cfg), seed, payload) for kind, key, seed, payload, _ in jobs]
    ps = {j[1]: j[4] for j in jobs}
    credited = dict.fromkeys(ps, 0.0)  # ns of each job already on the bar
    fmt = "{l_bar}{bar}| {n:.2f}/{total:.2f} ns [{elapsed}<{remaining}{postfix}]"

    def credit(bar, key, ns: float) -> None:
        ns = min(ns, ps[key] / 1000.0 - credited[key])
        credited[key] += ns
        bar.update(ns)
        done = sum(credited.values())
        bar.set_postfix(ns_per_day=f"{done / (time.perf_counter() - t0) * 86400:.0f}")

    with tqdm(total=total, desc=desc, bar_format=fmt) as bar:
        if workers <= 1:
            for _kind, key, arr, _sec in map(_job, args):
                out[key] = arr
                credit(bar, key, ps[key] / 1000.0)
        else:
            _run_pool(args, workers, out, lambda key, ns: credit(bar, key, ns), ps)
    out["_seconds"] = time.perf_counter() - t0
    out["_ns"] = total
    return out


def _run_pool(args, workers: int, out: dict, credit, ps: dict) -> None:
    """The jobs on a process pool; ``credit(key, ns)`` as workers report and finish."""
    import multiprocessing
    import queue as queues
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    reports = multiprocessing.get_context().Queue()
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(reports,))
    try:
        pending = {pool.submit(_job, a) for a in args}
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            with contextlib.suppress(queues.Empty):
                while True:
                    key, done_ps = reports.get_nowait()
                    credit(key, done_ps / 1000.0)
            for f in finished:
                _kind, key, arr, _sec = f.result()
                out[key] = arr
                credit(key, ps[key] / 1000.0)
    finally:
        pool.shutdown(cancel_futures=True)


def _init_worker(reports) -> None:
    os.environ.setdefault("OPENMM_CPU_THREADS", "1")
    _WORKER["queue"] = reports


def quiet_import(module: str):
    """Import ``module`` with its import-time banners (openmmtools' pymbar prints several
    about JAX) kept off the terminal."""
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return require(module)


def start_configuration(cfg: MDConfig, target, seed: int = 0, ps: float = 5.0) -> np.ndarray:
    """Positions after ``ps`` of restrained dynamics near ``target`` (phi, psi): the common
    start of a fixed-start ensemble."""
    sim = Alanine(cfg, seed, threads=1)
    sim.restrain(target, ps, seed)
    return sim.positions()


def check_hmr(ps: float = 200.0, seed: int = 0) -> dict:
    """Short runs with and without hydrogen mass repartitioning: the fraction of time in
    each basin and the mean (cos, sin) of the dihedrals, for the report."""
    from .msm import basin_fractions

    rows = {}
    for label, cfg in (
        ("hmr 4 fs", MDConfig()),
        ("plain 2 fs", MDConfig(hydrogen_mass=None, timestep_fs=2.0)),
    ):
        sim = Alanine(cfg, seed)
        sim._velocities(seed)
        x = sim.record(int(ps / cfg.save_ps))
        rows[label] = {"basins": basin_fractions(x), "ps": ps}
    return rows
