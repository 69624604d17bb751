"""Large ensembles: 10^6 paths x 1,000 steps streamed to disk, then read back chunk-wise.

Usage::

    python benchmarks/large_ensemble.py [--n-paths 1000000] [--steps 1000]
        [--runs 1:1,2:10] [--dir DIR] [--keep] [--threads N] [--out RESULTS_DIR]

For every run ``d:every`` (d = 1: the double well, d = 2: the oscillator, ex4.5) a default-
preset model is fitted in a few seconds on 2,000 short bursts (the rollout's cost does not
depend on how well it is trained), then :func:`slowflow.rollout.predict_to_file` rolls
``--n-paths`` paths over ``--steps`` steps from the system's test start into an ``.npy``
file, keeping every ``every``-th step. Reported per run: path-steps per second, the peak
resident memory of the rollout (VmHWM, reset before it where Linux allows) against the
file size, and the times of the chunk-wise metrics: one scan of the file (means and stds of
every step, every path's values at 4 times), the exact W1 at those 4 times against a second
ensemble of the same size (another seed; only for the first run, which doubles its rollout
cost) and the autocorrelation up to lag 50 (one more pass). The files are deleted at the
end unless ``--keep``. Writes ``benchmarks/results/large_ensemble.json``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from _common import machine, write_json

SYSTEMS = {1: "double_well", 2: "oscillator"}


def _status(key: str) -> int | None:
    """A memory figure of this process from /proc/self/status, in bytes (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak() -> int:
    hwm = _status("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _model(d: int, threads: int):
    import slowflow as sf

    system = sf.get_system(SYSTEMS[d])
    data = sf.simulate_bursts(system, n_traj=2000, t_end=1.0, seed=0)
    torch.set_num_threads(threads)  # the numba simulator resets torch's thread count
    t0 = time.perf_counter()
    model = sf.fit(data, "default", epochs=8, max_minutes=0.5, progress=False)
    return system, model, time.perf_counter() - t0


def _rollout(model, x0, args, path: Path, every: int, seed: int) -> dict:
    from slowflow.rollout import predict_to_file

    reset = _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = predict_to_file(
            model,
            x0,
            args.steps,
            path,
            n_paths=args.n_paths,
            seed=seed,
            chunk_paths=args.chunk_paths,
            every=every,
            progress=False,
        )
    seconds = time.perf_counter() - t0
    peak = _peak()
    return {
        "seconds": seconds,
        "path_steps_per_s": args.n_paths * args.steps / seconds,
        "file_bytes": path.stat().st_size,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "peak_rss_growth_bytes": peak - before if reset and before is not None else None,
        "peak_is_of_rollout_only": reset,
        "chunk_buffer_bytes": min(args.chunk_paths, args.n_paths)
        * (args.steps // every + 1)
        * model.dim
        * 4,
        "nonfinite_paths": summary.nonfinite_paths,
        "outside_fraction": summary.outside_fraction,
        "warnings": [str(w.message) for w in caught],
    }


def _metrics(path: Path, other: Path | None, n_time: int) -> dict:
    from slowflow.evaluate import metrics

    steps = [round(f * (n_time - 1)) for f in (0.25, 0.5, 0.75, 1.0)]
    reset = _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    scan = metrics.scan_ensemble(path, steps, name=str(path.name))
    out = {
        "steps": steps,
        "scan_seconds": time.perf_counter() - t0,
        "mean_at_steps": scan.mean[steps],
        "std_at_steps": scan.std[steps],
        "quantiles_5_50_95_at_steps": scan.quantiles([0.05, 0.5, 0.95]),
    }
    if other is not None:
        t0 = time.perf_counter()
        scan_b = metrics.scan_ensemble(other, steps, moments=False, name=str(other.name))
        w1 = metrics.scan_w1(scan, scan_b)
        out["w1_second_scan_and_w1_seconds"] = time.perf_counter() - t0
        out["w1_between_seeds_at_steps"] = w1
        del scan_b
    lag = min(50, n_time - 1)
    t0 = time.perf_counter()
    acf = metrics.scan_autocorrelation(path, lag, scan.mean, name=str(path.name))
    out["autocorrelation_seconds"] = time.perf_counter() - t0
    out["autocorrelation_at_lag"] = {str(lag): acf[lag]}
    peak = _peak()
    out["peak_rss_growth_bytes"] = peak - before if reset and before is not None else None
    out["slices_bytes"] = scan.slices.nbytes
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-paths", type=int, default=1_000_000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument(
        "--runs", default="1:1,2:10", help="comma list of d:every (d = 1 or 2), e.g. 1:1,2:10"
    )
    ap.add_argument("--chunk-paths", type=int, default=65_536)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--dir", default=None, help="folder for the big files (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the .npy files")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    runs = [tuple(int(v) for v in r.split(":")) for r in args.runs.split(",")]
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="slowflow-big-"))
    folder.mkdir(parents=True, exist_ok=True)
    rows, made = [], []
    try:
        for i, (d, every) in enumerate(runs):
            system, model, fit_seconds = _model(d, args.threads)
            torch.set_num_threads(args.threads)
            x0 = np.asarray(system.x0, dtype=float)
            path = folder / f"large_d{d}_every{every}.npy"
            made.append(path)
            print(f"d={d} every={every}: rolling out {args.n_paths} x {args.steps} ...")
            roll = _rollout(model, x0, args, path, every, seed=1)
            other = None
            if i == 0:  # a second ensemble of the same size, for W1 between big ensembles
                other = folder / f"large_d{d}_every{every}_seed2.npy"
                made.append(other)
                roll["second_ensemble"] = _rollout(model, x0, args, other, every, seed=2)
            met = _metrics(path, other, args.steps // every + 1)
            row = {
                "d": d,
                "system": system.name,
                "x0": x0,
                "every": every,
                "n_paths": args.n_paths,
                "steps": args.steps,
                "chunk_paths": args.chunk_paths,
                "fit_seconds": fit_seconds,
                "rollout": roll,
                "metrics": met,
            }
            rows.append(row)
            print(
                f"d={d} every={every}: {roll['path_steps_per_s']:.3g} path-steps/s, "
                f"{roll['seconds']:.0f} s, file {roll['file_bytes'] / 1e9:.2f} GB, peak RSS "
                f"{roll['peak_rss_bytes'] / 1e9:.2f} GB"
                + (
                    f" (+{roll['peak_rss_growth_bytes'] / 1e6:.0f} MB during the rollout)"
                    if roll["peak_rss_growth_bytes"] is not None
                    else ""
                )
                + f"; scan {met['scan_seconds']:.1f} s, autocorrelation "
                f"{met['autocorrelation_seconds']:.1f} s"
                + (
                    f", second scan + W1 {met['w1_second_scan_and_w1_seconds']:.1f} s"
                    if "w1_second_scan_and_w1_seconds" in met
                    else ""
                )
            )
            if not args.keep:
                for p in (path, other):
                    if p is not None:
                        p.unlink(missing_ok=True)
                        p.with_name(p.name + ".json").unlink(missing_ok=True)
    finally:
        if not args.keep:
            for p in made:
                p.unlink(missing_ok=True)
                p.with_name(p.name + ".json").unlink(missing_ok=True)
            if not args.dir:
                shutil.rmtree(folder, ignore_errors=True)
    payload = {
        "machine": machine(),
        "command": "python benchmarks/large_ensemble.py " + " ".join(sys.argv[1:]),
        "rows": rows,
        "kept_files": [str(p) for p in made] if args.keep else [],
    }
    from slowflow.evaluate.metrics import to_jsonable

    print("wrote", write_json("large_ensemble", to_jsonable(payload), args.out))


if __name__ == "__main__":
    main()
