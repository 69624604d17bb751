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
[--only eps,dt,noise] [--seed 0] [--out DIR]``. Writes ``benchmarks/results/sweep.json`` and
``sweep.png``. Runs with several ``--seed`` values (each its own ``--out``) are combined by
``python benchmarks/sweep.py --collect A/sweep.json,B/sweep.json,...``: medians and ranges
(``sweep_seeds.json``, ``sweep.png``) and a markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from pathlib import Path

import numpy as np

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
            "seed": args.seed,
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
    ap.add_argument(
        "--collect",
        default=None,
        help="comma-separated sweep.json files of runs with other --seed values: write their "
        "medians (sweep_seeds.json, sweep.png) and print the table; computes nothing",
    )
    args = ap.parse_args()
    if args.collect:
        _collect(args.collect.split(","), args.out)
        return
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


def _collect(paths: list[str], out) -> None:
    """Medians over the runs of each point and model: W1/floor (with the range), the
    calibration verdicts, the memory chosen, and the fit's seconds."""
    import json
    import statistics

    runs = [json.loads(Path(p).read_text()) for p in paths]
    groups: dict = {}
    for run in runs:
        for r in run["rows"]:
            key = (r["study"], r["system"], r["eps"], r["dt"], r["noise"], r["model"])
            groups.setdefault(key, []).append(r)
    merged = []
    for (study, system, eps, dt, noise, model), rs in groups.items():
        w1 = [r["w1_ratio"][0] for r in rs]
        merged.append({
            "study": study, "system": system, "eps": eps, "dt": dt, "noise": noise,
            "model": model, "seeds": [r.get("seed") for r in rs], "w1_runs": w1,
            "w1_ratio": [statistics.median(w1)], "w1_range": [min(w1), max(w1)],
            "calibrated_runs": [r["calibrated"] for r in rs],
            "calibrated": all(r["calibrated"] for r in rs),
            "memory_runs": [r["memory"] for r in rs],
            "fit_seconds_runs": [r["fit_seconds"] for r in rs],
        })  # fmt: skip
    payload = {"machine": machine(), "sources": paths, "rows": merged}
    print("wrote", write_json("sweep_seeds", payload, out))
    _figure(merged, out)
    print(_table(merged))


def _table(rows: list[dict]) -> str:
    """Markdown: per point, each model's median W1/floor (range), verdicts, K and fit s."""
    import statistics

    out = [
        "| study | system | eps | Delta | noise | model | W1/floor median (range) | calibrated |"
        " K chosen | fit s (median) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["w1_range"]
        cal = f"{sum(r['calibrated_runs'])}/{len(r['calibrated_runs'])}"
        ks = ", ".join(str(k) for k in r["memory_runs"])
        out.append(
            f"| {r['study']} | {r['system']} | {r['eps']:g} | {r['dt']:g} | {r['noise']:.0%} | "
            f"{r['model']} | {r['w1_ratio'][0]:.2f} ({lo:.2f}-{hi:.2f}) | {cal} | {ks} | "
            f"{statistics.median(r['fit_seconds_runs']):.1f} |"
        )
    return "\n".join(out)


def _eps_panel(ax, rows) -> None:
    for (name, marker), (model, ls) in itertools.product(
        (("skew_product", "o"), ("exp_ou", "s")), (("default", "-"), ("markov", "--"))
    ):
        sub = [r for r in rows if r["system"] == name and r["model"] == model]
        if sub:
            ax.loglog(
                [r["eps"] for r in sub],
                [r["w1_ratio"][0] for r in sub],
                marker=marker,
                ls=ls,
                label=f"{name} {model}",
            )
            for r in sub:
                if not r["calibrated"]:
                    ax.plot(r["eps"], r["w1_ratio"][0], "x", color="k", ms=10)
    ax.axvline(0.01, color="grey", lw=0.8, ls="-.")  # eps = Delta
    ax.set_xlabel("eps (dash-dot: eps = Delta)")
    ax.set_title("eps sweep (x: check flags it, on any seed)")
    ax.legend(fontsize=8)


def _dt_panel(ax, rows) -> None:
    for model, ls in (("default", "-"), ("markov", "--")):
        sub = [r for r in rows if r["model"] == model]
        if sub:
            ax.semilogx([r["dt"] for r in sub], [r["w1_ratio"][0] for r in sub], "o", ls=ls,
                        label=model)  # fmt: skip
            for r in sub:
                if not r["calibrated"]:
                    ax.plot(r["dt"], r["w1_ratio"][0], "x", color="k", ms=10)
    ax.set_xlabel("observation step Delta")
    ax.set_title("Delta sweep, skew_product (x: flagged)")
    ax.legend(fontsize=8)


def _noise_panel(ax, rows) -> None:
    for name in ("skew_product", "triad"):
        for model, ls in (("default", "-"), ("markov", "-."), ("km", "--")):
            sub = [r for r in rows if r["system"] == name and r["model"] == model]
            if sub:
                ax.plot([100 * r["noise"] for r in sub], [r["w1_ratio"][0] for r in sub],
                        ls=ls, marker="o", label=f"{name} {model}")  # fmt: skip
    ax.set_xlabel("measurement noise (% of the slow variable's std)")
    ax.set_title("noisy training data")
    ax.legend(fontsize=8)


def _figure(rows, out) -> None:
    """One panel per study that was run: W1/floor of x against the swept setting."""
    from matplotlib.figure import Figure

    from slowflow.evaluate.plots import save_figure

    panels = [
        (study, draw)
        for study, draw in (("eps", _eps_panel), ("dt", _dt_panel), ("noise", _noise_panel))
        if any(r["study"] == study for r in rows)
    ]
    if not panels:
        return
    fig = Figure(figsize=(5.4 * len(panels), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (study, draw) in zip(axes, panels, strict=True):
        draw(ax, [r for r in rows if r["study"] == study])
        ax.set_ylabel("W1/floor (time avg)")
        ax.axhline(1, color="k", lw=0.8)
        ax.axhline(2, color="k", lw=0.8, ls=":")
    save_figure(fig, Path(out or RESULTS) / "sweep.png")


if __name__ == "__main__":
    main()
