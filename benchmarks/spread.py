"""How much does W1/floor move from one run to the next? (data and training seed)

A comparison of models is only as sharp as the run-to-run spread of its score. This runs
the full-size reproduction (``slowflow.reproduce``: 10,000 training bursts, 2.5-minute
budget, 10,000-path ensembles) of the chosen examples with several seeds; a seed changes
the training bursts, the network's initialisation and shuffling, the rollout noise and
the reference ensembles. Reported per example, model and component: every seed's
W1/floor, their median, min and max, and the held-out NLL.

Usage: ``python benchmarks/spread.py [--examples ex4.3,ex4.5] [--models default,coupling]
[--seeds 0,1,2] [--runs DIR]``. Stages are cached under ``--runs`` (default
``benchmarks/results/spread_runs``), so an interrupted run resumes. Writes
``benchmarks/results/spread.json``. Run on a quiet machine (the budget is wall-clock).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import RESULTS, machine, write_json
from slowflow.reproduce import reproduce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default="ex4.3,ex4.5")
    ap.add_argument("--models", default="default,coupling")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--runs", default=str(RESULTS / "spread_runs"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    models = args.models.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    per_seed = {}
    for seed in seeds:
        results = reproduce(
            args.examples.split(","), Path(args.runs) / f"seed{seed}", models=models, seed=seed
        )
        per_seed[seed] = {r["system"]: r for r in results}
    rows = []
    for ex in per_seed[seeds[0]]:
        for m in models:
            ratios = [per_seed[s][ex]["models"][m]["w1"]["ratio_time_avg"] for s in seeds]
            nll = [per_seed[s][ex]["models"][m].get("heldout_nll") for s in seeds]
            for c in range(len(ratios[0])):
                vals = [float(r[c]) for r in ratios]
                rows.append(
                    {
                        "example": ex,
                        "model": m,
                        "component": c,
                        "seeds": seeds,
                        "w1_over_floor": vals,
                        "median": statistics.median(vals),
                        "min": min(vals),
                        "max": max(vals),
                        "heldout_nll": nll,
                    }
                )
                print(
                    f"{ex:14s} {m:9s} x{c + 1}: W1/floor "
                    + " ".join(f"{v:6.2f}" for v in vals)
                    + f"  (median {statistics.median(vals):.2f}, range {min(vals):.2f}-"
                    f"{max(vals):.2f})",
                    flush=True,
                )
    payload = {
        "machine": machine(),
        "settings": vars(args),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    print(f"wrote {write_json('spread', payload, args.out)}")


if __name__ == "__main__":
    main()
