"""How do cost and accuracy scale with the number of slow and fast variables? (ring system)

For each size (ell slow, N fast variables, N >= ell) of the ring of coupled double wells
(:func:`slowflow.systems.ring.make_ring`; its averaged equation is known in closed form):

  * numba compile time of the simulator's kernel (first call, includes one tiny run);
  * simulator throughput in path-substeps/s (the training bursts, timed after compiling);
  * training time of the default preset, ``slowflow.fit(data, "default",
    max_minutes=--minutes)``, on ``--n-traj`` bursts of T = 1 at Delta = 0.01;
  * rollout throughput (path-steps/s) of the learned map;
  * W1/floor per component (time average over the horizon, and at ``--times``) of the
    rollout against two independent reference ensembles of the full system from the
    system's start x0, as in ``slowflow reproduce`` (floor = W1 between the two references,
    see slowflow.evaluate.metrics.w1_report); the averaged equation is scored the same way
    as the theory's answer.

Usage: ``python benchmarks/dimension.py [--ells 1,2,5,10] [--n-fast 10,100] [--minutes 0.5]
[--n-traj 2000] [--n-ref 2000] [--horizon 2] [--quick]``. ``--quick`` is a smoke run of a
few seconds per size. Writes ``benchmarks/results/dimension.json`` and ``dimension.png``.
Run on a quiet machine: the training budget and the throughputs are wall-clock figures.
On a shared machine use ``--threads 1``: with two torch threads, another process on one
of two cores made rollouts of the same model about 70x slower (threads wait at barriers).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

import numpy as np
import torch

from _common import RESULTS, machine, write_json
from slowflow import fit
from slowflow.evaluate import metrics
from slowflow.rollout import predict as rollout
from slowflow.simulate import simulate_bursts, simulate_ensemble, simulate_paths
from slowflow.systems import get_system
from slowflow.systems.ring import make_ring


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def _triad_rate(paths: int, steps: int) -> float:
    """Path-substeps/s of the 3-variable triad on the same machine, for comparison."""
    triad = get_system("triad")
    s0 = np.zeros((paths, 3))
    simulate_paths(triad, s0[:4], 1, 0.01, 100, progress=False)
    t0 = time.perf_counter()
    simulate_paths(triad, s0, steps, 0.01, 100, seed=1, progress=False)
    return paths * steps * 100 / (time.perf_counter() - t0)


def run_size(ell: int, n_fast: int, args) -> dict:
    system = make_ring(ell, n_fast)
    dt = system.dt_obs
    n_steps = round(args.horizon / dt)
    s0 = np.asarray(system.train_box)[:, 0][None, :].repeat(4, axis=0)
    t0 = time.perf_counter()
    simulate_paths(system, s0, 1, dt, 100, progress=False)
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    train = simulate_bursts(system, args.n_traj, t_end=1.0, seed=args.seed, progress=False)
    sim_s = time.perf_counter() - t0
    sim_rate = args.n_traj * 100 * 100 / sim_s
    ref_a = simulate_ensemble(
        system, n_paths=args.n_ref, t_end=args.horizon, seed=args.seed + 2000, progress=False
    ).x
    ref_b = simulate_ensemble(
        system, n_paths=args.n_ref, t_end=args.horizon, seed=args.seed + 3000, progress=False
    ).x
    avg = simulate_ensemble(
        system.averaged,
        x0=system.x0,
        n_paths=args.n_ref,
        t_end=args.horizon,
        seed=args.seed + 4000,
        progress=False,
    ).x

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    model = fit(train, "default", max_minutes=args.minutes, seed=args.seed, progress=False)
    train_s = time.perf_counter() - t0
    rollout(model, np.asarray(system.x0), 2, 16, seed=0)  # warm-up, not timed
    t0 = time.perf_counter()
    pred = rollout(model, np.asarray(system.x0), n_steps, args.n_ref, seed=args.seed + 5000)
    roll_rate = args.n_ref * n_steps / (time.perf_counter() - t0)

    rep = metrics.w1_report(pred, ref_a, ref_b, dt, args.times)
    rep_avg = metrics.w1_report(avg, ref_a, ref_b, dt, args.times)
    h = model.history
    return {
        "ell": ell,
        "n_fast": n_fast,
        "dim": system.dim,
        "system": system.name,
        "x0": list(system.x0),
        "numba_compile_seconds": compile_s,
        "simulate_seconds_bursts": sim_s,
        "simulator_path_substeps_per_s": sim_rate,
        "simulator_component_substeps_per_s": sim_rate * system.dim,
        "train_seconds": train_s,
        "epochs": len(h.get("epoch", [])),
        "stop_reason": h.get("stop_reason"),
        "best_val_nll": h.get("best_val_nll"),
        "n_parameters": model.n_parameters(),
        "torch_threads": threads,
        "rollout_path_steps_per_s": roll_rate,
        "times": list(args.times),
        "w1_ratio_time_avg": [float(v) for v in rep["ratio_time_avg"]],
        "w1_ratio_at_times": np.asarray(rep["ratio_at_times"]).tolist(),
        "floor_time_avg": [float(v) for v in rep["floor_time_avg"]],
        "averaged_w1_ratio_time_avg": [float(v) for v in rep_avg["ratio_time_avg"]],
        "averaged_w1_ratio_at_times": np.asarray(rep_avg["ratio_at_times"]).tolist(),
        "load_average_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _fmt_list(values, spec=".2f") -> str:
    return " / ".join(format(v, spec) for v in values)


def table(rows: list[dict]) -> str:
    """The markdown table of a run (one row per size)."""
    out = [
        "| ell | N | d | simulator path-substeps/s | numba compile s | train s (epochs) | "
        "rollout path-steps/s | W1/floor per component (time avg) | averaged equation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['ell']} | {r['n_fast']} | {r['dim']} | "
            f"{r['simulator_path_substeps_per_s']:.3g} | {r['numba_compile_seconds']:.1f} | "
            f"{r['train_seconds']:.0f} ({r['epochs']}) | {r['rollout_path_steps_per_s']:.3g} | "
            f"{_fmt_list(r['w1_ratio_time_avg'])} | {_fmt_list(r['averaged_w1_ratio_time_avg'])} |"
        )
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ells", default="1,2,5,10")
    ap.add_argument("--n-fast", default="10,100")
    ap.add_argument("--minutes", type=float, default=0.5, help="training budget per size")
    ap.add_argument("--n-traj", type=int, default=2000, help="training bursts (T = 1)")
    ap.add_argument("--n-ref", type=int, default=2000, help="paths per ensemble")
    ap.add_argument("--horizon", type=float, default=2.0)
    ap.add_argument("--times", default="0.5,1,2")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes and budgets")
    ap.add_argument("--out", default=None, help="output folder (default benchmarks/results)")
    args = ap.parse_args()
    if args.quick:
        args.ells, args.n_fast, args.minutes = "1,2", "4", 0.05
        args.n_traj, args.n_ref, args.horizon, args.times = 200, 300, 0.5, "0.25,0.5"
    args.times = _floats(args.times)
    sizes = [(ell, n) for n in _ints(args.n_fast) for ell in _ints(args.ells) if n >= ell]
    t_start = time.perf_counter()
    triad = _triad_rate(2000 if args.quick else 10_000, 10 if args.quick else 50)
    print(f"baseline: triad (d = 3) {triad:.3g} path-substeps/s", flush=True)
    rows = []
    for ell, n_fast in sizes:
        row = run_size(ell, n_fast, args)
        rows.append(row)
        print(
            f"ell {ell:2d} N {n_fast:3d}: compile {row['numba_compile_seconds']:.1f} s, "
            f"simulator {row['simulator_path_substeps_per_s']:.3g} path-substeps/s, "
            f"train {row['train_seconds']:.0f} s ({row['epochs']} epochs), "
            f"rollout {row['rollout_path_steps_per_s']:.3g} path-steps/s, W1/floor "
            f"{_fmt_list(row['w1_ratio_time_avg'])} (averaged eq. "
            f"{_fmt_list(row['averaged_w1_ratio_time_avg'])})",
            flush=True,
        )
    payload = {
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "machine": machine(),
        "settings": {
            k: getattr(args, k)
            for k in ("minutes", "n_traj", "n_ref", "horizon", "times", "seed", "quick")
        },
        "baseline_triad_path_substeps_per_s": triad,
        "total_seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    name = "dimension_quick" if args.quick else "dimension"
    print("wrote", write_json(name, payload, args.out))
    print(table(rows))
    _figure(rows, args.out, name)


def _figure(rows: list[dict], out, name: str) -> None:
    from pathlib import Path

    from matplotlib.figure import Figure

    from slowflow.evaluate.plots import save_figure

    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    for k, n_fast in enumerate(sorted({r["n_fast"] for r in rows})):
        sub = sorted((r for r in rows if r["n_fast"] == n_fast), key=lambda r: r["ell"])
        ell = [r["ell"] for r in sub]
        c = f"C{k}"
        axes[0].plot(ell, [r["simulator_path_substeps_per_s"] for r in sub], "o-", c=c,
                     label=f"simulator (path-substeps/s), N = {n_fast}")  # fmt: skip
        axes[0].plot(ell, [r["rollout_path_steps_per_s"] for r in sub], "s--", c=c,
                     label=f"rollout (path-steps/s), N = {n_fast}")  # fmt: skip
        axes[1].plot(ell, [r["train_seconds"] for r in sub], "o-", c=c, label=f"N = {n_fast}")
        axes[2].plot(ell, [max(r["w1_ratio_time_avg"]) for r in sub], "o-", c=c,
                     label=f"default preset, worst component, N = {n_fast}")  # fmt: skip
        axes[2].plot(ell, [float(np.median(r["w1_ratio_time_avg"])) for r in sub], "o:", c=c,
                     label=f"default preset, median component, N = {n_fast}")  # fmt: skip
        axes[2].plot(ell, [max(r["averaged_w1_ratio_time_avg"]) for r in sub], "x--", c=c,
                     label=f"averaged equation, worst component, N = {n_fast}")  # fmt: skip
    axes[0].set_yscale("log")
    axes[0].set_title("throughput")
    axes[1].set_title("training time of the default preset")
    axes[1].set_ylabel("seconds")
    axes[2].axhline(1, color="k", lw=0.8)
    axes[2].set_title("W1/floor, time average (1 = noise floor)")
    axes[1].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xticks(
            sorted({r["ell"] for r in rows}), [str(v) for v in sorted({r["ell"] for r in rows})]
        )
        ax.minorticks_off()
        ax.set_xlabel("slow variables ell")
        ax.legend(fontsize=7)
    save_figure(fig, Path(out or RESULTS) / f"{name}.png")


if __name__ == "__main__":
    main()
