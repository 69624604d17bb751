"""Training steps/s and rollout path-steps/s on the GPU against the CPU, ell = 1 and 2.

One prepared script for a GPU machine (it also runs, CPU only, where there is none):

* data: paper-size training bursts of ex4.2 (ell = 1) and ex4.5 (ell = 2), simulated once;
* training: for each device and preset (default ``gaussian``, and the ``coupling`` flow),
  ``fit`` for ``--epochs`` epochs at batch 2048 (the default) and at a large batch, with
  early stopping off; steps/s = optimizer steps / training seconds (the first epoch,
  which includes CUDA warm-up, is excluded by timing epochs 2..E from the history);
* rollout: ``--paths`` paths x ``--steps`` steps from the paper's start, median of 3.

Writes ``benchmarks/results/gpu.json`` with the device names; prints a table. No test
depends on it; CI has no GPU.
Usage: ``python benchmarks/gpu.py [--epochs 6] [--paths 100000,1000000] [--steps 100]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from _common import machine, write_json
from slowflow.rollout import predict
from slowflow.simulate import simulate_bursts
from slowflow.systems import get_system
from slowflow.train import fit


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(data, preset: str, device: str, epochs: int, batch: int) -> dict:
    model = fit(
        data,
        preset,
        epochs=epochs,
        batch_size=batch,
        device=device,
        progress=False,
        patience=10**6,
        warmup_epochs=1,
    )
    h = model.history
    secs = h["seconds"]
    steps_per_epoch = max(1, h["n_train_pairs"] // batch)
    # epochs 2..E: excludes the first epoch's one-off costs (CUDA context, kernels, caches)
    span = secs[-1] - secs[0] if len(secs) > 1 else secs[0]
    n_ep = len(secs) - 1 if len(secs) > 1 else 1
    return {
        "steps_per_s": steps_per_epoch * n_ep / span,
        "pairs_per_s": steps_per_epoch * n_ep * batch / span,
        "best_val_nll": h["best_val_nll"],
        "epochs": len(secs),
    }


def rollout_rate(model, x0, n_paths: int, steps: int, device: str) -> float:
    model = model.to(device)
    rates = []
    for rep in range(3):
        _sync(device)
        t0 = time.perf_counter()
        predict(model, x0, steps, n_paths=n_paths, seed=rep, batch_size=n_paths, progress=False)
        _sync(device)
        rates.append(n_paths * steps / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--big-batch", type=int, default=65536)
    ap.add_argument("--presets", default="gaussian,coupling")
    ap.add_argument("--paths", default="100000,1000000")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--examples", default="ex4.2,ex4.5")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    info = machine()
    info["devices"] = {
        "cpu": info["processor"],
        **({"cuda": torch.cuda.get_device_name(0)} if torch.cuda.is_available() else {}),
    }
    rows = []
    for ex in args.examples.split(","):
        system = get_system(ex)
        data = simulate_bursts(system, progress=False)
        for preset in args.presets.split(","):
            models = {}
            for device in devices:
                for batch in (2048, args.big_batch):
                    t0 = time.perf_counter()
                    r = train_rate(data, preset, device, args.epochs, batch)
                    r.update(
                        example=ex,
                        dim=data.dim,
                        preset=preset,
                        device=device,
                        batch=batch,
                        kind="train",
                        wall_s=time.perf_counter() - t0,
                    )
                    rows.append(r)
                    print(
                        f"{ex} {preset:9s} {device:4s} train batch {batch:6d}: "
                        f"{r['steps_per_s']:9.1f} steps/s {r['pairs_per_s']:.3g} pairs/s",
                        flush=True,
                    )
                models[device] = fit(data, preset, epochs=1, device=device, progress=False)
            for device in devices:
                for n_paths in (int(float(p)) for p in args.paths.split(",")):
                    if device == "cpu" and n_paths > 200_000:
                        continue  # the CPU figure does not depend on n beyond a batch
                    rate = rollout_rate(models[device], system.x0, n_paths, args.steps, device)
                    rows.append(
                        dict(
                            example=ex,
                            dim=data.dim,
                            preset=preset,
                            device=device,
                            kind="rollout",
                            n_paths=n_paths,
                            steps=args.steps,
                            path_steps_per_s=rate,
                        )
                    )
                    print(
                        f"{ex} {preset:9s} {device:4s} rollout {n_paths:8d} paths: "
                        f"{rate:.3g} path-steps/s",
                        flush=True,
                    )
    out = write_json("gpu", {"machine": info, "settings": vars(args), "results": rows}, args.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
