"""Rollout throughput of the learned map: path-steps per second, ell = 1 and 2, per preset.

Usage: ``python benchmarks/rollout.py [--paths 100000] [--steps 20] [--repeats 3]``.
Writes ``benchmarks/results/rollout.json``. Targets (issue 3) with the default preset on a
2-core CPU: >= 1e6 path-steps/s for ell = 1 and >= 5e5 for ell = 2. The cost of sampling
does not depend on the values of the weights, so freshly initialised models (with
non-trivial random weights in the last layers) are timed; the median of the repeats is
reported with the torch thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import machine, write_json
from slowflow.model.config import DEFAULT_PRESET, PRESETS, get_preset
from slowflow.model.flowmap import build_model
from slowflow.rollout import predict


def _randomize(model) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=100_000)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presets", default=",".join(["default", *PRESETS]))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.presets.split(","):
        for d in (1, 2):
            model = build_model(get_preset(name), d, 0.01)
            _randomize(model)
            predict(model, [0.5] * d, 2, 1000, progress=False)  # warm-up
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                predict(model, [0.5] * d, args.steps, args.paths, seed=r, progress=False)
                times.append(time.perf_counter() - t0)
            rate = args.paths * args.steps / statistics.median(times)
            rows.append(
                {
                    "preset": name,
                    "resolved": DEFAULT_PRESET if name == "default" else name,
                    "d": d,
                    "path_steps_per_s": rate,
                    "seconds": times,
                }
            )
            print(f"{name:9s} d={d}: {rate:.3g} path-steps/s")
    default = {r["d"]: r["path_steps_per_s"] for r in rows if r["preset"] == "default"}
    payload = {
        "machine": machine(),
        "paths": args.paths,
        "steps": args.steps,
        "rows": rows,
        "targets": {"1": 1e6, "2": 5e5},
        "default_meets_targets": bool(
            default and default.get(1, 0) >= 1e6 and default.get(2, 0) >= 5e5
        ),
    }
    print("wrote", write_json("rollout", payload, args.out))


if __name__ == "__main__":
    main()
