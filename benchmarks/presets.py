"""Which preset is most accurate for a given training time? (chooses the default preset)

For an ell = 1 example (ex4.1, multiplicative noise) and an ell = 2 example (ex4.5,
non-Gaussian marginals), every preset is trained on the same 10,000 paper-size bursts under
the same wall-clock budget, then scored by
  * held-out NLL (nats per pair, on 1,000 independent bursts),
  * time-averaged W1/floor per component of a rollout from the paper's start against two
    independent reference ensembles (see slowflow.evaluate.metrics.w1_report),
  * the held-out calibration check's verdict,
  * rollout path-steps per second.

Usage: ``python benchmarks/presets.py [--minutes 1.5] [--examples ex4.1,ex4.5]
[--presets paper,gaussian,maf,nsf,coupling] [--n-ref 5000]``.
Writes ``benchmarks/results/presets.json`` and ``presets.png``. Run on a quiet machine:
the budget is wall-clock time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import RESULTS, machine, write_json
from slowflow.data import make_pairs
from slowflow.evaluate import calibration, metrics
from slowflow.rollout import predict
from slowflow.simulate import simulate_bursts, simulate_ensemble
from slowflow.systems import get_system
from slowflow.train import TrainConfig, evaluate_nll, fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=1.5)
    ap.add_argument("--examples", default="ex4.1,ex4.5")
    ap.add_argument("--presets", default="paper,gaussian,maf,nsf,coupling")
    ap.add_argument("--n-ref", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for ex in args.examples.split(","):
        system = get_system(ex)
        train = simulate_bursts(system, seed=args.seed)
        held = simulate_bursts(system, 1000, seed=args.seed + 1000)
        ref_a = simulate_ensemble(system, n_paths=args.n_ref, seed=args.seed + 2000).x
        ref_b = simulate_ensemble(system, n_paths=args.n_ref, seed=args.seed + 3000).x
        h0, h1 = (torch.as_tensor(a, dtype=torch.float32) for a in make_pairs(held))
        n_steps = ref_a.shape[1] - 1
        for preset in args.presets.split(","):
            t0 = time.perf_counter()
            model = fit(
                train,
                preset,
                TrainConfig(epochs=1000, patience=1000, max_minutes=args.minutes, seed=args.seed),
                progress=False,
            )
            train_s = time.perf_counter() - t0
            nll = evaluate_nll(model, h0, h1)
            t0 = time.perf_counter()
            pred = predict(
                model, np.asarray(system.x0), n_steps, args.n_ref, seed=1, progress=False
            )
            roll = args.n_ref * n_steps / (time.perf_counter() - t0)
            rep = metrics.w1_report(pred, ref_a, ref_b, system.dt_obs)
            cal = calibration.check_calibration(
                model, held, max_lead=10, n_starts=1000, n_members=50
            )
            row = {
                "example": ex,
                "preset": preset,
                "train_seconds": train_s,
                "epochs": len(model.history["epoch"]),
                "heldout_nll": nll,
                "w1_ratio": [float(v) for v in rep["ratio_time_avg"]],
                "calibrated": cal.calibrated,
                "pit_dispersion_max": float(np.max(np.abs(cal.pit_dispersion - 1))),
                "rollout_path_steps_per_s": roll,
                "n_parameters": model.n_parameters(),
            }
            rows.append(row)
            print(
                f"{ex} {preset:9s} epochs {row['epochs']:3d} NLL {nll:.4f} W1/floor "
                f"{', '.join(f'{v:.2f}' for v in row['w1_ratio'])} calibrated {cal.calibrated} "
                f"rollout {roll:.3g}/s",
                flush=True,
            )
    payload = {"machine": machine(), "minutes": args.minutes, "rows": rows}
    print("wrote", write_json("presets", payload, args.out))
    _figure(rows, args.out)


def _figure(rows, out) -> None:
    from pathlib import Path

    from matplotlib.figure import Figure

    from slowflow.evaluate.plots import save_figure

    exs = sorted({r["example"] for r in rows})
    fig = Figure(figsize=(5.5 * len(exs), 3.8), layout="constrained")
    axes = fig.subplots(1, len(exs), squeeze=False)
    for ax, ex in zip(axes[0], exs):
        sub = [r for r in rows if r["example"] == ex]
        x = np.arange(len(sub))
        ax.bar(x, [max(r["w1_ratio"]) for r in sub], color="C0")
        ax.axhline(1, color="k", lw=0.8)
        ax.set_xticks(x, [r["preset"] for r in sub])
        ax.set_ylabel("worst component W1/floor (1 = noise floor)")
        ax.set_title(f"{ex}: equal training time")
    save_figure(fig, Path(out or RESULTS) / "presets.png")


if __name__ == "__main__":
    main()
