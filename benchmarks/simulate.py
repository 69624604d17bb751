"""Ground-truth simulator throughput: path-substeps per second for every built-in system.

Usage: ``python benchmarks/simulate.py [--paths 10000] [--steps 100] [--repeats 3]``.
Writes ``benchmarks/results/simulate.json``. Target (issue 2): >= 5e7 path-substeps/s on
the 3-variable systems on a 2-core machine. Compilation is excluded (one warm-up call);
the median of ``--repeats`` runs is reported, and the thread count is recorded.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from _common import machine, write_json
from slowflow.simulate import simulate_paths
from slowflow.systems import list_systems


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--steps", type=int, default=100, help="observation steps (100 substeps each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = {}
    for system in list_systems():
        rng = np.random.default_rng(0)
        box = np.asarray(system.train_box)
        s0 = rng.uniform(box[:, 0], box[:, 1], size=(args.paths, system.dim))
        simulate_paths(system, s0[:16], 2, 0.01, 100, seed=0, progress=False)  # compile
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            simulate_paths(system, s0, args.steps, 0.01, 100, seed=r, progress=False)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        rate = args.paths * args.steps * 100 / med
        rows[system.name] = {
            "dim": system.dim,
            "median_seconds": med,
            "path_substeps_per_s": rate,
            "all_seconds": times,
        }
        print(f"{system.name:14s} d={system.dim}  {rate:.3g} path-substeps/s  (median {med:.2f} s)")
    three = [r["path_substeps_per_s"] for r in rows.values() if r["dim"] == 3]
    payload = {
        "machine": machine(),
        "paths": args.paths,
        "steps": args.steps,
        "substeps": 100,
        "systems": rows,
        "min_rate_3var": min(three),
        "target_3var": 5e7,
        "meets_target": min(three) >= 5e7,
    }
    print(
        f"3-variable systems: min {min(three):.3g} path-substeps/s (target 5e7) -> "
        f"{'met' if payload['meets_target'] else 'MISSED'}"
    )
    print("wrote", write_json("simulate", payload, args.out))


if __name__ == "__main__":
    main()
