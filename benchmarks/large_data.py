"""Training on a file larger than memory: streamed from disk vs loaded into memory.

For each size, training bursts of a built-in system (default: ex4.5, d = 2, 100 pairs per
burst) are simulated in chunks and written with ``TrajectoryWriter`` (float32, never whole
in memory). Then, each in a fresh process, the default preset is trained for ``--epochs``
epochs on the file

  * streamed (``fit(path, stream=True)``: pieces read from disk, shuffled in a buffer), and
  * in memory (``fit(path)``: the whole file loaded, pairs built, copied to tensors),

recording the peak resident memory of the process (``VmHWM``), its resident memory after
imports, training pairs per second and the held-out NLL (the same validation
trajectories in both modes). The streaming process's peak should not grow with the file.

Usage: ``python benchmarks/large_data.py [--pairs 1e7,4e7] [--epochs 1] [--keep]``.
Writes ``benchmarks/results/large_data.json`` and ``large_data.png``. Disk: 8 bytes per
pair and variable (float32 x_n; each observation is shared by two pairs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, write_json

CHILD = r"""
import json, sys, time
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
import torch
import slowflow
path, mode, epochs, threads, block = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
base = status("VmRSS")
t0 = time.perf_counter()
model = slowflow.fit(path, "default", epochs=epochs, stream=(mode == "stream"), block_pairs=block,
                     progress=False, patience=10**6)
wall = time.perf_counter() - t0
h = model.history
print(json.dumps({
    "mode": mode, "rss_after_imports_bytes": base, "peak_rss_bytes": status("VmHWM"),
    "fit_wall_s": wall, "train_seconds": h["train_seconds"], "epochs": len(h["epoch"]),
    "n_train_pairs": h["n_train_pairs"], "best_val_nll": h["best_val_nll"],
    "pairs_per_s": h["n_train_pairs"] * len(h["epoch"]) / h["train_seconds"],
    "torch_threads": torch.get_num_threads(),
}))
"""


def generate(path: Path, system: str, n_traj: int, seed: int, chunk: int = 20_000) -> dict:
    from slowflow.data.store import TrajectoryWriter
    from slowflow.simulate import simulate_bursts

    t0 = time.perf_counter()
    first = simulate_bursts(system, n_traj=1, seed=seed, progress=False)
    n_obs, d = first.n_obs, first.dim
    meta = {"system": system, "seed": seed, "generated_by": "benchmarks/large_data.py"}
    with TrajectoryWriter(
        path, n_traj, n_obs, d, dt=first.dt, names=first.names, meta=meta, dtype=np.float32
    ) as w:
        for i, a in enumerate(range(0, n_traj, chunk)):
            k = min(chunk, n_traj - a)
            w.write(simulate_bursts(system, n_traj=k, seed=seed + 1 + i, progress=False).x)
    return {
        "n_traj": n_traj,
        "n_obs": n_obs,
        "dim": d,
        "pairs": n_traj * (n_obs - 1),
        "file_bytes": path.stat().st_size,
        "generate_s": time.perf_counter() - t0,
    }


def run_child(path: Path, mode: str, epochs: int, threads: int, block: int) -> dict:
    cmd = [sys.executable, "-c", CHILD, str(path), mode, str(epochs), str(threads), str(block)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{mode} fit failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="1e7,4e7", help="comma-separated sizes (pairs)")
    ap.add_argument("--system", default="ex4.5")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--block-pairs", type=int, default=1 << 20)
    ap.add_argument("--modes", default="stream,memory")
    ap.add_argument("--dir", default=None, help="where to write the data (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="slowflow-large-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, text in enumerate(args.pairs.split(",")):
        pairs = int(float(text))
        path = work / f"bursts_{pairs:.0e}.npz".replace("+", "")
        info = generate(path, args.system, math.ceil(pairs / 100), seed=1000 * k)
        print(
            f"[large_data] {info['pairs']:.2e} pairs, {info['file_bytes'] / 2**20:.0f} MiB "
            f"written in {info['generate_s']:.1f} s",
            flush=True,
        )
        for mode in args.modes.split(","):
            res = run_child(path, mode, args.epochs, args.threads, args.block_pairs)
            res.update(info)
            rows.append(res)
            print(
                f"[large_data]   {mode:6s}: peak RSS {res['peak_rss_bytes'] / 2**20:7.0f} MiB "
                f"(after imports {res['rss_after_imports_bytes'] / 2**20:.0f}), "
                f"{res['pairs_per_s']:.3g} pairs/s, val NLL {res['best_val_nll']:.4f}",
                flush=True,
            )
        if not args.keep:
            path.unlink()
    if not args.keep and not args.dir:
        os.rmdir(work)
    payload = {"machine": machine(), "settings": vars(args), "results": rows}
    out = write_json("large_data", payload, args.out)
    try:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(9, 3.5), layout="constrained")
        ax = fig.subplots(1, 2)
        for mode, marker in (("stream", "o"), ("memory", "s")):
            sel = [r for r in rows if r["mode"] == mode]
            if not sel:
                continue
            p = [r["pairs"] for r in sel]
            ax[0].plot(p, [r["peak_rss_bytes"] / 2**30 for r in sel], marker=marker, label=mode)
            ax[1].plot(p, [r["pairs_per_s"] for r in sel], marker=marker, label=mode)
        ax[0].plot(p, [r["file_bytes"] / 2**30 for r in sel], "k:", label="file size")
        ax[0].set(xscale="log", xlabel="training pairs", ylabel="peak resident memory (GiB)")
        ax[1].set(xscale="log", xlabel="training pairs", ylabel="training pairs / s")
        ax[0].legend()
        fig.savefig(Path(out).with_suffix(".png"), dpi=120)
    except ImportError:
        pass
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
