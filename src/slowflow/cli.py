"""Command-line interface: thin subcommands over the library.

Every user error prints one line ``slowflow: error: ...`` and exits with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import ConfigError, SlowflowError


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers like 1.5,1.0, got {text!r}") from None


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["slowflow", *sys.argv[1:]])


# ----------------------------------------------------------------------------- systems
def cmd_systems(args) -> int:
    from .systems import list_systems

    rows = [("name", "alias", "slow", "fast", "eps", "source")]
    for s in list_systems():
        eps = "-" if s.eps is None else f"{s.eps:.4g}"
        rows.append(
            (
                s.name,
                ",".join(s.aliases) or "-",
                str(s.slow_dim),
                str(s.fast_dim),
                eps,
                s.param_source,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


# ---------------------------------------------------------------------------- simulate
def cmd_simulate(args) -> int:
    from .data import save_trajectories
    from .simulate import simulate_bursts, simulate_ensemble
    from .systems import get_system

    system = get_system(args.system)
    _check_out(args.out, (".npz", ".csv"))
    if args.x0 is not None and args.n_traj is not None:
        raise ConfigError(
            "give either --n-traj (training bursts) or --x0 (test ensemble), not both"
        )
    common = dict(
        dt_obs=args.dt_obs, substeps=args.substeps, seed=args.seed, keep_fast=args.keep_fast
    )
    if args.x0 is not None:
        x0 = _floats(args.x0)
        if len(x0) != system.slow_dim:
            raise ConfigError(
                f"--x0 has {len(x0)} value(s) but {system.name} has "
                f"{system.slow_dim} slow variable(s)"
            )
        data = simulate_ensemble(system, x0, n_paths=args.n_paths, t_end=args.t_end, **common)
    else:
        data = simulate_bursts(system, n_traj=args.n_traj, t_end=args.t_end, **common)
    data.meta["command"] = _command_line()
    save_trajectories(data, args.out)
    print(
        f"wrote {args.out}: {data.n_traj} trajectories x {data.n_obs} observations x "
        f"d={data.dim}, dt={data.dt:g} ({data.meta.get('seconds', 0):.1f} s)"
    )
    return 0


def _check_out(path, suffixes) -> None:
    if Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"--out {path}: unsupported extension; use one of {', '.join(suffixes)}")


# --------------------------------------------------------------------------------- fit
def cmd_fit(args) -> int:
    from .model.io import save_model
    from .train import TrainConfig, fit

    _check_out(args.out, (".pt",))
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        max_minutes=args.max_minutes,
        pairs_per_traj=args.pairs_per_traj,
        schedule=args.schedule,
        patience=args.patience,
        stream=args.stream,
        block_pairs=args.block_pairs,
    )
    # under torchrun every process trains; rank 0 alone writes the model and checkpoints
    lead = int(os.environ.get("RANK", "0") or 0) == 0
    checkpoint = Path(str(args.out) + ".ckpt")
    if args.resume and not checkpoint.exists():
        raise ConfigError(f"--resume: no checkpoint {checkpoint} (it is written while fitting)")
    stop = {"flag": False}

    def on_term(signum, frame):  # SIGTERM: stop at the next step, keep the best model
        stop["flag"] = True

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        model = fit(
            args.data,
            args.preset,
            cfg,
            dt=args.dt,
            checkpoint=checkpoint if lead else None,
            resume=checkpoint if args.resume else None,
            stop_flag=lambda: stop["flag"],
        )
    finally:
        signal.signal(signal.SIGTERM, old)
    if not lead:
        return 130 if "interrupted" in model.history["stop_reason"] else 0
    model.meta["command"] = _command_line()
    save_model(model, args.out)
    h = model.history
    print(
        f"wrote {args.out}: best validation NLL {h['best_val_nll']:.4f} nats/pair at epoch "
        f"{h['best_epoch']}, {h['train_seconds']:.0f} s ({h['stop_reason']})"
    )
    if "interrupted" not in h["stop_reason"]:
        checkpoint.unlink(missing_ok=True)
        return 0
    print(f"checkpoint kept at {checkpoint}; continue with --resume")
    return 130


# ----------------------------------------------------------------------------- predict
#: Largest ensemble (as float64 paths) that ``predict`` builds in memory for .npz/.csv output;
#: larger ensembles must go to .npy, which is streamed to disk chunk by chunk.
IN_MEMORY_LIMIT_BYTES = 2 * 2**30


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def cmd_predict(args) -> int:
    from .model.io import load_model

    _check_out(args.out, (".npz", ".csv", ".npy"))
    for name in ("every", "chunk_paths"):  # --steps and --n-paths: checked by the rollout
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be a positive integer, got {value}")
    if args.steps >= 1 and args.steps % args.every:
        raise ConfigError(
            f"--steps {args.steps} is not a multiple of --every {args.every}; the output keeps "
            "steps 0, every, ..., steps"
        )
    model = load_model(args.model, device=args.device if args.device != "auto" else "cpu")
    x0 = _floats(args.x0)
    n_obs = args.steps // args.every + 1
    meta = {
        "kind": "prediction",
        "model": str(args.model),
        "seed": args.seed,
        "x0": x0,
        "command": _command_line(),
        "slowflow_version": model.meta.get("slowflow_version"),
    }
    progress = True if args.progress else None
    if Path(args.out).suffix.lower() == ".npy":
        from .rollout import simulate_to_file

        summary = simulate_to_file(
            model,
            np.array(x0),
            args.steps,
            args.out,
            n_paths=args.n_paths,
            seed=args.seed,
            chunk_paths=args.chunk_paths,
            every=args.every,
            progress=progress,
            meta=meta,
        )
        size = Path(args.out).stat().st_size
        detail = f"{n_obs} observations every {args.every} steps, " if args.every > 1 else ""
        msg = summary.message()
        print(
            f"wrote {args.out} and {args.out}.json: {args.n_paths} paths x {args.steps} steps "
            f"({detail}float32, {_gb(size)}), d={model.dim}" + (f" (warning: {msg})" if msg else "")
        )
        return 0

    from .data import Trajectories, save_trajectories
    from .rollout import simulate

    need = 8 * args.n_paths * (args.steps + 1) * model.dim
    if need > IN_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"--out {args.out}: {args.n_paths} paths x {args.steps + 1} observations x "
            f"d={model.dim} take {_gb(need)} in memory, above the {_gb(IN_MEMORY_LIMIT_BYTES)} "
            f"limit for {Path(args.out).suffix} output; write a .npy file instead (streamed to "
            "disk in chunks, e.g. --out ensemble.npy)"
        )
    paths, summary = simulate(
        model,
        np.array(x0),
        args.steps,
        args.n_paths,
        seed=args.seed,
        batch_size=args.chunk_paths,
        progress=progress,
        return_summary=True,
    )
    if args.every > 1:
        paths = paths[:, :: args.every]
    names = tuple(model.meta.get("names") or [f"x{i + 1}" for i in range(model.dim)])
    if args.every > 1:
        meta["every"] = args.every
    data = Trajectories(x=paths, dt=float(model.dt) * args.every, names=names, meta=meta)
    save_trajectories(data, args.out)
    msg = summary.message()
    print(
        f"wrote {args.out}: {args.n_paths} paths x {args.steps} steps, d={model.dim}"
        + (f" (warning: {msg})" if msg else "")
    )
    return 0


# ------------------------------------------------------------------------------- drift
def cmd_drift(args) -> int:
    from .model.io import load_model
    from .rollout import drift_diffusion

    model = load_model(args.model)
    if args.x is not None:
        pts = (
            np.array(_floats(args.x)).reshape(-1, model.dim)
            if model.dim > 1
            else np.array(_floats(args.x)).reshape(-1, 1)
        )
    data_stats = None
    if args.data is not None:
        from .data import check_dim, load_trajectories, make_pairs
        from .rollout import binned_increment_stats

        data = load_trajectories(args.data, dt=float(model.dt))
        check_dim(data, model.dim, str(args.data))
        x0, x1 = make_pairs(data)
        edges = np.quantile(x0[:, 0], np.linspace(0.0, 1.0, args.n_points + 1))
        centers, mean, std, counts = binned_increment_stats(x0, x1, edges)
        ok = counts >= 2
        data_stats = (mean[ok] / data.dt, std[ok] ** 2 / data.dt)
        if args.x is None:
            pts = centers[ok]
    if args.x is None and data_stats is None:
        lo, hi = model.x_lo.numpy(), model.x_hi.numpy()
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            lo, hi = -np.ones(model.dim), np.ones(model.dim)
        pts = np.stack([np.linspace(lo[i], hi[i], args.n_points) for i in range(model.dim)], 1)
    dd = drift_diffusion(model, pts, n_samples=args.n_samples, seed=args.seed)
    if args.out:
        from ._io import atomic_write

        with atomic_write(Path(args.out)) as tmp:
            np.savez(
                tmp,
                x=dd.x,
                drift=dd.drift,
                drift_se=dd.drift_se,
                diffusion=dd.diffusion,
                diffusion_se=dd.diffusion_se,
                dt=dd.dt,
            )
        print(f"wrote {args.out}")
    else:
        head = "x | drift (+-se) | diffusion diag (+-se)"
        print(
            head
            + (
                " | data: drift | data: diffusion diag"
                if data_stats is not None and args.x is None
                else ""
            )
        )
        for i in range(len(dd.x)):
            xs = ",".join(f"{v:.4g}" for v in dd.x[i])
            a = ",".join(f"{v:.4g}+-{e:.2g}" for v, e in zip(dd.drift[i], dd.drift_se[i]))
            b = ",".join(
                f"{dd.diffusion[i, j, j]:.4g}+-{dd.diffusion_se[i, j, j]:.2g}"
                for j in range(model.dim)
            )
            row = f"{xs} | {a} | {b}"
            if data_stats is not None and args.x is None:
                row += " | " + ",".join(f"{v:.4g}" for v in data_stats[0][i])
                row += " | " + ",".join(f"{v:.4g}" for v in data_stats[1][i])
            print(row)
    return 0


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    from .store import DEFAULT_BLOCK_PAIRS

    p = argparse.ArgumentParser(
        prog="slowflow",
        description=(
            "Learn the slow dynamics of multiscale stochastic systems from short bursts of "
            "slow-variable data."
        ),
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from . import __version__

    p.add_argument("--version", action="version", version=f"slowflow {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("systems", help="list the built-in benchmark systems")
    s.set_defaults(func=cmd_systems)

    s = sub.add_parser("simulate", help="simulate training bursts or a test ensemble")
    s.add_argument("system", help="system name or alias (see `slowflow systems`)")
    s.add_argument("--out", required=True, help="output file (.npz or .csv)")
    s.add_argument(
        "--n-traj",
        type=int,
        default=None,
        help="training bursts from uniform starts in the system's box (default 10000)",
    )
    s.add_argument("--x0", default=None, help="test ensemble from this slow start, e.g. 1.5,1.0")
    s.add_argument("--n-paths", type=int, default=10_000, help="paths of a test ensemble")
    s.add_argument(
        "--t-end",
        type=float,
        default=None,
        help="duration (default: 1 for bursts, the paper's horizon for ensembles)",
    )
    s.add_argument("--dt-obs", type=float, default=None, help="observation step (default 0.01)")
    s.add_argument(
        "--substeps",
        type=int,
        default=None,
        help="Euler-Maruyama substeps per observation (default: dt = 1e-4)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--keep-fast", action="store_true", help="also store the fast variables")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser(
        "fit",
        help="learn the one-step map from trajectory data",
        epilog="Several processes or GPUs: torchrun --nproc-per-node N -m slowflow fit DATA "
        "--out M.pt (DistributedDataParallel; --batch-size is the global batch; rank 0 "
        "writes). Files larger than memory: --stream.",
    )
    s.add_argument("data", help="trajectory file (.npz, .npy, .csv, .mat)")
    s.add_argument("--out", required=True, help="model file to write (.pt)")
    s.add_argument(
        "--preset",
        default="default",
        help="model preset: default, paper, maf, nsf, coupling, gaussian",
    )
    s.add_argument("--dt", type=float, default=None, help="observation step if the file lacks it")
    s.add_argument("--epochs", type=int, default=40)
    s.add_argument("--batch-size", type=int, default=2048)
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--schedule", default="cosine", help="cosine, constant or step_cyclic")
    s.add_argument("--patience", type=int, default=20)
    s.add_argument(
        "--pairs-per-traj",
        type=int,
        default=None,
        help="use this many random pairs per trajectory (default: all)",
    )
    s.add_argument("--max-minutes", type=float, default=None, help="wall-clock budget")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    s.add_argument(
        "--stream",
        action="store_true",
        help="read pairs from disk piece by piece (.npz saved uncompressed or .npy): "
        "for files larger than memory",
    )
    s.add_argument(
        "--block-pairs",
        type=int,
        default=DEFAULT_BLOCK_PAIRS,
        help=f"pairs per piece read from disk with --stream (default {DEFAULT_BLOCK_PAIRS})",
    )
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("predict", help="roll a model out into an ensemble of trajectories")
    s.add_argument("model")
    s.add_argument("--x0", required=True, help="start, e.g. 1.5 or 1.5,1.0")
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--n-paths", type=int, default=10_000)
    s.add_argument(
        "--out",
        required=True,
        help="output file: .npz or .csv (built in memory, up to 2 GiB of float64 paths), or "
        ".npy (float32, streamed to disk chunk by chunk, any size; dt and provenance go to "
        "OUT.json next to it)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--every", type=int, default=1, help="keep every k-th step (steps must be a multiple)"
    )
    s.add_argument(
        "--chunk-paths",
        type=int,
        default=65_536,
        help="paths rolled out together (memory ~ chunk-paths x kept steps x d x 4 bytes); "
        "the paths depend on the seed and this number",
    )
    s.add_argument(
        "--progress", action="store_true", help="always show a progress bar (default: large runs)"
    )
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("drift", help="effective drift and diffusion read off a model")
    s.add_argument("model")
    s.add_argument("--x", default=None, help="points, e.g. 0,0.5,1 (d=1) or 1,1,0,0 (d=2 pairs)")
    s.add_argument("--n-points", type=int, default=11, help="grid points over the data range")
    s.add_argument(
        "--data",
        default=None,
        help="trajectory file: compare with the data's binned increment statistics "
        "(points at the bins' centres of the first component)",
    )
    s.add_argument("--n-samples", type=int, default=20_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default=None, help="write an .npz instead of printing")
    s.set_defaults(func=cmd_drift)

    try:
        from .evaluate.cli import add_commands
    except ImportError:  # evaluation commands are optional until present
        add_commands = None
    if add_commands is not None:
        add_commands(sub)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"slowflow: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        warnings.showwarning = _show_warning
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SlowflowError as exc:
        if args.debug:
            raise
        print(f"slowflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slowflow: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        if args.debug:
            raise
        print(
            f"slowflow: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            " (run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 2


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
