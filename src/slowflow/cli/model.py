"""``slowflow fit``, ``predict`` and ``drift``: learn the map, roll it out, read it off."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io.atomic import check_output, request_stop
from ..io.limits import check_memory, gb
from .options import (
    Given,
    check_out,
    command_line,
    config_options,
    finite,
    floats,
    given,
    integer,
    memory,
    read_config_file,
    seed,
)

#: The training options of ``fit``, generated from :class:`~slowflow.train.TrainConfig`.
FIT_TRAIN_OPTIONS = {
    "epochs": "passes over the training pairs (models with weights)",
    "batch_size": "pairs per step",
    "lr": "peak learning rate",
    "schedule": "cosine, constant or step_cyclic",
    "patience": "epochs without a validation improvement before stopping",
    "pairs_per_traj": "use this many random pairs per trajectory (default: all)",
    "max_minutes": "wall-clock budget",
    "seed": "seed of the split, the initialisation and the batches",
    "device": "auto, cpu or cuda",
    "stream": "read pairs from disk piece by piece (.npz saved uncompressed or .npy): "
    "for files larger than memory",
    "block_pairs": "pairs per piece read from disk with --stream",
    "skip_first": "drop the first N observations of every trajectory (transients of "
    "bursts started out of equilibrium)",
}


def _settings(args) -> tuple:
    """(TrainConfig or None, overrides, preset or ModelConfig) from --config and the
    options: options given on the command line win over the file, the file over the
    defaults. With --resume the settings come from the checkpoint; what is given must
    agree with it."""
    from ..model.config import get_preset
    from ..train import TrainConfig

    typed = given(args)
    if args.resume:
        if args.config:
            raise ConfigError(
                "--config with --resume: a resumed fit takes its settings from the checkpoint"
            )
        overrides = {k: getattr(args, k) for k in FIT_TRAIN_OPTIONS if k in typed}
        return None, overrides, (args.preset if "preset" in typed else None)
    from_file = {}
    if args.config:
        from ..model.config import ModelConfig

        from_file = read_config_file(args.config, {"train": TrainConfig, "model": ModelConfig})
    train = {**from_file.get("train", {})}
    train.update({k: getattr(args, k) for k in FIT_TRAIN_OPTIONS if k in typed or k not in train})
    model = dict(from_file.get("model", {}))
    if "innovation" in typed:
        model["innovation"] = args.innovation
    preset = args.preset if "preset" in typed else model.pop("preset", args.preset)
    model.pop("preset", None)
    try:
        return TrainConfig(**train), {}, get_preset(preset, **model) if model else preset
    except ConfigError as exc:
        where = f"--config {args.config}: " if args.config else ""
        raise ConfigError(f"{where}{exc}") from None


def _load_data(args):
    if not args.periodic:
        return args.data
    if args.stream:
        raise ConfigError(
            "--periodic with --stream: declare the angles in the file's metadata "
            "(meta 'periodic': {name: [lo, hi]})"
        )
    from ..data import declare_periodic, load_trajectories

    names = [v for v in args.periodic.split(",") if v.strip()]
    return declare_periodic(load_trajectories(args.data, dt=args.dt), names, str(args.data))


def _fit(args, data, cfg, overrides, preset, checkpoint, lead: bool):
    """The library call of ``fit``, with SIGTERM turned into a clean stop."""
    from ..train import fit

    stop = {"flag": False}

    def on_term(signum, frame):  # SIGTERM: stop at the next step, keep the best model
        stop["flag"] = True

    common = dict(
        dt=args.dt, checkpoint=checkpoint if lead else None, stop_flag=lambda: stop["flag"]
    )
    old = signal.signal(signal.SIGTERM, on_term)
    try:
        asked = "memory" in given(args)
        streamed = cfg is not None and cfg.stream  # documented: K = 0 unless asked
        if args.memory == "auto" and (asked or not (args.resume or streamed)):
            if args.resume:
                raise ConfigError(
                    "--memory auto cannot --resume; resume with the chosen --memory K"
                )
            from ..train.memory import MemoryAutoUnavailable, fit_memory_auto

            try:
                # a skip the user gave is kept; otherwise it is chosen with K
                skip = cfg.skip_first if cfg.skip_first or "skip_first" in given(args) else None
                return fit_memory_auto(data, preset, cfg, skip_first=skip, **common)
            except MemoryAutoUnavailable as exc:
                if asked:
                    raise
                print(f"slowflow: memory 0 ({exc})", file=sys.stderr)
                return fit(data, preset, cfg, memory=0, **common)
        mem = args.memory if asked or not args.resume else None
        mem = 0 if mem == "auto" else mem
        resume = checkpoint if args.resume else None
        return fit(data, preset, cfg, resume=resume, memory=mem, **common, **overrides)
    finally:
        signal.signal(signal.SIGTERM, old)


def cmd_fit(args) -> int:
    from ..model.io import save_model

    checkpoint = Path(str(args.out) + ".ckpt")
    check_out(args.out, (".pt",), (args.data,))
    check_output(checkpoint, (args.data,), option="--out (its checkpoint)")
    if args.resume and not checkpoint.exists():
        raise ConfigError(f"--resume: no checkpoint {checkpoint} (it is written while fitting)")
    cfg, overrides, preset = _settings(args)
    # under torchrun every process trains; rank 0 alone writes the model and checkpoints
    lead = int(os.environ.get("RANK", "0") or 0) == 0
    model = _fit(args, _load_data(args), cfg, overrides, preset, checkpoint, lead)
    # an interrupt ended the training cleanly: the best model so far is written on purpose
    request_stop(False)
    h = model.history
    if "memory_selection" in h and lead:
        from ..train.memory import describe

        print("memory selection (held-out one-step error, paired over trajectories):")
        print(describe(h["memory_selection"]))
    if "innovation" in h and lead:
        print(_describe_innovation(h["innovation"]))
    interrupted = "interrupted" in h["stop_reason"]
    closed_form = model.n_parameters() == 0  # drift and covariance in closed form
    if interrupted and h["best_epoch"] < 0:
        kept = f"; {checkpoint} is kept (continue with --resume)" if checkpoint.exists() else ""
        what = "the closed-form fit completed" if closed_form else "the first epoch completed"
        print(f"slowflow: interrupted before {what}; nothing was written{kept}", file=sys.stderr)
        return 130
    if not lead:
        return 130 if interrupted else 0
    model.meta["command"] = command_line()
    save_model(model, args.out)
    print(_fit_summary(args.out, h, closed_form))
    if not interrupted:
        checkpoint.unlink(missing_ok=True)
        return 0
    if checkpoint.exists():
        print(f"checkpoint kept at {checkpoint}; continue with --resume")
    return 130


def _describe_innovation(rec: dict) -> str:
    best = max(rec["candidates"], key=lambda c: c["gain"], default=None)
    gain = (
        ""
        if best is None
        else (
            f" (held-out gain over N(0, I) up to {best['gain']:.4f} +- {best['se']:.4f} "
            f"nats/pair, {best['cells']} cells)"
        )
    )
    return f"innovation law: {rec['chosen']}{gain}"


def _fit_summary(out, h: dict, closed_form: bool) -> str:
    if closed_form:
        deg = (
            (h.get("drift_basis") or {}).get("degree"),
            (h.get("covariance_basis") or {}).get("degree"),
        )
        return (
            f"wrote {out}: closed form (drift degree {deg[0]}, covariance degree {deg[1]}), "
            f"validation NLL {h['best_val_nll']:.4f} nats/pair, {h['train_seconds']:.1f} s"
        )
    return (
        f"wrote {out}: best validation NLL {h['best_val_nll']:.4f} nats/pair at epoch "
        f"{h['best_epoch']}, {h['train_seconds']:.0f} s ({h['stop_reason']})"
    )


def _check_predict_options(args) -> None:
    from ..rollout import SIDECAR_SUFFIX

    check_out(args.out, (".npz", ".csv", ".npy"), (args.model,))
    if Path(args.out).suffix.lower() == ".npy":
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


def cmd_predict(args) -> int:
    from ..model.io import load_model
    from ..rollout import histories_from_file, predict_to_file, predict_to_trajectories_file
    from ..rollout.files import check_csv_size
    from ..train import resolve_device

    _check_predict_options(args)
    # predict's 'auto' means the CPU: rollouts of small models gain little from a GPU
    device = resolve_device(args.device if args.device != "auto" else "cpu")
    model = load_model(args.model, device=device)
    meta = {"kind": "prediction", "model": str(args.model), "seed": args.seed}
    if args.history is not None:
        start = histories_from_file(args.history, model, args.n_paths)
        x0 = start[..., -1, :].tolist() if start.ndim == 3 else start[-1].tolist()
        meta["history"] = str(args.history)
        meta["x0"] = x0 if np.ndim(x0) == 1 else "per path (see history)"
    else:
        start = np.array(floats(args.x0))
        meta["x0"] = start.tolist()
    meta.update(command=command_line(), slowflow_version=model.meta.get("slowflow_version"))
    if args.every > 1:
        meta["every"] = args.every
    periodic = (model.meta.get("data_meta") or {}).get("periodic")
    if periodic:
        meta["periodic"] = periodic
    npy = Path(args.out).suffix.lower() == ".npy"
    if Path(args.out).suffix.lower() == ".csv":
        check_csv_size((args.n_paths, args.steps // args.every + 1, model.dim), f"--out {args.out}")
    writer = predict_to_file if npy else predict_to_trajectories_file
    summary = writer(
        model, start, args.steps, args.out, n_paths=args.n_paths, seed=args.seed,
        chunk_paths=args.chunk_paths, every=args.every,
        progress=True if args.progress else None, meta=meta,
    )  # fmt: skip
    warn = f" (warning: {summary.message()})" if summary.message() else ""
    if npy:
        n_obs = args.steps // args.every + 1
        size = gb(Path(args.out).stat().st_size)
        detail = f"{n_obs} observations every {args.every} steps, " if args.every > 1 else ""
        print(
            f"wrote {args.out} and {args.out}.json: {args.n_paths} paths x {args.steps} steps "
            f"({detail}float32, {size}), d={model.dim}" + warn
        )
    else:
        print(f"wrote {args.out}: {args.n_paths} paths x {args.steps} steps, d={model.dim}" + warn)
    return 0


def _drift_points(args, model):
    """The points of ``drift``: --x, else the centres of the data's bins, else a grid over
    the training data's range; and the data's own binned drift and diffusion (or None)."""
    from ..data import check_dim, load_trajectories
    from ..rollout import data_drift_diffusion

    check_memory(8.0 * args.n_points * 4 * model.dim, f"--n-points {args.n_points}: the points")
    pts, data_stats = None, None
    if args.x is not None:
        values = floats(args.x, "--x")
        if len(values) % model.dim:
            raise ConfigError(
                f"--x has {len(values)} value(s), not a multiple of the model's d={model.dim}"
            )
        pts = np.array(values).reshape(-1, model.dim)
    if args.data is not None:
        data = load_trajectories(args.data, dt=float(model.dt))
        check_dim(data, model.dim, str(args.data))
        centers, drift, diffusion = data_drift_diffusion(data, args.n_points)
        if pts is None:
            pts, data_stats = centers, (drift, diffusion)
    if pts is None:
        lo, hi = model.x_lo.numpy(), model.x_hi.numpy()
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            lo, hi = -np.ones(model.dim), np.ones(model.dim)
        pts = np.stack([np.linspace(lo[i], hi[i], args.n_points) for i in range(model.dim)], 1)
    return pts, data_stats


def cmd_drift(args) -> int:
    from ..model.io import load_model
    from ..rollout import drift_diffusion

    if args.out:
        check_out(args.out, (".npz",), (args.model, args.data))
    if args.n_points < 1:
        raise ConfigError(f"--n-points must be a positive integer, got {args.n_points}")
    model = load_model(args.model)
    pts, data_stats = _drift_points(args, model)
    dd = drift_diffusion(model, pts, n_samples=args.n_samples, seed=args.seed)
    if args.out:
        dd.save(args.out)
        print(f"wrote {args.out}")
        return 0
    head = "x | drift (+-se) | diffusion diag (+-se)"
    print(head + (" | data: drift | data: diffusion diag" if data_stats is not None else ""))
    for i in range(len(dd.x)):
        xs = ",".join(f"{v:.4g}" for v in dd.x[i])
        a = ",".join(f"{v:.4g}+-{e:.2g}" for v, e in zip(dd.drift[i], dd.drift_se[i]))
        b = ",".join(
            f"{dd.diffusion[i, j, j]:.4g}+-{dd.diffusion_se[i, j, j]:.2g}" for j in range(model.dim)
        )
        row = f"{xs} | {a} | {b}"
        if data_stats is not None:
            row += " | " + ",".join(f"{v:.4g}" for v in data_stats[0][i])
            row += " | " + ",".join(f"{v:.4g}" for v in data_stats[1][i])
        print(row)
    return 0


def register(sub) -> None:
    """Add ``fit``, ``predict`` and ``drift`` to the subcommands."""
    _register_fit(sub)
    _register_predict(sub)
    _register_drift(sub)


def _register_fit(sub) -> None:
    s = sub.add_parser(
        "fit",
        help="learn the one-step map from trajectory data",
        epilog="Several processes or GPUs: torchrun --nproc-per-node N -m slowflow fit DATA "
        "--out M.pt (DistributedDataParallel; --batch-size is the global batch; rank 0 "
        "writes). Files larger than memory: --stream. Settings files: --config FILE.toml "
        "with tables [train] (TrainConfig fields) and [model] (preset and ModelConfig "
        "fields); options given on the command line win.",
    )
    s.add_argument("data", help="trajectory file (.npz, .npy, .csv, .mat)")
    s.add_argument("--out", required=True, help="model file to write (.pt)")
    s.add_argument(
        "--preset",
        action=Given,
        default="default",
        help="model preset: default (= gaussian), coupling, nsf, maf, gaussian-net, network, paper",
    )
    s.add_argument("--config", default=None, help="settings file (.toml): [train] and [model]")
    s.add_argument(
        "--dt",
        action=Given,
        type=finite,
        default=None,
        help="observation step if the file lacks it",
    )
    config_options(s, _train_config(), FIT_TRAIN_OPTIONS)
    s.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    s.add_argument(
        "--memory",
        action=Given,
        type=memory,
        default="auto",
        help="past observations the map is conditioned on besides x_n (a delay embedding "
        "for data that are not Markov at Delta), or 'auto' (the default): chosen on "
        "held-out bursts together with --skip-first (0 where the data do not allow a "
        "choice: streamed, or bursts of fewer than 4 observations)",
    )
    s.add_argument(
        "--innovation",
        action=Given,
        choices=("auto", "gaussian", "empirical"),
        default="auto",
        help="law of the standardized innovation of the Gaussian presets: N(0, I) "
        "(gaussian), the training innovations' own law near x_n with its mean and "
        "covariance kept (empirical), or 'auto' (the default): empirical where it beats "
        "N(0, I) on the validation bursts",
    )
    s.add_argument(
        "--periodic",
        default=None,
        help="variables that are angles in radians on [-pi, pi) (names or 0-based indices, "
        "e.g. phi,psi); stored in the model. Data files can declare them instead "
        "(meta 'periodic')",
    )
    s.set_defaults(func=cmd_fit)


def _register_predict(sub) -> None:
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
    s.add_argument("--steps", type=integer, required=True)
    s.add_argument("--n-paths", type=integer, default=10_000)
    s.add_argument(
        "--out",
        required=True,
        help="output file, streamed to disk chunk by chunk: .npz (float64), .csv (up to 2 GiB "
        "of float64 paths) or .npy (float32; dt and provenance go to OUT.json next to it)",
    )
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument(
        "--every", type=integer, default=1, help="keep every k-th step (steps must be a multiple)"
    )
    s.add_argument(
        "--chunk-paths",
        type=integer,
        default=65_536,
        help="paths rolled out together (memory ~ chunk-paths x kept steps x d x 4 bytes); "
        "the paths depend on the seed and this number",
    )
    s.add_argument(
        "--progress", action="store_true", help="always show a progress bar (default: large runs)"
    )
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_predict)


def _register_drift(sub) -> None:
    s = sub.add_parser("drift", help="effective drift and diffusion read off a model")
    s.add_argument("model")
    s.add_argument("--x", default=None, help="points, e.g. 0,0.5,1 (d=1) or 1,1,0,0 (d=2 pairs)")
    s.add_argument("--n-points", type=integer, default=11, help="grid points over the data range")
    s.add_argument(
        "--data",
        default=None,
        help="trajectory file: compare with the data's binned increment statistics "
        "(points at the bins' centres of the first component)",
    )
    s.add_argument("--n-samples", type=integer, default=20_000)
    s.add_argument("--seed", type=seed, default=0)
    s.add_argument("--out", default=None, help="write an .npz instead of printing")
    s.set_defaults(func=cmd_drift)


def _train_config():
    from ..train import TrainConfig

    return TrainConfig
