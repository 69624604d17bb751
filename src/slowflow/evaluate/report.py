"""Evaluate predicted ensembles against references: metrics.json and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write
from . import metrics


def write_json(obj, path) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(metrics.to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    return path


def evaluate_ensembles(
    pred: np.ndarray,
    ref_a: np.ndarray,
    ref_b: np.ndarray | None,
    dt: float,
    times=None,
    max_lag: int | None = None,
    periods=None,
) -> dict:
    """All ensemble metrics of ``pred`` against reference ``ref_a`` (floor from ``ref_b``).

    Returns a dict: moment errors, marginal W1 with its noise floor and ratios (when
    ``ref_b`` is given), joint distances for d >= 2 at ``times``, autocorrelation errors.
    """
    n_steps = ref_a.shape[1] - 1
    if times is None:
        times = [dt * n_steps * f for f in (0.25, 0.5, 0.75, 1.0)]
    times = [t for t in times if round(t / dt) <= n_steps]
    out: dict = {
        "dt": dt,
        "times": list(times),
        "n_paths_pred": int(pred.shape[0]),
        "n_paths_ref": int(ref_a.shape[0]),
    }
    mom = metrics.moment_errors(pred, ref_a)
    out["mean_abs_mean_error"] = mom["mean_abs_mean_error"]
    out["mean_abs_std_error"] = mom["mean_abs_std_error"]
    out["mean_abs_rel_std_error"] = mom["mean_abs_rel_std_error"]
    idx = [int(round(t / dt)) for t in times]
    out["mean_error_at_times"] = mom["mean_error"][idx]
    out["std_error_at_times"] = mom["std_error"][idx]
    out["rel_std_error_at_times"] = mom["rel_std_error"][idx]
    if ref_b is not None:
        rep = metrics.w1_report(pred, ref_a, ref_b, dt, times, periods)
        out["w1"] = {
            k: rep[k]
            for k in (
                "w1_time_avg",
                "floor_time_avg",
                "ratio_time_avg",
                "w1_at_times",
                "floor_at_times",
                "ratio_at_times",
            )
        }
        out["_w1_series"] = rep["w1"]
        out["_floor_series"] = rep["floor"]
        if pred.shape[2] >= 2:
            out["joint"] = metrics.joint_report(pred, ref_a, ref_b, idx)
    else:
        w1 = metrics.w1_marginals(pred, ref_a, periods)
        out["w1"] = {"w1_time_avg": w1[1:].mean(0), "w1_at_times": w1[idx]}
        out["_w1_series"] = w1
    lag = max_lag or min(50, n_steps // 4)
    if lag >= 1:
        ac = metrics.autocorrelation_error(pred, ref_a, lag)
        out["autocorrelation"] = {"max_lag": lag, "mean_abs_error": ac["mean_abs_error"]}
    return out


def public(d: dict) -> dict:
    """Drop the private (large, per-step) entries before writing JSON."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


def figures_for(
    pred,
    ref_a,
    dt,
    times,
    out_dir,
    names=None,
    extra: dict | None = None,
    floor=None,
    w1=None,
    prefix="",
) -> list[Path]:
    """The standard comparison figures; returns the written paths."""
    from . import plots

    out_dir = Path(out_dir)
    paths = []
    ens = {"truth": ref_a, "model": pred, **(extra or {})}
    paths.append(
        plots.save_figure(
            plots.sample_paths(pred, ref_a, dt, names=names), out_dir / f"{prefix}paths.png"
        )
    )
    paths.append(
        plots.save_figure(plots.mean_std(ens, dt, names=names), out_dir / f"{prefix}mean_std.png")
    )
    paths.append(
        plots.save_figure(
            plots.histograms(ens, dt, times, names=names), out_dir / f"{prefix}histograms.png"
        )
    )
    if ref_a.shape[2] >= 2:
        paths.append(
            plots.save_figure(
                plots.phase_portrait(pred, ref_a, names=names), out_dir / f"{prefix}phase.png"
            )
        )
    if floor is not None and w1 is not None:
        paths.append(
            plots.save_figure(
                plots.w1_over_time(w1, floor, dt, names=names), out_dir / f"{prefix}w1.png"
            )
        )
    return paths
