"""Command-line interface: thin subcommands over the library.

Every user error prints one line ``slowflow: error: ...`` and exits with code 2; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shlex
import signal
import sys
import warnings
from pathlib import Path

import numpy as np

from ._io import check_output
from .errors import ConfigError, DataError, SlowflowError

_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _number(text: str, option: str) -> float:
    """One finite number written plainly (no inf, nan, inner spaces or underscores)."""
    item = str(text).strip()
    if not _FLOAT.fullmatch(item):
        raise ConfigError(f"{option}: expected a number like 1.5 or 2e-3, got {text!r}")
    value = float(item)
    if not math.isfinite(value):
        raise ConfigError(f"{option}: {text!r} is too large (overflows to infinity)")
    return value


def _floats(text: str, option: str = "--x0") -> list[float]:
    """Comma-separated finite numbers, parsed strictly: ``"1 2"`` is an error, not 12."""
    items = str(text).split(",")
    if any(not item.strip() for item in items):
        raise ConfigError(
            f"{option}: expected comma-separated numbers like 1.5,1.0, got {text!r} (an empty item)"
        )
    return [_number(item, option) for item in items]


def _finite(text: str) -> float:
    """argparse type of float options: finite numbers only."""
    try:
        return _number(text, "value")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None


def _memory(text: str):
    """--memory: an integer >= 0 or 'auto'."""
    if str(text).strip().lower() == "auto":
        return "auto"
    return _integer_or_zero(text)


def _integer_or_zero(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _histories(path, model, n_paths: int) -> np.ndarray:
    """Starts of ``predict --history FILE``: the last K + 1 observations of each of the
    file's trajectories, one history (K + 1, d) for all paths or (n_paths, K + 1, d)."""
    from .data import check_dim, load_trajectories
    from .evaluate.calibration import with_model_periods

    data = load_trajectories(path, dt=float(model.dt))
    check_dim(data, model.dim, str(path))
    data = with_model_periods(data, model, str(path))
    k = model.memory
    if int(data.lengths.min()) < k + 1:
        raise DataError(
            f"{path}: a trajectory holds {int(data.lengths.min())} observations; the model has "
            f"memory {k} and needs the last {k + 1} of each"
        )
    h = np.stack([data.x[i, L - k - 1 : L] for i, L in enumerate(data.lengths.tolist())])
    if h.shape[0] not in (1, n_paths):
        raise DataError(
            f"{path}: {h.shape[0]} histories for --n-paths {n_paths}; give one for all paths "
            "or one per path"
        )
    h = h[0] if h.shape[0] == 1 else h
    return h if k else h[..., -1, :]


def _integer(text: str) -> int:
    """argparse type of integer options: ``12``, ``-3`` or an exact ``1e6``; no ``1.5``."""
    item = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", item):
        return int(item)
    if _FLOAT.fullmatch(item):
        value = float(item)
        if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
            return int(value)
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")


def _seed(text: str) -> int:
    """argparse type of --seed: an integer in [0, 2^63)."""
    value = _integer(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to 2^63 - 1, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with slowflow's one-line errors (``slowflow: error: ...``, exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"slowflow: error: {self.prog.removeprefix('slowflow ')}: {message}", file=sys.stderr)
        raise SystemExit(2)


class _Given(argparse.Action):
    """Store the value and remember that the option was given (``args.given``)."""

    def __init__(self, *a, flag: bool = False, **kw) -> None:
        self.flag = flag
        if flag:
            kw.update(nargs=0, default=False)
        super().__init__(*a, **kw)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, True if self.flag else values)
        given = set(getattr(namespace, "given", set()))
        given.add(self.dest)
        namespace.given = given


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
    check_output(args.out)
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


def _check_out(path, suffixes, inputs=()) -> None:
    if Path(path).suffix.lower() not in suffixes:
        raise ConfigError(f"--out {path}: unsupported extension; use one of {', '.join(suffixes)}")
    check_output(path, inputs)


# --------------------------------------------------------------------------------- fit
_FIT_OPTIONS = (
    "skip_first",
    "epochs",
    "batch_size",
    "lr",
    "seed",
    "device",
    "max_minutes",
    "pairs_per_traj",
    "schedule",
    "patience",
    "stream",
    "block_pairs",
)


def cmd_fit(args) -> int:
    from .model.io import save_model
    from .train import TrainConfig, fit

    checkpoint = Path(str(args.out) + ".ckpt")
    _check_out(args.out, (".pt",), (args.data,))
    check_output(checkpoint, (args.data,), option="--out (its checkpoint)")
    given = getattr(args, "given", set())
    if args.resume:
        if not checkpoint.exists():
            raise ConfigError(f"--resume: no checkpoint {checkpoint} (it is written while fitting)")
        # settings come from the checkpoint; the options given must agree with it
        cfg, overrides = None, {k: getattr(args, k) for k in _FIT_OPTIONS if k in given}
        preset = args.preset if "preset" in given else None
    else:
        cfg = TrainConfig(**{k: getattr(args, k) for k in _FIT_OPTIONS})
        overrides, preset = {}, args.preset
    # under torchrun every process trains; rank 0 alone writes the model and checkpoints
    lead = int(os.environ.get("RANK", "0") or 0) == 0
    stop = {"flag": False}

    def on_term(signum, frame):  # SIGTERM: stop at the next step, keep the best model
        stop["flag"] = True

    data = args.data
    if args.periodic:
        if args.stream:
            raise ConfigError(
                "--periodic with --stream: declare the angles in the file's metadata "
                "(meta 'periodic': {name: [lo, hi]})"
            )
        from .data import declare_periodic, load_trajectories

        names = [v for v in args.periodic.split(",") if v.strip()]
        data = declare_periodic(load_trajectories(args.data, dt=args.dt), names, str(args.data))
    old = signal.signal(signal.SIGTERM, on_term)
    common = dict(
        dt=args.dt, checkpoint=checkpoint if lead else None, stop_flag=lambda: stop["flag"]
    )
    try:
        if args.memory == "auto":
            if args.resume:
                raise ConfigError(
                    "--memory auto cannot --resume; resume with the chosen --memory K"
                )
            from .selection import fit_memory_auto

            model = fit_memory_auto(data, preset, cfg, **common)
        else:
            memory = args.memory if "memory" in given or not args.resume else None
            model = fit(
                data,
                preset,
                cfg,
                resume=checkpoint if args.resume else None,
                memory=memory,
                **common,
                **overrides,
            )
    finally:
        signal.signal(signal.SIGTERM, old)
    h = model.history
    if "memory_selection" in h and lead:
        from .selection import describe

        print("memory selection (held-out one-step error, paired over trajectories):")
        print(describe(h["memory_selection"]))
    interrupted = "interrupted" in h["stop_reason"]
    closed_form = model.n_parameters() == 0  # drift and covariance in closed form
    if interrupted and h["best_epoch"] < 0:
        kept = f"; {checkpoint} is kept (continue with --resume)" if checkpoint.exists() else ""
        what = "the closed-form fit completed" if closed_form else "the first epoch completed"
        print(f"slowflow: interrupted before {what}; nothing was written{kept}", file=sys.stderr)
        return 130
    if not lead:
        return 130 if interrupted else 0
    model.meta["command"] = _command_line()
    save_model(model, args.out)
    if closed_form:
        deg = (
            (h.get("drift_basis") or {}).get("degree"),
            (h.get("covariance_basis") or {}).get("degree"),
        )
        print(
            f"wrote {args.out}: closed form (drift degree {deg[0]}, covariance degree {deg[1]}), "
            f"validation NLL {h['best_val_nll']:.4f} nats/pair, {h['train_seconds']:.1f} s"
        )
    else:
        print(
            f"wrote {args.out}: best validation NLL {h['best_val_nll']:.4f} nats/pair at epoch "
            f"{h['best_epoch']}, {h['train_seconds']:.0f} s ({h['stop_reason']})"
        )
    if not interrupted:
        checkpoint.unlink(missing_ok=True)
        return 0
    if checkpoint.exists():
        print(f"checkpoint kept at {checkpoint}; continue with --resume")
    return 130


# ----------------------------------------------------------------------------- predict
#: Largest ensemble (as float64 paths) that ``predict`` writes as .csv (a CSV is about three
#: times larger than the binary formats and slow to read); .npz and .npy have no limit.
#: All three are streamed: memory is one chunk of paths.
IN_MEMORY_LIMIT_BYTES = 2 * 2**30


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def cmd_predict(args) -> int:
    from .model.io import load_model
    from .rollout import SIDECAR_SUFFIX, simulate_to_file, simulate_to_trajectories_file

    ext = Path(args.out).suffix.lower()
    _check_out(args.out, (".npz", ".csv", ".npy"), (args.model,))
    if ext == ".npy":
        check_output(str(args.out) + SIDECAR_SUFFIX, (args.model,), option="--out (its sidecar)")
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
    if (args.x0 is None) == (args.history is None):
        raise ConfigError("give one of --x0 (a start) and --history (a file of starts)")
    from .train import resolve_device

    device = resolve_device(args.device if args.device != "auto" else "cpu")
    model = load_model(args.model, device=device)
    if args.history is not None:
        start = _histories(args.history, model, args.n_paths)
        x0 = start[..., -1, :].tolist() if start.ndim == 3 else start[-1].tolist()
    else:
        x0 = _floats(args.x0)
        start = np.array(x0)
    n_obs = args.steps // args.every + 1
    need = 8 * args.n_paths * n_obs * model.dim
    if ext == ".csv" and need > IN_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"--out {args.out}: {args.n_paths} paths x {n_obs} observations x d={model.dim} "
            f"are {_gb(need)} as float64, above the {_gb(IN_MEMORY_LIMIT_BYTES)} limit for .csv "
            "output (about 3x larger as text, slow to read); write a .npy or .npz file instead "
            "(both streamed to disk in chunks, e.g. --out ensemble.npy)"
        )
    meta = {
        "kind": "prediction",
        "model": str(args.model),
        "seed": args.seed,
        "x0": x0,
        "command": _command_line(),
        "slowflow_version": model.meta.get("slowflow_version"),
    }
    if args.every > 1:
        meta["every"] = args.every
    periodic = (model.meta.get("data_meta") or {}).get("periodic")
    if periodic:
        meta["periodic"] = periodic
    if args.history is not None:
        meta["history"] = str(args.history)
        meta["x0"] = x0 if np.ndim(x0) == 1 else "per path (see history)"
    writer = simulate_to_file if ext == ".npy" else simulate_to_trajectories_file
    summary = writer(
        model,
        start,
        args.steps,
        args.out,
        n_paths=args.n_paths,
        seed=args.seed,
        chunk_paths=args.chunk_paths,
        every=args.every,
        progress=True if args.progress else None,
        meta=meta,
    )
    msg = summary.message()
    warn = f" (warning: {msg})" if msg else ""
    if ext == ".npy":
        size = Path(args.out).stat().st_size
        detail = f"{n_obs} observations every {args.every} steps, " if args.every > 1 else ""
        print(
            f"wrote {args.out} and {args.out}.json: {args.n_paths} paths x {args.steps} steps "
            f"({detail}float32, {_gb(size)}), d={model.dim}" + warn
        )
    else:
        print(f"wrote {args.out}: {args.n_paths} paths x {args.steps} steps, d={model.dim}" + warn)
    return 0


# ------------------------------------------------------------------------------- drift
def cmd_drift(args) -> int:
    from .model.io import load_model
    from .rollout import drift_diffusion

    if args.out:
        _check_out(args.out, (".npz",), (args.model, args.data))
    if args.n_points < 1:
        raise ConfigError(f"--n-points must be a positive integer, got {args.n_points}")
    model = load_model(args.model)
    if args.x is not None:
        values = _floats(args.x, "--x")
        if len(values) % model.dim:
            raise ConfigError(
                f"--x has {len(values)} value(s), not a multiple of the model's d={model.dim}"
            )
        pts = np.array(values).reshape(-1, model.dim)
    from ._limits import check_memory

    check_memory(8.0 * args.n_points * 4 * model.dim, f"--n-points {args.n_points}: the points")
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
        from ._io import atomic_open

        with atomic_open(args.out) as fh:
            np.savez(
                fh,
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

    p = _Parser(
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
        type=_integer,
        default=None,
        help="training bursts from uniform starts in the system's box (default 10000)",
    )
    s.add_argument("--x0", default=None, help="test ensemble from this slow start, e.g. 1.5,1.0")
    s.add_argument("--n-paths", type=_integer, default=10_000, help="paths of a test ensemble")
    s.add_argument(
        "--t-end",
        type=_finite,
        default=None,
        help="duration (default: 1 for bursts, the paper's horizon for ensembles)",
    )
    s.add_argument("--dt-obs", type=_finite, default=None, help="observation step (default 0.01)")
    s.add_argument(
        "--substeps",
        type=_integer,
        default=None,
        help="Euler-Maruyama substeps per observation (default: dt = 1e-4)",
    )
    s.add_argument("--seed", type=_seed, default=0)
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
        action=_Given,
        default="default",
        help="model preset: default (= gaussian), coupling, nsf, maf, gaussian-net, network, paper",
    )
    s.add_argument(
        "--dt",
        action=_Given,
        type=_finite,
        default=None,
        help="observation step if the file lacks it",
    )
    s.add_argument("--epochs", action=_Given, type=_integer, default=40)
    s.add_argument("--batch-size", action=_Given, type=_integer, default=2048)
    s.add_argument("--lr", action=_Given, type=_finite, default=2e-3)
    s.add_argument(
        "--schedule", action=_Given, default="cosine", help="cosine, constant or step_cyclic"
    )
    s.add_argument("--patience", action=_Given, type=_integer, default=20)
    s.add_argument(
        "--pairs-per-traj",
        action=_Given,
        type=_integer,
        default=None,
        help="use this many random pairs per trajectory (default: all)",
    )
    s.add_argument(
        "--max-minutes", action=_Given, type=_finite, default=None, help="wall-clock budget"
    )
    s.add_argument("--seed", action=_Given, type=_seed, default=0)
    s.add_argument("--device", action=_Given, default="auto", help="auto, cpu or cuda")
    s.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    s.add_argument(
        "--stream",
        action=_Given,
        flag=True,
        help="read pairs from disk piece by piece (.npz saved uncompressed or .npy): "
        "for files larger than memory",
    )
    s.add_argument(
        "--block-pairs",
        action=_Given,
        type=_integer,
        default=DEFAULT_BLOCK_PAIRS,
        help=f"pairs per piece read from disk with --stream (default {DEFAULT_BLOCK_PAIRS})",
    )
    s.add_argument(
        "--memory",
        action=_Given,
        type=_memory,
        default=0,
        help="past observations the map is conditioned on besides x_n (a delay embedding "
        "for data that are not Markov at Delta), or 'auto': chosen on held-out bursts "
        "together with --skip-first (default 0)",
    )
    s.add_argument(
        "--periodic",
        default=None,
        help="variables that are angles in radians on [-pi, pi) (names or 0-based indices, "
        "e.g. phi,psi); stored in the model. Data files can declare them instead "
        "(meta 'periodic')",
    )
    s.add_argument(
        "--skip-first",
        action=_Given,
        type=_integer_or_zero,
        default=0,
        help="drop the first N observations of every trajectory (transients of bursts "
        "started out of equilibrium; default 0)",
    )
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("predict", help="roll a model out into an ensemble of trajectories")
    s.add_argument("model")
    s.add_argument("--x0", default=None, help="start, e.g. 1.5 or 1.5,1.0")
    s.add_argument(
        "--history",
        default=None,
        help="trajectory file of starts for a map with memory K: the last K + 1 observations "
        "of each trajectory (one for all paths, or one per path); without it --x0 draws "
        "histories from the training data near x0",
    )
    s.add_argument("--steps", type=_integer, required=True)
    s.add_argument("--n-paths", type=_integer, default=10_000)
    s.add_argument(
        "--out",
        required=True,
        help="output file, streamed to disk chunk by chunk: .npz (float64), .csv (up to 2 GiB "
        "of float64 paths) or .npy (float32; dt and provenance go to OUT.json next to it)",
    )
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument(
        "--every", type=_integer, default=1, help="keep every k-th step (steps must be a multiple)"
    )
    s.add_argument(
        "--chunk-paths",
        type=_integer,
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
    s.add_argument("--n-points", type=_integer, default=11, help="grid points over the data range")
    s.add_argument(
        "--data",
        default=None,
        help="trajectory file: compare with the data's binned increment statistics "
        "(points at the bins' centres of the first component)",
    )
    s.add_argument("--n-samples", type=_integer, default=20_000)
    s.add_argument("--seed", type=_seed, default=0)
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


_DISCARDED = "the output being written was discarded; existing files are unchanged"


def _interrupt(signum, frame):
    """SIGTERM (and SIGHUP) stop a command the way Ctrl-C does: temporary files are removed
    and existing outputs stay as they were."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return exc.code if isinstance(exc.code, int) else 2
    if not args.debug:
        warnings.showwarning = _show_warning
    if args.command is None:
        parser.print_help()
        return 2
    handlers = {}
    try:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is not None:
                with contextlib.suppress(ValueError):  # not the main thread: leave them
                    handlers[sig] = signal.signal(sig, _interrupt)
        return int(args.func(args) or 0)
    except SlowflowError as exc:
        if args.debug:
            raise
        print(f"slowflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slowflow: interrupted; {_DISCARDED}", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print("slowflow: error: out of memory; lower the sizes asked for", file=sys.stderr)
        return 2
    except (OSError, ValueError, OverflowError) as exc:
        if args.debug:
            raise
        print(
            f"slowflow: error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            " (run with --debug for a traceback)",
            file=sys.stderr,
        )
        return 2
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


def _entry() -> None:  # pragma: no cover
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while Python was still starting up
        print(f"slowflow: interrupted; {_DISCARDED}", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    _entry()
