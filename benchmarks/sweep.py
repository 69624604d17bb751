"""Where does one-step learning break? Sweeps of eps, of the observation step Delta, and of
measurement noise, each point reporting W1/floor and the calibration verdict.

* eps over three orders of magnitude on skew_product (ex4.1) and exp_ou (ex4.2);
* Delta in {0.005, 0.01, 0.05, 0.1} on skew_product (training bursts of T = 1);
* Gaussian measurement noise of 0, 1 % and 5 % of the slow variable's std added to the
  training bursts (and held-out bursts) of ex4.1 and ex4.3; references stay noise-free,
  as the question is how well the clean dynamics are recovered.

Every point: ``--n-traj`` training bursts, two ``--n-ref``-path reference ensembles from the
paper's start over its horizon, the default preset trained for ``--minutes`` (the same for
every point) both as ``slowflow fit`` does (memory K chosen from the data: ``default``) and
at K = 0 (``markov``), the Kramers-Moyal baseline for the noise study. The Euler-Maruyama substep is
refined with eps so the fast variables stay resolved (dt <= eps_fast / 20).

Usage: ``python benchmarks/sweep.py [--minutes 0.5] [--n-traj 4000] [--n-ref 4000]
[--only eps,dt,noise]``. Writes ``benchmarks/results/sweep.json`` and ``sweep.png``.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time

import numpy as np
import torch

from _common import RESULTS, machine, write_json
from slowflow.baselines import fit_kramers_moyal
from slowflow.data import Trajectories
from slowflow.evaluate import calibration, metrics
from slowflow.rollout import predict
from slowflow.simulate import simulate_bursts, simulate_ensemble
from slowflow.systems import get_system
from slowflow.train import TrainConfig, fit
from slowflow.train.memory import fit_memory_auto


def _fast_time(system) -> float:
    """Relaxation time of the fast variables, to choose the EM substep."""
    eps = system.params["eps"]
    if system.name == "triad":
        return eps**2 / 2
    return eps / system.params.get("alpha", 1.0)


def _point(system, dt_obs, args, noise=0.0, km=False, tag=""):
    t_fast = _fast_time(system)
    substeps = max(100 * round(dt_obs / 0.01), math.ceil(dt_obs / (t_fast / 20)))
    n_steps = round(system.t_end / dt_obs)
    t0 = time.perf_counter()
    train = simulate_bursts(system, args.n_traj, 1.0, dt_obs, substeps, seed=args.seed)
    held = simulate_bursts(system, 500, 1.0, dt_obs, substeps, seed=args.seed + 1)
    ref_a = simulate_ensemble(
        system, None, args.n_ref, system.t_end, dt_obs, substeps, seed=args.seed + 2
    ).x
    ref_b = simulate_ensemble(
        system, None, args.n_ref, system.t_end, dt_obs, substeps, seed=args.seed + 3
    ).x
    if noise > 0:
        rng = np.random.default_rng(args.seed + 4)
        scale = noise * np.nanstd(train.x, axis=(0, 1))
        train = Trajectories(x=train.x + scale * rng.standard_normal(train.x.shape), dt=dt_obs)
        held = Trajectories(x=held.x + scale * rng.standard_normal(held.x.shape), dt=dt_obs)
    sim_s = time.perf_counter() - t0
    out = []
    tcfg = TrainConfig(epochs=1000, patience=1000, max_minutes=args.minutes, seed=args.seed)
    kernels = []
    # default: as `slowflow fit` (memory K chosen from the data); markov: K = 0
    for name, fitter in (
        ("default", lambda: fit_memory_auto(train, None, tcfg, progress=False)),
        ("markov", lambda: fit(train, None, tcfg, memory=0, progress=False)),
    ):
        t_fit = time.perf_counter()
        model = fitter()
        t_fit = time.perf_counter() - t_fit
        pred = predict(model, np.asarray(system.x0), n_steps, args.n_ref, seed=5, progress=False)
        kernels.append((name, pred, model, t_fit))
    if km:
        t_fit = time.perf_counter()
        est = fit_kramers_moyal(train)
        t_fit = time.perf_counter() - t_fit
        pred = est.simulate(np.asarray(system.x0), n_steps, args.n_ref, seed=5)
        kernels.append(("km", pred, est.sampler(), t_fit))
    for name, p, kernel, t_fit in kernels:
        rep = metrics.w1_report(p, ref_a, ref_b, dt_obs)
        cal = calibration.check_calibration(
            kernel, held, max_lead=10, n_starts=1000, n_members=50, seed=args.seed
        )
        row = {
            "study": tag,
            "system": system.name,
            "eps": system.params["eps"],
            "dt": dt_obs,
            "noise": noise,
            "model": name,
            "memory": getattr(kernel, "memory", None),
            "substeps": substeps,
            "w1_ratio": [float(v) for v in rep["ratio_time_avg"]],
            "calibrated": cal.calibrated,
            "pit_dispersion_max_lead": float(cal.pit_dispersion[-1, 0]),
            "simulate_seconds": sim_s,
            "fit_seconds": t_fit,
        }
        out.append(row)
        print(
            f"{tag:5s} {system.name:12s} eps={row['eps']:.4g} dt={dt_obs:g} noise={noise:.0%} "
            f"{name:8s} K={row['memory']} W1/floor {row['w1_ratio'][0]:.2f} "
            f"calibrated {cal.calibrated} "
            f"(12Var(PIT) at lead 10: {row['pit_dispersion_max_lead']:.2f}), fit {t_fit:.1f} s",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=0.5)
    ap.add_argument("--n-traj", type=int, default=4000)
    ap.add_argument("--n-ref", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="eps,dt,noise")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    only = args.only.split(",")
    if "eps" in only:
        for name, values in (
            ("skew_product", (0.0005, 0.005, 0.05, 0.5)),
            ("exp_ou", (0.0001, 0.001, 0.01, 0.1)),
        ):
            for eps in values:
                rows += _point(get_system(name).with_params(eps=eps), 0.01, args, tag="eps")
    if "dt" in only:
        for dt_obs in (0.005, 0.01, 0.05, 0.1):
            rows += _point(get_system("skew_product"), dt_obs, args, tag="dt")
    if "noise" in only:
        for name in ("skew_product", "triad"):
            for noise in (0.0, 0.01, 0.05):
                rows += _point(get_system(name), 0.01, args, noise=noise, km=True, tag="noise")
    payload = {"machine": machine(), "settings": vars(args), "rows": rows}
    print("wrote", write_json("sweep", payload, args.out))
    _figure(rows, args.out)


def _figure(rows, out) -> None:
    from pathlib import Path

    from matplotlib.figure import Figure

    from slowflow.evaluate.plots import save_figure

    fig = Figure(figsize=(16, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for (name, marker), (model, ls) in itertools.product(
        (("skew_product", "o"), ("exp_ou", "s")), (("default", "-"), ("markov", "--"))
    ):
        sub = [
            r for r in rows if r["study"] == "eps" and r["system"] == name and r["model"] == model
        ]
        if sub:
            axes[0].loglog(
                [r["eps"] for r in sub],
                [r["w1_ratio"][0] for r in sub],
                marker=marker,
                ls=ls,
                label=f"{name} {model}",
            )
            for r in sub:
                if not r["calibrated"]:
                    axes[0].plot(r["eps"], r["w1_ratio"][0], "x", color="k", ms=10)
    axes[0].set_xlabel("eps")
    axes[0].set_title("eps sweep (x: calibration check flags)")
    sub = [r for r in rows if r["study"] == "dt" and r["model"] == "default"]
    if sub:
        axes[1].semilogx([r["dt"] for r in sub], [r["w1_ratio"][0] for r in sub], marker="o")
        for r in sub:
            if not r["calibrated"]:
                axes[1].plot(r["dt"], r["w1_ratio"][0], "x", color="k", ms=10)
    axes[1].set_xlabel("observation step Delta")
    axes[1].set_title("Delta sweep, skew_product (x: flagged)")
    for name in ("skew_product", "triad"):
        for model, ls in (("default", "-"), ("markov", "-."), ("km", "--")):
            sub = [
                r
                for r in rows
                if r["study"] == "noise" and r["system"] == name and r["model"] == model
            ]
            if sub:
                axes[2].plot(
                    [100 * r["noise"] for r in sub],
                    [r["w1_ratio"][0] for r in sub],
                    ls=ls,
                    marker="o",
                    label=f"{name} {model}",
                )
    axes[2].set_xlabel("measurement noise (% of the slow variable's std)")
    axes[2].set_title("noisy training data")
    for ax in axes:
        ax.set_ylabel("W1/floor (time avg)")
        ax.axhline(1, color="k", lw=0.8)
        ax.axhline(2, color="k", lw=0.8, ls=":")
    axes[0].legend()
    axes[2].legend(fontsize=8)
    save_figure(fig, Path(out or RESULTS) / "sweep.png")


if __name__ == "__main__":
    main()
