"""What the data allow: W1/floor of a fitted model against the amount of training data.

W1/floor compares a model's ensemble with reference A, in units of the distance between
two independent reference ensembles (A and B, 10,000 paths each). A model estimated from
data carries the estimate's own error, which a long horizon turns into a shift of the
ensemble: at the paper's data size (10,000 bursts of T = 1) the standard error of a drift
alone can amount to several floors (ex4.3: the intercept of the OU-like drift is known to
~0.006 from 10,000 time units, which moves the stationary mean by ~3 floors). This script
measures it: for each example it fits the model (default: the closed-form default preset)
(or ``--preset memory``: the default with the memory chosen from the data) on
independent training sets of ``size`` x 10,000 bursts (``--seeds`` sets per size, each
simulated with its own seed), rolls each out from the paper's start over the paper's
horizon and scores it against the same two reference ensembles. If the ratio falls
towards 1 as the data grow, the estimator is consistent and the ratio at size 1 is what
the data allow it; a ratio that stays up is a bias (an effect the one-step map misses).

Usage::

    python benchmarks/data_limit.py [--examples ex4.2,ex4.3,ex4.4,ex4.5] [--sizes 1,4]
        [--seeds 5] [--preset default] [--runs DIR] [--out DIR]

Data sets and references are cached under ``--runs`` (default
``benchmarks/results/data_limit_runs``). Writes ``data_limit.json``, ``data_limit.md`` and
``data_limit.png`` to ``--out`` (default ``benchmarks/results``). The scores do not depend on
the machine's load (no wall-clock budget is involved; the fit times are recorded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, benchmark_system, machine, write_json
from slowflow import fit, fit_memory_auto, load_trajectories, predict, save_trajectories
from slowflow.evaluate.metrics import w1_report
from slowflow.simulate import simulate_bursts, simulate_ensemble
from slowflow.train import TrainConfig

BURSTS = 10_000  # the paper's training size, size 1
N_PATHS = 10_000  # rollout and reference ensembles


def _cached(path: Path, make):
    if path.exists():
        return load_trajectories(path)
    data = make()
    save_trajectories(data, path)
    return data


def references(system, folder: Path):
    """Reference ensembles A and B from the paper's start (seeds 2000 and 3000)."""
    return [
        _cached(
            folder / f"ref_{name}.npz",
            lambda s=s: simulate_ensemble(system, n_paths=N_PATHS, seed=s, progress=False),
        ).x
        for name, s in (("a", 2000), ("b", 3000))
    ]


def one_run(system, size: int, k: int, preset, refs, folder: Path) -> dict:
    """Fit on training set ``k`` of ``size`` x 10,000 bursts, roll out, score."""
    seed = 100_000 * size + k
    data = _cached(
        folder / f"train_x{size}_{k}.npz",
        lambda: simulate_bursts(system, BURSTS * size, seed=seed, progress=False),
    )
    t0 = time.perf_counter()
    if preset == "memory":  # the default with memory chosen from the data
        model = fit_memory_auto(data, None, TrainConfig(seed=k), progress=False)
    else:
        model = fit(data, preset, TrainConfig(seed=k), progress=False)
    seconds = time.perf_counter() - t0
    n_steps = round(system.t_end / system.dt_obs)
    x = predict(model, x0=system.x0, n_steps=n_steps, n_paths=N_PATHS, seed=5000 + k)
    rep = w1_report(x, refs[0], refs[1], system.dt_obs)
    h = model.history
    return {
        "size": size,
        "set": k,
        "w1_over_floor": [float(v) for v in rep["ratio_time_avg"]],
        "fit_seconds": seconds,
        "drift_degree": (h.get("drift_basis") or {}).get("degree"),
        "covariance_degree": (h.get("covariance_basis") or {}).get("degree"),
        "heldout_kstep": (h.get("kstep") or {}).get("score"),
        "memory": model.memory,
    }


def rows(runs: list[dict]) -> list[dict]:
    out = []
    keys = sorted({(r["example"], r["size"]) for r in runs}, key=lambda t: (t[0], t[1]))
    for ex, size in keys:
        sel = [r for r in runs if r["example"] == ex and r["size"] == size]
        ratios = np.array([r["w1_over_floor"] for r in sel])
        for c in range(ratios.shape[1]):
            vals = ratios[:, c].tolist()
            out.append(
                {
                    "example": ex,
                    "size": size,
                    "component": c,
                    "n_sets": len(vals),
                    "w1_over_floor": vals,
                    "median": statistics.median(vals),
                    "min": min(vals),
                    "max": max(vals),
                    "fit_seconds_median": statistics.median(r["fit_seconds"] for r in sel),
                }
            )
    return out


def table(rs: list[dict]) -> str:
    lines = [
        "| example | x | bursts | W1/floor median | range | sets | fit s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rs:
        lines.append(
            f"| {r['example']} | x{r['component'] + 1} | {BURSTS * r['size']:,} | "
            f"{r['median']:.2f} | {r['min']:.2f}-{r['max']:.2f} | {r['n_sets']} | "
            f"{r['fit_seconds_median']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def figure(rs: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for ex, c in dict.fromkeys((r["example"], r["component"]) for r in rs):
        sel = [r for r in rs if r["example"] == ex and r["component"] == c]
        n = [BURSTS * r["size"] for r in sel]
        med = [r["median"] for r in sel]
        err = [[r["median"] - r["min"] for r in sel], [r["max"] - r["median"] for r in sel]]
        ax.errorbar(n, med, yerr=err, marker="o", capsize=2, label=f"{ex} x{c + 1}")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training bursts (T = 1 each)")
    ax.set_ylabel("W1 / noise floor (median, range)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def write_docs(out: Path) -> Path:
    """docs/benchmarks/data-limit.md from the results of the default (and, if present, the
    memory) runs in ``out``."""
    import json

    parts = []
    for name, label in (("data_limit", "default"), ("data_limit_memory", "memory")):
        path = out / f"{name}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        m = r["machine"]
        cmd = "python benchmarks/data_limit.py" + ("" if label == "default" else " --preset memory")
        cmd += f" --examples {r['settings']['examples']} --sizes {r['settings']['sizes']}"
        cmd += f" --seeds {r['settings']['seeds']}"
        parts.append(
            f"## {label}\n\nMeasured {m['date'][:10]} at commit {m['commit']} (`{cmd}`), "
            f"{m['cpu_count']} CPU cores.\n\n" + table(r["rows"])
        )
    doc = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "data-limit.md"
    head = (__doc__ or "").split("Usage::")[0].strip().splitlines()
    intro = "\n".join(head[2:]).strip()
    doc.write_text(
        "# What the data allow\n\n" + intro + "\n\n" + "\n\n".join(parts), encoding="utf-8"
    )
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default="ex4.2,ex4.3,ex4.4,ex4.5")
    ap.add_argument("--sizes", default="1,4")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--preset", default="default", help="a preset, or 'memory' (fit --memory auto)")
    ap.add_argument("--runs", default=str(RESULTS / "data_limit_runs"))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--write-docs",
        action="store_true",
        help="only write docs/benchmarks/data-limit.md from the results in --out",
    )
    args = ap.parse_args()
    if args.write_docs:
        print(f"wrote {write_docs(Path(args.out) if args.out else RESULTS)}")
        return
    preset = None if args.preset == "default" else args.preset
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    runs = []
    for ex in args.examples.split(","):
        system = benchmark_system(ex)
        folder = Path(args.runs) / system.name
        folder.mkdir(parents=True, exist_ok=True)
        refs = references(system, folder)
        for size in sizes:
            for k in range(args.seeds):
                r = {"example": ex, **one_run(system, size, k, preset, refs, folder)}
                runs.append(r)
                print(
                    f"{ex} x{size} set {k}: W1/floor "
                    + " ".join(f"{v:.2f}" for v in r["w1_over_floor"])
                    + f" (degrees {r['drift_degree']}/{r['covariance_degree']}, "
                    f"fit {r['fit_seconds']:.1f} s)",
                    flush=True,
                )
    rs = rows(runs)
    out = Path(args.out) if args.out else RESULTS
    payload = {
        "machine": machine(),
        "settings": vars(args),
        "seconds": time.perf_counter() - t0,
        "runs": runs,
        "rows": rs,
    }
    name = "data_limit" if args.preset == "default" else f"data_limit_{args.preset}"
    print(f"wrote {write_json(name, payload, out)}")
    (out / f"{name}.md").write_text(table(rs))
    figure(rs).savefig(out / f"{name}.png", dpi=120)
    print(table(rs))


if __name__ == "__main__":
    main()
