"""How faithful are long rollouts? W1/floor of every model on every example, over seeds.

For each example (the paper's five and the ``ring`` system with ell = 5) and each seed,
this runs the full-size reproduction (:func:`slowflow.reproduce.reproduce_example`: 10,000
training bursts of T = 1 at Delta = 0.01, a 2.5-minute training budget, 10,000-path
rollouts from the paper's start over its horizon, two independent 10,000-path reference
ensembles, 1,000 held-out bursts). A seed changes the training bursts, the network's
initialisation, the rollout noise and both reference ensembles. Recorded per example,
model and component: W1/floor of every seed with median, range and max/min spread, the
held-out NLL, the held-out k-step score (:func:`slowflow.model.score.kstep_score`, lower
is better), training seconds, rollout throughput and the calibration verdict.

Models: any of ``reproduce --models`` (``default``: as ``slowflow fit``, drift and
covariance in closed form with the memory K and skip-first chosen from the data;
``markov``: the same at K = 0; ``gaussian-net``: the basis drift with a network scale
trained by likelihood; ``network``: drift and scale from the network; ``coupling``,
``paper``, ``km``, ``sfi`` (force inference, needs ``pip install slowflow[baselines]``),
``averaged``, ``exact`` (a third reference ensemble: what a perfect model scores)). The
chain network -> gaussian-net -> markov -> default is the ablation of the drift and
memory work.

Usage::

    python benchmarks/accuracy.py [--examples ex4.1,...,ring5] [--models default,km,averaged]
        [--seeds 0,1,2] [--max-minutes 2.5] [--n-paths 10000] [--n-train 10000]
        [--runs DIR] [--out DIR]

Stages are cached under ``--runs`` (default ``benchmarks/results/accuracy_runs``), so an
interrupted run resumes; use a fresh ``--runs`` after changing the code. Writes
``accuracy.json``, ``accuracy.md`` (the table) and ``accuracy.png`` to ``--out`` (default
``benchmarks/results``). The trained presets stop at 40 epochs or at the wall-clock budget
``--max-minutes``: raise it when the machine is shared, so that the scores do not depend on
its load (the closed-form presets have no budget to hit).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, benchmark_system, machine, write_json
from slowflow.reproduce import PAPER_EXAMPLES, ReproduceConfig, reproduce_example


def _rows(per_seed: dict, seeds: list[int]) -> list[dict]:
    """One row per example, model and component, over the seeds that have the example."""
    rows = []
    examples = list(dict.fromkeys(ex for s in seeds for ex in per_seed[s]))
    for ex in examples:
        have = [s for s in seeds if ex in per_seed[s]]
        models = list(dict.fromkeys(m for s in have for m in per_seed[s][ex]["models"]))
        for model in models:
            done = [s for s in have if "w1" in per_seed[s][ex]["models"].get(model, {})]
            if not done:
                continue
            entries = [per_seed[s][ex]["models"][model] for s in done]
            ratios = np.array([e["w1"]["ratio_time_avg"] for e in entries], dtype=float)
            for c in range(ratios.shape[1]):
                vals = ratios[:, c].tolist()
                rows.append(
                    {
                        "example": ex,
                        "model": model,
                        "component": c,
                        "seeds": done,
                        "w1_over_floor": vals,
                        "median": statistics.median(vals),
                        "min": min(vals),
                        "max": max(vals),
                        "spread": max(vals) / min(vals),
                        "heldout_nll": [e.get("heldout_nll") for e in entries],
                        "heldout_kstep": [e.get("heldout_kstep") for e in entries],
                        "train_seconds": [e.get("train_seconds") for e in entries],
                        "rollout_path_steps_per_s": [
                            e.get("rollout_path_steps_per_s") for e in entries
                        ],
                        "calibrated": [
                            None if "calibration" not in e else e["calibration"]["calibrated"]
                            for e in entries
                        ],
                    }
                )
    return rows


def collect(runs: Path, seeds: list[int], examples: list[str]) -> dict:
    """The per-seed results that finished runs left in ``runs/seed*/<system>/metrics.json``."""
    import json

    per_seed: dict = {s: {} for s in seeds}
    for s in seeds:
        for ex in examples:
            path = runs / f"seed{s}" / benchmark_system(ex).name / "metrics.json"
            if path.exists():
                per_seed[s][ex] = json.loads(path.read_text())
    return per_seed


def _fmt(values, spec: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    return format(statistics.median(vals), spec)


def table(rows: list[dict]) -> str:
    """Markdown: one line per example, model and component."""
    out = [
        "| example | model | x | W1/floor median | range | max/min | seeds | held-out NLL | "
        "k-step score | train s | calibrated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cal = [c for c in r["calibrated"] if c is not None]
        verdict = "-" if not cal else f"{sum(cal)}/{len(cal)}"
        out.append(
            f"| {r['example']} | {r['model']} | x{r['component'] + 1} | {r['median']:.2f} | "
            f"{r['min']:.2f}-{r['max']:.2f} | {r['spread']:.2f} | {len(r['seeds'])} | "
            f"{_fmt(r['heldout_nll'], '.4f')} | {_fmt(r['heldout_kstep'], '.4f')} | "
            f"{_fmt(r['train_seconds'], '.0f')} | {verdict} |"
        )
    return "\n".join(out) + "\n"


def summary_table(rows: list[dict], models: list[str]) -> str:
    """Compact markdown for the README: per example and component, each model's median
    W1/floor with its range over seeds."""
    keys = list(dict.fromkeys((r["example"], r["component"]) for r in rows))
    by = {(r["example"], r["component"], r["model"]): r for r in rows}
    head = "| example | x | " + " | ".join(models) + " |"
    out = [head, "|---|---|" + "---|" * len(models)]
    for ex, c in keys:
        cells = []
        for m in models:
            r = by.get((ex, c, m))
            cells.append("-" if r is None else f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})")
        out.append(f"| {ex} | x{c + 1} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def write_docs(rows: list[dict], payload: dict, models: list[str]) -> None:
    """Put the tables between the ``<!-- accuracy-table -->`` markers of the README (the
    compact one) and of docs/benchmarks/accuracy.md (the full one), with date and commit."""
    root = Path(__file__).resolve().parents[1]
    m = payload["machine"]
    n_seeds = max(len(r["seeds"]) for r in rows)
    stamp = (
        f"Measured {m['date'][:10]} at commit {m['commit']} "
        f"(`python benchmarks/accuracy.py --models {','.join(models)}`), {m['cpu_count']} "
        f"CPU cores, {m['torch_threads']} torch threads, up to {n_seeds} seeds; W1/floor "
        "median (range over seeds), time-averaged per component.\n\n"
    )
    for path, text in (
        (root / "README.md", summary_table(rows, models)),
        (root / "docs" / "benchmarks" / "accuracy.md", table(rows)),
    ):
        doc = path.read_text(encoding="utf-8")
        start = doc.index("<!-- accuracy-table -->") + len("<!-- accuracy-table -->")
        end = doc.index("<!-- /accuracy-table -->")
        path.write_text(doc[:start] + "\n" + stamp + text + "\n" + doc[end:], encoding="utf-8")


def figure(rows: list[dict]):
    """W1/floor per example and model: the median as a dot, the seeds' range as a bar."""
    from matplotlib.figure import Figure

    examples = list(dict.fromkeys(r["example"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig = Figure(figsize=(1.6 + 1.3 * len(examples), 3.8), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        xs, med, lo, hi = [], [], [], []
        for i, ex in enumerate(examples):
            sel = [r for r in rows if r["example"] == ex and r["model"] == model]
            for c, r in enumerate(sel):
                xs.append(i + (j - (len(models) - 1) / 2) * width + 0.08 * c)
                med.append(r["median"])
                lo.append(r["median"] - r["min"])
                hi.append(r["max"] - r["median"])
        if xs:
            ax.errorbar(xs, med, yerr=[lo, hi], fmt="o", ms=4, capsize=2, label=model)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.axhline(1.5, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(range(len(examples)), examples)
    ax.set_ylabel("W1 / noise floor (median, range over seeds)")
    ax.legend(fontsize=8, ncol=min(4, len(models)))
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", default=",".join([*PAPER_EXAMPLES, "ring5"]))
    ap.add_argument("--models", default="default,markov,km,sfi,averaged,exact")
    ap.add_argument("--max-minutes", type=float, default=2.5, help="training budget per model")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument(
        "--n-paths", type=int, default=10_000, help="paths of each reference and prediction"
    )
    ap.add_argument("--n-train", type=int, default=10_000, help="training bursts")
    ap.add_argument("--runs", default=str(RESULTS / "accuracy_runs"))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--collect",
        action="store_true",
        help="only gather the results that earlier runs left under --runs (no computing)",
    )
    ap.add_argument(
        "--write-docs",
        action="store_true",
        help="put the tables into README.md and docs/benchmarks/accuracy.md",
    )
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    models = tuple(args.models.split(","))
    examples = args.examples.split(",")
    t0 = time.perf_counter()
    per_seed = collect(Path(args.runs), seeds, examples) if args.collect else {s: {} for s in seeds}
    for seed in [] if args.collect else seeds:
        for ex in examples:
            cfg = ReproduceConfig(
                seed=seed,
                models=models,
                max_minutes=args.max_minutes,
                n_ref=args.n_paths,
                n_pred=args.n_paths,
                n_train_traj=args.n_train,
            )
            res = reproduce_example(benchmark_system(ex), Path(args.runs) / f"seed{seed}", cfg)
            per_seed[seed][ex] = res
            for m, e in res["models"].items():
                print(
                    f"seed {seed} {ex:8s} {m:9s} W1/floor "
                    + " ".join(f"{v:.2f}" for v in e["w1"]["ratio_time_avg"])
                    + f"  train s {e.get('train_seconds') or 0:.0f}",
                    flush=True,
                )
            for m, why in res.get("skipped", {}).items():
                print(f"seed {seed} {ex:8s} {m:9s} {why}", flush=True)
    rows = _rows(per_seed, seeds)
    out = Path(args.out) if args.out else RESULTS
    payload = {
        "machine": machine(),
        "settings": vars(args),
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    print(f"wrote {write_json('accuracy', payload, out)}")
    (out / "accuracy.md").write_text(table(rows))
    if rows:
        figure(rows).savefig(out / "accuracy.png", dpi=120)
        if args.write_docs:
            write_docs(rows, payload, list(models))
    print(table(rows))


if __name__ == "__main__":
    main()
