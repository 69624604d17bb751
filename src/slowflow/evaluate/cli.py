"""Subcommands ``evaluate``, ``check`` and ``reproduce`` (registered by slowflow.cli)."""

from __future__ import annotations

from pathlib import Path

from .._io import atomic_folder, check_output
from ..cli import _finite, _floats, _integer, _seed

#: Files ``evaluate`` writes in its --out folder.
EVALUATE_FILES = (
    "metrics.json",
    "paths.png",
    "mean_std.png",
    "histograms.png",
    "phase.png",
    "w1.png",
)

#: A .npy input whose array takes more than this as float64 is evaluated chunk-wise.
STREAM_ABOVE_BYTES = 2**30


def _wants_streaming(args) -> bool:
    if args.stream:
        return True
    from .metrics import NpyArray

    for path in (args.pred, args.ref, args.ref_b):
        if path and Path(path).suffix.lower() == ".npy" and Path(path).is_file():
            arr = NpyArray(path)
            if arr.nbytes // arr.dtype.itemsize * 8 > STREAM_ABOVE_BYTES:
                return True
    return False


def cmd_evaluate(args) -> int:
    from ..data import load_trajectories
    from .report import evaluate_ensembles, figures_for, public, write_json

    inputs = (args.pred, args.ref, args.ref_b)
    check_output(args.out, inputs, folder_files=EVALUATE_FILES)
    times = _floats(args.times, "--times") if args.times else None
    if _wants_streaming(args):
        return _evaluate_streaming(args)
    pred = load_trajectories(args.pred, dt=args.dt)
    ref = load_trajectories(args.ref, dt=args.dt)
    ref_b = load_trajectories(args.ref_b, dt=args.dt) if args.ref_b else None
    for other, label in ((ref, args.ref), (ref_b, args.ref_b)):
        if other is not None:
            _same_grid(other.x.shape, other.dt, label, pred.x.shape, pred.dt, args.pred)
    _check_times(times, pred.dt, pred.n_obs - 1)
    periods = shared_periods([(pred, args.pred), (ref, args.ref), (ref_b, args.ref_b)])
    ev = evaluate_ensembles(
        pred.x, ref.x, None if ref_b is None else ref_b.x, pred.dt, times, periods=periods
    )
    out = Path(args.out)
    with atomic_folder(out) as stage:  # all files or none
        write_json(public(ev), stage / "metrics.json")
        figures_for(
            pred.x,
            ref.x,
            pred.dt,
            ev["times"],
            stage,
            names=pred.names,
            floor=ev.get("_floor_series"),
            w1=ev.get("_w1_series"),
        )
    w1 = ev["w1"]
    line = "W1 time-avg " + ", ".join(f"{v:.4g}" for v in w1["w1_time_avg"])
    if "ratio_time_avg" in w1:
        line += "; W1/floor " + ", ".join(f"{v:.2f}" for v in w1["ratio_time_avg"])
    print(f"{line}; wrote {out / 'metrics.json'} and figures")
    return 0


def shared_periods(named) -> list | None:
    """The periodic variables that the given (Trajectories or None, label) declare: files
    that declare none take the others'; two different declarations are refused."""
    from ..data import periodic_ranges
    from ..errors import DataError

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
    from ..errors import ConfigError

    for t in times or ():
        if not -0.5 <= t / dt <= n_steps + 0.5:
            raise ConfigError(
                f"--times {t:g} lies outside the ensembles' horizon 0..{n_steps * dt:g}"
            )


def _same_grid(shape, dt, label, pred_shape, pred_dt, pred_label) -> None:
    """A reference must match the prediction: number of observations, d and the step."""
    import math

    from ..errors import DataError

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
    from ..data import load_trajectories, npy_sidecar
    from ..errors import DataError
    from .metrics import NpyArray

    if Path(path).suffix.lower() != ".npy":
        data = load_trajectories(path, dt=dt)
        return data.x, data.dt, data.names
    arr = NpyArray(path)
    side = npy_sidecar(path, arr.shape, dt)
    if side is not None:
        return arr, side["dt"], tuple(side["names"])
    if dt is None:
        raise DataError(f"{path}: a .npy file holds no time step; pass dt (CLI: --dt)")
    return arr, float(dt), ()


def _w1_grid(n_time: int, max_steps: int):
    """Evenly spaced steps 0, s, 2s, ... (all steps when there are at most ``max_steps``)."""
    import numpy as np

    stride = 1 if n_time <= max_steps else -(-(n_time - 1) // (max_steps - 1))
    return np.arange(0, n_time, stride), stride


def _evaluate_streaming(args) -> int:
    """``evaluate`` for ensembles larger than memory: every input is read in chunks of paths
    (moments, values at the report times, W1 on a grid of steps, autocorrelation), with the
    metrics of :func:`slowflow.evaluate.report.evaluate_ensembles` under the same keys."""
    import numpy as np

    from ..errors import ConfigError
    from . import metrics, plots
    from .arrays import safe_ratio
    from .report import write_json

    if args.w1_steps < 2:
        raise ConfigError(f"--w1-steps must be at least 2, got {args.w1_steps}")
    pred, dt, names = _open_input(args.pred, args.dt)
    ref, ref_dt, _ = _open_input(args.ref, args.dt)
    ref_b, ref_b_dt, _ = _open_input(args.ref_b, args.dt) if args.ref_b else (None, dt, ())
    for other, odt, label in ((ref, ref_dt, args.ref), (ref_b, ref_b_dt, args.ref_b)):
        if other is not None:
            _same_grid(other.shape, odt, label, pred.shape, dt, args.pred)
    n_time, d = int(pred.shape[1]), int(pred.shape[2])
    n_steps = n_time - 1
    times = _floats(args.times, "--times") if args.times else None
    _check_times(times, dt, n_steps)
    if times is None:
        times = [dt * n_steps * f for f in (0.25, 0.5, 0.75, 1.0)]
    times = [t for t in times if round(t / dt) <= n_steps]
    idx = [int(round(t / dt)) for t in times]
    scan = {
        label: metrics.scan_ensemble(arr, idx, name=str(path))
        for label, arr, path in (
            ("pred", pred, args.pred),
            ("ref", ref, args.ref),
            ("ref_b", ref_b, args.ref_b),
        )
        if arr is not None
    }
    grid, stride = _w1_grid(n_time, args.w1_steps)
    out: dict = {
        "dt": dt,
        "times": list(times),
        "n_paths_pred": scan["pred"].n_paths,
        "n_paths_ref": scan["ref"].n_paths,
    }
    mom = metrics.scan_moment_errors(scan["pred"], scan["ref"])
    for key in ("mean_abs_mean_error", "mean_abs_std_error", "mean_abs_rel_std_error"):
        out[key] = mom[key]
    out["mean_error_at_times"] = mom["mean_error"][idx]
    out["std_error_at_times"] = mom["std_error"][idx]
    out["rel_std_error_at_times"] = mom["rel_std_error"][idx]
    w1_grid, floor_grid = metrics.scan_w1_steps(pred, ref, ref_b, grid)
    w1_at = metrics.scan_w1(scan["pred"], scan["ref"])
    if ref_b is not None:
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
                scan["pred"].slices,
                scan["ref"].slices,
                scan["ref_b"].slices,
                np.arange(len(idx)),
            )
            joint["step_indices"] = np.asarray(idx)
            out["joint"] = joint
    else:
        out["w1"] = {"w1_time_avg": w1_grid[1:].mean(0), "w1_at_times": w1_at}
    out["streamed"] = {
        "w1_time_avg_steps": int(grid.size),
        "w1_time_avg_stride": int(stride),
        "note": "ensembles read in chunks of paths; W1 time averages over every "
        f"{stride}-th step (--w1-steps {args.w1_steps})",
    }
    lag = min(50, n_steps // 4)
    if lag >= 1:
        acf_p = metrics.scan_autocorrelation(pred, lag, scan["pred"].mean, name=str(args.pred))
        acf_r = metrics.scan_autocorrelation(ref, lag, scan["ref"].mean, name=str(args.ref))
        err = np.abs(acf_p - acf_r)[1:]
        out["autocorrelation"] = {"max_lag": lag, "mean_abs_error": err.mean(axis=0)}
    with atomic_folder(args.out) as out_dir:  # all files or none
        write_json(out, out_dir / "metrics.json")
        head = 1000  # paths drawn in the path and phase figures come from the first ones
        plots.save_figure(
            plots.sample_paths(np.asarray(pred[:head]), np.asarray(ref[:head]), dt, names=names),
            out_dir / "paths.png",
        )
        plots.save_figure(
            plots.mean_std(
                {
                    "truth": (scan["ref"].mean, scan["ref"].std),
                    "model": (scan["pred"].mean, scan["pred"].std),
                },
                dt,
                names=names,
            ),
            out_dir / "mean_std.png",
        )
        if idx:
            plots.save_figure(
                plots.histograms(
                    {"truth": scan["ref"].slices, "model": scan["pred"].slices},
                    dt,
                    times,
                    names=names,
                    columns=list(range(len(idx))),
                ),
                out_dir / "histograms.png",
            )
        if d >= 2:
            plots.save_figure(
                plots.phase_portrait(np.asarray(pred[:head]), np.asarray(ref[:head]), names=names),
                out_dir / "phase.png",
            )
        if floor_grid is not None:
            plots.save_figure(
                plots.w1_over_time(w1_grid, floor_grid, dt * stride, names=names),
                out_dir / "w1.png",
            )
    w1 = out["w1"]
    line = "W1 time-avg " + ", ".join(f"{v:.4g}" for v in w1["w1_time_avg"])
    if "ratio_time_avg" in w1:
        line += "; W1/floor " + ", ".join(f"{v:.2f}" for v in w1["ratio_time_avg"])
    print(f"{line} (streamed); wrote {Path(args.out) / 'metrics.json'} and figures")
    return 0


def cmd_check(args) -> int:
    from ..data import check_dim, load_trajectories
    from ..model.io import load_model
    from . import calibration, plots
    from .report import write_json

    check_output(
        args.out, (args.model, args.data), folder_files=("calibration.json", "calibration.png")
    )
    model = load_model(args.model)
    data = load_trajectories(args.data, dt=args.dt if args.dt else float(model.dt))
    check_dim(data, model.dim, str(args.data))
    data = calibration.with_model_periods(data, model, str(args.data))
    reference = calibration.system_sampler(args.system, data.dt) if args.system else None
    res = calibration.check_calibration(
        model,
        data,
        max_lead=args.max_lead,
        n_starts=args.n_starts,
        n_members=args.n_members,
        seed=args.seed,
        reference=reference,
    )
    with atomic_folder(args.out) as out:  # all files or none
        write_json(res.to_dict(), out / "calibration.json")
        scores = {"model": res.crps[:, 0]}
        if res.crps_reference is not None:
            scores["reference"] = res.crps_reference[:, 0]
        plots.save_figure(
            plots.calibration(
                res.leads,
                scores,
                {
                    "lead 1": res.pit_counts[0, 0],
                    f"lead {int(res.leads[-1])}": res.pit_counts[-1, 0],
                },
                "CRPS of x1",
            ),
            out / "calibration.png",
        )
    print(res.summary())
    return 0 if res.calibrated else 1


def cmd_reproduce(args) -> int:
    from ..reproduce import reproduce

    check_output(args.out, folder_files=("report.md",))
    if args.example == "alanine":  # real molecular dynamics, with the md extra
        from ..md.study import reproduce_alanine

        reproduce_alanine(args.out, quick=args.quick, seed=args.seed)
        print(f"wrote {Path(args.out) / 'alanine' / 'report.md'}")
        return 0
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    reproduce(
        args.example,
        args.out,
        quick=args.quick,
        models=models,
        seed=args.seed,
        max_minutes=args.max_minutes,
    )
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def add_commands(sub) -> None:
    s = sub.add_parser("evaluate", help="compare a predicted ensemble with reference ensembles")
    s.add_argument("pred")
    s.add_argument("ref")
    s.add_argument("--ref-b", default=None, help="independent second reference (noise floor)")
    s.add_argument("--times", default=None, help="times for histograms, e.g. 1,2,4")
    s.add_argument("--dt", type=_finite, default=None)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument(
        "--stream",
        action="store_true",
        help="read the ensembles chunk-wise (automatic for a .npy input above 1 GiB as float64)",
    )
    s.add_argument(
        "--w1-steps",
        type=_integer,
        default=201,
        help="when streaming: W1 time averages over at most this many evenly spaced steps",
    )
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "check",
        help="calibration of a model's kernel on held-out data "
        "(exit 0 calibrated, 1 flagged, 2 bad input)",
    )
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--max-lead", type=_integer, default=10)
    s.add_argument("--n-starts", type=_integer, default=2000)
    s.add_argument("--n-members", type=_integer, default=100)
    s.add_argument(
        "--system",
        default=None,
        help="built-in system that made the data: adds its best Markov reference",
    )
    s.add_argument("--dt", type=_finite, default=None)
    s.add_argument("--seed", type=_seed, default=0)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("reproduce", help="reproduce a paper example end to end")
    s.add_argument(
        "example",
        help="ex4.1 ... ex4.5, a system name, all, or alanine (molecular dynamics of alanine "
        "dipeptide, needs pip install 'slowflow[md]')",
    )
    s.add_argument("--out", required=True)
    s.add_argument("--quick", action="store_true", help="reduced sizes (about a minute)")
    s.add_argument(
        "--models",
        default=None,
        help="comma list: default, memory, gaussian-net, network, paper, maf, nsf, coupling, "
        "km, sfi, averaged",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--max-minutes",
        type=_finite,
        default=None,
        help="training budget per model (default 2.5; 0.5 with --quick)",
    )
    s.set_defaults(func=cmd_reproduce)
