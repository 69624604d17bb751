"""Baselines side by side: the same table as ``slowflow reproduce --models ...``, as JSON.

Usage: ``python benchmarks/compare.py [--examples all] [--models default,coupling,gaussian,km,averaged]
[--out runs/compare] [--quick]``. Runs (or reuses the cached stages of) ``slowflow reproduce``
and writes ``benchmarks/results/compare.json`` with, per example and model: W1/floor per
component, mean and relative std errors, held-out NLL, training seconds, rollout
path-steps/s and the calibration verdict.
"""

from __future__ import annotations

import argparse

from _common import machine, write_json
from slowflow.evaluate.metrics import to_jsonable
from slowflow.reproduce import reproduce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default="all")
    ap.add_argument("--models", default="default,coupling,gaussian,km,averaged")
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="folder for compare.json")
    args = ap.parse_args()
    examples = args.examples if args.examples == "all" else args.examples.split(",")
    results = reproduce(
        examples, args.out, quick=args.quick, models=args.models.split(","), seed=args.seed
    )
    rows = []
    for r in results:
        for name, e in r["models"].items():
            cal = e.get("calibration")
            rows.append(
                {
                    "example": r["system"],
                    "model": name,
                    "w1_ratio": e["w1"]["ratio_time_avg"],
                    "mean_abs_mean_error": e["mean_abs_mean_error"],
                    "mean_abs_rel_std_error": e["mean_abs_rel_std_error"],
                    "heldout_nll": e.get("heldout_nll"),
                    "train_seconds": e.get("train_seconds"),
                    "rollout_path_steps_per_s": e.get("rollout_path_steps_per_s"),
                    "calibrated": None if cal is None else cal["calibrated"],
                }
            )
    payload = {"machine": machine(), "settings": vars(args), "rows": to_jsonable(rows)}
    print("wrote", write_json("compare", payload, args.json))


if __name__ == "__main__":
    main()
