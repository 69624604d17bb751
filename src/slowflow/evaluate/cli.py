"""Subcommands ``evaluate``, ``check`` and ``reproduce`` (registered by slowflow.cli)."""

from __future__ import annotations

from pathlib import Path


def cmd_evaluate(args) -> int:
    from ..data import load_trajectories
    from .report import evaluate_ensembles, figures_for, public, write_json

    pred = load_trajectories(args.pred, dt=args.dt)
    ref = load_trajectories(args.ref, dt=args.dt)
    ref_b = load_trajectories(args.ref_b, dt=args.dt) if args.ref_b else None
    for other, label in ((ref, args.ref), (ref_b, args.ref_b)):
        if other is not None and other.x.shape[1:] != pred.x.shape[1:]:
            from ..errors import DataError

            raise DataError(
                f"{label}: shape {other.x.shape} does not match the prediction "
                f"{args.pred} {pred.x.shape} (observations and d must agree)"
            )
    times = [float(t) for t in args.times.split(",")] if args.times else None
    ev = evaluate_ensembles(pred.x, ref.x, None if ref_b is None else ref_b.x, pred.dt, times)
    out = Path(args.out)
    write_json(public(ev), out / "metrics.json")
    figures_for(
        pred.x,
        ref.x,
        pred.dt,
        ev["times"],
        out,
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


def cmd_check(args) -> int:
    from ..data import check_dim, load_trajectories
    from ..model.io import load_model
    from . import calibration, plots
    from .report import write_json

    model = load_model(args.model)
    data = load_trajectories(args.data, dt=args.dt if args.dt else float(model.dt))
    check_dim(data, model.dim, str(args.data))
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
    out = Path(args.out)
    write_json(res.to_dict(), out / "calibration.json")
    scores = {"model": res.crps[:, 0]}
    if res.crps_reference is not None:
        scores["reference"] = res.crps_reference[:, 0]
    plots.save_figure(
        plots.calibration(
            res.leads,
            scores,
            {"lead 1": res.pit_counts[0, 0], f"lead {int(res.leads[-1])}": res.pit_counts[-1, 0]},
            "CRPS of x1",
        ),
        out / "calibration.png",
    )
    print(res.summary())
    return 0 if res.calibrated else 1


def cmd_reproduce(args) -> int:
    from ..reproduce import reproduce

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
    s.add_argument("--dt", type=float, default=None)
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "check",
        help="calibration of a model's kernel on held-out data "
        "(exit 0 calibrated, 1 flagged, 2 bad input)",
    )
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--max-lead", type=int, default=10)
    s.add_argument("--n-starts", type=int, default=2000)
    s.add_argument("--n-members", type=int, default=100)
    s.add_argument(
        "--system",
        default=None,
        help="built-in system that made the data: adds its best Markov reference",
    )
    s.add_argument("--dt", type=float, default=None)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("reproduce", help="reproduce a paper example end to end")
    s.add_argument("example", help="ex4.1 ... ex4.5, a system name, or all")
    s.add_argument("--out", required=True)
    s.add_argument("--quick", action="store_true", help="reduced sizes (about a minute)")
    s.add_argument(
        "--models",
        default=None,
        help="comma list: default, paper, maf, nsf, coupling, gaussian, averaged",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="training budget per model (default 2.5; 0.5 with --quick)",
    )
    s.set_defaults(func=cmd_reproduce)
