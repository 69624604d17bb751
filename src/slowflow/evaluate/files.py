"""``evaluate`` and ``check`` on files: ensembles and models read from disk, results
written as a folder (``metrics.json`` or ``calibration.json`` and figures), all or nothing.

Ensembles larger than memory (``.npy`` inputs above :data:`STREAM_ABOVE_BYTES` as
float64, or ``stream=True``) are read in chunks of paths with the metrics of
:func:`slowflow.evaluate.report.evaluate_ensembles` under the same keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data import load_trajectories, periodic_ranges
from ..errors import ConfigError, DataError
from ..io.atomic import atomic_folder, check_output
from ..io.npy import NpyArray
from ..io.sidecar import read_sidecar
from . import metrics, plots
from .arrays import safe_ratio
from .report import evaluate_ensembles, figures_for, public, write_json

#: Files ``evaluate`` writes in its output folder.
EVALUATE_FILES = (
    "metrics.json",
    "paths.png",
    "mean_std.png",
    "histograms.png",
    "phase.png",
    "w1.png",
)
#: Files ``check`` writes in its output folder.
CHECK_FILES = ("calibration.json", "calibration.png")
#: A .npy input whose array takes more than this as float64 is evaluated chunk-wise.
STREAM_ABOVE_BYTES = 2**30


def wants_streaming(paths, stream: bool | None = None) -> bool:
    """Whether ``evaluate_files`` reads chunk-wise: when asked to, or when a ``.npy``
    input would take more than :data:`STREAM_ABOVE_BYTES` as float64."""
    if stream:
        return True
    for path in paths:
        if path and Path(path).suffix.lower() == ".npy" and Path(path).is_file():
            arr = NpyArray(path)
            if arr.nbytes // arr.dtype.itemsize * 8 > STREAM_ABOVE_BYTES:
                return True
    return False


def evaluate_files(
    pred, ref, out, ref_b=None, times=None, dt=None, stream: bool | None = None, w1_steps=201
) -> dict:
    """Compare the predicted ensemble in file ``pred`` with the reference ``ref`` (noise
    floor from ``ref_b``); write ``metrics.json`` and figures into the folder ``out``
    (all or none; existing files are replaced only on success). Returns the metrics.

    ``times``: report times (default: a quarter, half, three quarters and all of the
    horizon); ``dt``: the step of files that hold none; ``stream``: read chunk-wise
    (None: automatically for large ``.npy`` inputs); ``w1_steps``: when streaming, W1 time
    averages over at most this many evenly spaced steps."""
    check_output(out, (pred, ref, ref_b), folder_files=EVALUATE_FILES)
    if wants_streaming((pred, ref, ref_b), stream):
        return _evaluate_streamed(pred, ref, ref_b, out, times, dt, w1_steps)
    p = load_trajectories(pred, dt=dt)
    r = load_trajectories(ref, dt=dt)
    rb = load_trajectories(ref_b, dt=dt) if ref_b else None
    for other, label in ((r, ref), (rb, ref_b)):
        if other is not None:
            _same_grid(other.x.shape, other.dt, label, p.x.shape, p.dt, pred)
    _check_times(times, p.dt, p.n_obs - 1)
    periods = shared_periods([(p, pred), (r, ref), (rb, ref_b)])
    ev = evaluate_ensembles(p.x, r.x, None if rb is None else rb.x, p.dt, times, periods=periods)
    with atomic_folder(out) as stage:  # all files or none
        write_json(public(ev), stage / "metrics.json")
        figures_for(
            p.x, r.x, p.dt, ev["times"], stage, names=p.names,
            floor=ev.get("_floor_series"), w1=ev.get("_w1_series"),
        )  # fmt: skip
    return public(ev)


def check_files(model, data, out, *, dt=None, system=None, seed=0, **options):
    """``check_calibration`` of the model file ``model`` on the held-out trajectory file
    ``data``; writes ``calibration.json`` and ``calibration.png`` into the folder ``out``
    (all or none) and returns the :class:`~slowflow.evaluate.calibration.CalibrationResult`.
    ``system``: a built-in system that made the data (adds its best Markov reference);
    ``options``: ``max_lead``, ``n_starts``, ``n_members``."""
    from ..data import check_dim
    from ..model.io import load_model
    from ..model.periods import with_model_periods
    from .calibration import check_calibration, system_sampler

    check_output(out, (model, data), folder_files=CHECK_FILES)
    kernel = load_model(model)
    held = load_trajectories(data, dt=dt if dt else float(kernel.dt))
    check_dim(held, kernel.dim, str(data))
    held = with_model_periods(held, kernel, str(data))
    reference = system_sampler(system, held.dt) if system else None
    res = check_calibration(kernel, held, seed=seed, reference=reference, **options)
    with atomic_folder(out) as stage:  # all files or none
        write_json(res.to_dict(), stage / "calibration.json")
        scores = {"model": res.crps[:, 0]}
        if res.crps_reference is not None:
            scores["reference"] = res.crps_reference[:, 0]
        last = f"lead {int(res.leads[-1])}"
        pits = {"lead 1": res.pit_counts[0, 0], last: res.pit_counts[-1, 0]}
        fig = plots.calibration(res.leads, scores, pits, "CRPS of x1")
        plots.save_figure(fig, stage / "calibration.png")
    return res


def shared_periods(named) -> list | None:
    """The periodic variables that the given (Trajectories or None, label) declare: files
    that declare none take the others'; two different declarations are refused."""

    found, where = None, None
    for data, label in named:
        if data is None:
            continue
        r = periodic_ranges(data)
        if all(v is None for v in r):
            continue
        if found is not None and r != found:
            raise DataError(
                f"{label}: periodic variables {r} differ from those of {where} ({found})"
            )
        found, where = r, label
    return found


def _check_times(times, dt: float, n_steps: int) -> None:
    """--times must lie on the ensembles' horizon [0, n_steps * dt]."""

    for t in times or ():
        if not -0.5 <= t / dt <= n_steps + 0.5:
            raise ConfigError(
                f"--times {t:g} lies outside the ensembles' horizon 0..{n_steps * dt:g}"
            )


def _same_grid(shape, dt, label, pred_shape, pred_dt, pred_label) -> None:
    """A reference must match the prediction: number of observations, d and the step."""

    if tuple(shape[1:]) != tuple(pred_shape[1:]):
        raise DataError(
            f"{label}: shape {tuple(shape)} does not match the prediction "
            f"{pred_label} {tuple(pred_shape)} (observations and d must agree)"
        )
    if not math.isclose(dt, pred_dt, rel_tol=1e-9):
        raise DataError(
            f"{label}: step dt={dt!r} differs from the prediction {pred_label}'s dt={pred_dt!r}; "
            "ensembles compared step by step must share Delta"
        )


def _open_input(path, dt):
    """An ensemble for chunk-wise reading: (array-like, dt, names). A .npy file is read in
    slices (dt from its sidecar, else --dt); other formats are loaded whole."""

    if Path(path).suffix.lower() != ".npy":
        data = load_trajectories(path, dt=dt)
        return data.x, data.dt, data.names
    arr = NpyArray(path)
    side = read_sidecar(path, arr.shape, dt)
    if side is not None:
        return arr, side["dt"], tuple(side["names"])
    if dt is None:
        raise DataError(f"{path}: a .npy file holds no time step; pass dt (CLI: --dt)")
    return arr, float(dt), ()


def _w1_grid(n_time: int, max_steps: int):
    """Evenly spaced steps 0, s, 2s, ... (all steps when there are at most ``max_steps``)."""
    stride = 1 if n_time <= max_steps else -(-(n_time - 1) // (max_steps - 1))
    return np.arange(0, n_time, stride), stride


def _evaluate_streamed(pred, ref, ref_b, out, times, dt, w1_steps: int) -> dict:
    """``evaluate_files`` for ensembles larger than memory: every input is read in chunks
    of paths (moments, values at the report times, W1 on a grid of steps,
    autocorrelation)."""
    if w1_steps < 2:
        raise ConfigError(f"w1_steps (CLI: --w1-steps) must be at least 2, got {w1_steps}")
    p, p_dt, names = _open_input(pred, dt)
    r, r_dt, _ = _open_input(ref, dt)
    rb, rb_dt, _ = _open_input(ref_b, dt) if ref_b else (None, p_dt, ())
    for other, odt, label in ((r, r_dt, ref), (rb, rb_dt, ref_b)):
        if other is not None:
            _same_grid(other.shape, odt, label, p.shape, p_dt, pred)
    n_steps = int(p.shape[1]) - 1
    _check_times(times, p_dt, n_steps)
    if times is None:
        times = [p_dt * n_steps * f for f in (0.25, 0.5, 0.75, 1.0)]
    times = [t for t in times if round(t / p_dt) <= n_steps]
    idx = [int(round(t / p_dt)) for t in times]
    arrays = {"pred": (p, pred), "ref": (r, ref), "ref_b": (rb, ref_b)}
    scan = {
        label: metrics.scan_ensemble(arr, idx, name=str(path))
        for label, (arr, path) in arrays.items()
        if arr is not None
    }
    grid, stride = _w1_grid(int(p.shape[1]), w1_steps)
    res = _streamed_metrics(arrays, scan, p_dt, times, idx, grid)
    res["streamed"] = {
        "w1_time_avg_steps": int(grid.size),
        "w1_time_avg_stride": int(stride),
        "note": "ensembles read in chunks of paths; W1 time averages over every "
        f"{stride}-th step (--w1-steps {w1_steps})",
    }
    series = res.pop("_w1_grid"), res.pop("_floor_grid")
    with atomic_folder(out) as stage:  # all files or none
        write_json(res, stage / "metrics.json")
        _streamed_figures(stage, p, r, scan, p_dt, times, idx, names, series, stride)
    return res


def _streamed_metrics(arrays, scan, dt, times, idx, grid) -> dict:
    (p, pred), (r, ref), (rb, _) = arrays["pred"], arrays["ref"], arrays["ref_b"]
    d, n_steps = int(p.shape[2]), int(p.shape[1]) - 1
    out: dict = {
        "dt": dt,
        "times": list(times),
        "n_paths_pred": scan["pred"].n_paths,
        "n_paths_ref": scan["ref"].n_paths,
    }
    mom = metrics.scan_moment_errors(scan["pred"], scan["ref"])
    for key in ("mean_abs_mean_error", "mean_abs_std_error", "mean_abs_rel_std_error"):
        out[key] = mom[key]
    for key in ("mean_error", "std_error", "rel_std_error"):
        out[f"{key}_at_times"] = mom[key][idx]
    w1_grid, floor_grid = metrics.scan_w1_steps(p, r, rb, grid)
    out["_w1_grid"], out["_floor_grid"] = w1_grid, floor_grid
    w1_at = metrics.scan_w1(scan["pred"], scan["ref"])
    if rb is None:
        out["w1"] = {"w1_time_avg": w1_grid[1:].mean(0), "w1_at_times": w1_at}
    else:
        floor_at = metrics.scan_w1(scan["ref_b"], scan["ref"])
        t0 = 1 if grid.size > 1 and not w1_grid[0].any() and not floor_grid[0].any() else 0
        w1_avg, floor_avg = w1_grid[t0:].mean(0), floor_grid[t0:].mean(0)
        out["w1"] = {
            "w1_time_avg": w1_avg,
            "floor_time_avg": floor_avg,
            "ratio_time_avg": safe_ratio(w1_avg, floor_avg),
            "w1_at_times": w1_at,
            "floor_at_times": floor_at,
            "ratio_at_times": safe_ratio(w1_at, floor_at),
        }
        if d >= 2:
            joint = metrics.joint_report(
                scan["pred"].slices, scan["ref"].slices, scan["ref_b"].slices,
                np.arange(len(idx)),
            )  # fmt: skip
            joint["step_indices"] = np.asarray(idx)
            out["joint"] = joint
    lag = min(50, n_steps // 4)
    if lag >= 1:
        acf_p = metrics.scan_autocorrelation(p, lag, scan["pred"].mean, name=str(pred))
        acf_r = metrics.scan_autocorrelation(r, lag, scan["ref"].mean, name=str(ref))
        err = np.abs(acf_p - acf_r)[1:]
        out["autocorrelation"] = {"max_lag": lag, "mean_abs_error": err.mean(axis=0)}
    return out


def _streamed_figures(stage, p, r, scan, dt, times, idx, names, series, stride) -> None:
    """The figures of ``evaluate`` from the scans (paths and phase portraits from the
    first 1,000 paths of each ensemble)."""
    head = 1000
    w1_grid, floor_grid = series
    pred_head, ref_head = np.asarray(p[:head]), np.asarray(r[:head])
    figs = {"paths.png": plots.sample_paths(pred_head, ref_head, dt, names=names)}
    moments = {
        "truth": (scan["ref"].mean, scan["ref"].std),
        "model": (scan["pred"].mean, scan["pred"].std),
    }
    figs["mean_std.png"] = plots.mean_std(moments, dt, names=names)
    if idx:
        slices = {"truth": scan["ref"].slices, "model": scan["pred"].slices}
        figs["histograms.png"] = plots.histograms(
            slices, dt, times, names=names, columns=list(range(len(idx)))
        )
    if int(p.shape[2]) >= 2:
        figs["phase.png"] = plots.phase_portrait(pred_head, ref_head, names=names)
    if floor_grid is not None:
        figs["w1.png"] = plots.w1_over_time(w1_grid, floor_grid, dt * stride, names=names)
    for name, fig in figs.items():
        plots.save_figure(fig, stage / name)
