"""``slowflow evaluate``, ``check`` and ``reproduce``: how good is a model?"""

from __future__ import annotations

from pathlib import Path

from ..io.atomic import check_output
from .options import finite, floats, integer, seed


def cmd_evaluate(args) -> int:
    from ..evaluate.files import evaluate_files

    times = floats(args.times, "--times") if args.times else None
    ev = evaluate_files(
        args.pred, args.ref, args.out, ref_b=args.ref_b, times=times, dt=args.dt,
        stream=args.stream, w1_steps=args.w1_steps,
    )  # fmt: skip
    w1 = ev["w1"]
    line = "W1 time-avg " + ", ".join(f"{v:.4g}" for v in w1["w1_time_avg"])
    if "ratio_time_avg" in w1:
        line += "; W1/floor " + ", ".join(f"{v:.2f}" for v in w1["ratio_time_avg"])
    how = " (streamed)" if "streamed" in ev else ""
    print(f"{line}{how}; wrote {Path(args.out) / 'metrics.json'} and figures")
    return 0


def cmd_check(args) -> int:
    from ..evaluate.files import check_files

    res = check_files(
        args.model, args.data, args.out, dt=args.dt, system=args.system, seed=args.seed,
        max_lead=args.max_lead, n_starts=args.n_starts, n_members=args.n_members,
    )  # fmt: skip
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
        args.example, args.out, quick=args.quick, models=models, seed=args.seed,
        max_minutes=args.max_minutes,
    )  # fmt: skip
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def register(sub) -> None:
    """Add ``evaluate``, ``check`` and ``reproduce`` to the subcommands."""
    _register_evaluate(sub)
    _register_check(sub)
    _register_reproduce(sub)


def _register_evaluate(sub) -> None:
    s = sub.add_parser("evaluate", help="compare a predicted ensemble with reference ensembles")
    s.add_argument("pred")
    s.add_argument("ref")
    s.add_argument("--ref-b", default=None, help="independent second reference (noise floor)")
    s.add_argument("--times", default=None, help="times for histograms, e.g. 1,2,4")
    s.add_argument("--dt", type=finite, default=None)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument(
        "--stream",
        action="store_true",
        help="read the ensembles chunk-wise (automatic for a .npy input above 1 GiB as float64)",
    )
    s.add_argument(
        "--w1-steps",
        type=integer,
        default=201,
        help="when streaming: W1 time averages over at most this many evenly spaced steps",
    )
    s.set_defaults(func=cmd_evaluate)


def _register_check(sub) -> None:
    s = sub.add_parser(
        "check",
        help="calibration of a model's kernel on held-out data "
        "(exit 0 calibrated, 1 flagged, 2 bad input)",
    )
    s.add_argument("model")
    s.add_argument("data")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--max-lead", type=integer, default=10)
    s.add_argument("--n-starts", type=integer, default=2000)
    s.add_argument("--n-members", type=integer, default=100)
    s.add_argument(
        "--system",
        default=None,
        help="built-in system that made the data: adds its best Markov reference",
    )
    s.add_argument("--dt", type=finite, default=None)
    s.add_argument("--seed", type=seed, default=0)
    s.set_defaults(func=cmd_check)


def _register_reproduce(sub) -> None:
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
        help="comma list: default (as slowflow fit: memory chosen from the data), markov "
        "(the default at memory 0), gaussian-net, network, paper, maf, nsf, coupling, "
        "km, sfi, averaged, exact (a third reference ensemble: what a perfect model scores)",
    )
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument(
        "--max-minutes",
        type=finite,
        default=None,
        help="training budget per model (default 2.5; 0.5 with --quick)",
    )
    s.set_defaults(func=cmd_reproduce)
