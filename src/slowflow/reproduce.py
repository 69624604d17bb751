"""The paper's examples end to end: data, training, rollout, references, metrics, report.

For an example: simulate the training bursts (the paper's sizes: 10,000 bursts of T = 1 at
Delta = 0.01, EM dt = 1e-4), train each requested model, roll out ``n_pred`` paths from the
paper's start over the paper's horizon, simulate two independent reference ensembles (A
to compare with, B for the Monte-Carlo noise floor) and the averaged equation, then write
``metrics.json``, figures and ``report.md``. Every stage is cached under the output folder
by a key of its settings, so a rerun (or a restart after a kill) reuses finished stages and
the same seed gives the same report.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from . import __version__
from .data import Trajectories, load_trajectories, make_pairs, make_windows, save_trajectories
from .errors import ConfigError
from .systems import System, get_system

PAPER_EXAMPLES = ("ex4.1", "ex4.2", "ex4.3", "ex4.4", "ex4.5")
MODEL_CHOICES = (
    "default",
    "markov",
    "memory",
    "default-gaussian",
    "gaussian-net",
    "paper",
    "maf",
    "nsf",
    "coupling",
    "gaussian",
    "network",
    "km",
    "sfi",
    "averaged",
    "exact",
)


@dataclass(frozen=True)
class ReproduceConfig:
    """Sizes and budgets of a reproduction (defaults: the paper's sizes)."""

    n_train_traj: int = 10_000
    n_ref: int = 10_000
    n_pred: int = 10_000
    n_heldout: int = 1_000
    seed: int = 0
    models: tuple[str, ...] = ("default", "averaged")
    epochs: int = 40
    max_minutes: float = 2.5
    patience: int = 20
    calib_starts: int = 2000
    calib_members: int = 100
    calib_lead: int = 10
    horizon: float | None = None  # None: the paper's

    def key(self, *fields_: str) -> str:
        d = asdict(self)
        blob = json.dumps({f: d[f] for f in fields_}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]


#: Part of the cache key of trained models and their rollouts: raised when what a model
#: name fits changes (r2: "default" chooses the memory, the covariance is reweighted; r3:
#: a closed-form map's memory is an autoregression of its residuals; r4: skip-first is
#: chosen by a test of the first increments; r5: the innovation law is chosen; r6: with
#: its Gaussian share; r7: the Cochrane-Orcutt drift kept only where its standardized
#: residuals are; r8: a chosen memory is checked against K = 0 by the k-step score; r9:
#: the memory screen uses up to 500,000 / d windows, was 150,000, and compares by ranks), so
#: that a rerun in an old folder does not reuse models of the earlier meaning.
FIT_REVISION = "r9"

QUICK = ReproduceConfig(
    n_train_traj=2000,
    n_ref=2000,
    n_pred=2000,
    n_heldout=200,
    epochs=30,
    max_minutes=0.5,
    calib_starts=300,
    calib_members=50,
    calib_lead=5,
)


def _log(msg: str) -> None:
    print(f"[reproduce] {msg}", flush=True)


def _cached(path: Path, make, what: str) -> Trajectories:
    if path.exists():
        _log(f"reuse {what}: {path}")
        return load_trajectories(path)
    t0 = time.perf_counter()
    data = make()
    save_trajectories(data, path)
    _log(f"{what}: {data.x.shape} in {time.perf_counter() - t0:.1f} s -> {path}")
    return data


def _system_data(system: System, cfg: ReproduceConfig, folder: Path) -> dict:
    from .simulate import simulate_bursts, simulate_ensemble

    t_end = cfg.horizon or system.t_end
    k = cfg.key("seed")
    data = {}
    data["train"] = _cached(
        folder / f"train_n{cfg.n_train_traj}_{k}.npz",
        lambda: simulate_bursts(system, cfg.n_train_traj, seed=cfg.seed),
        "training bursts",
    )
    data["heldout"] = _cached(
        folder / f"heldout_n{cfg.n_heldout}_{k}.npz",
        lambda: simulate_bursts(system, cfg.n_heldout, seed=cfg.seed + 1000),
        "held-out bursts",
    )
    for name, off in (("ref_a", 2000), ("ref_b", 3000)):
        data[name] = _cached(
            folder / f"{name}_n{cfg.n_ref}_T{t_end:g}_{k}.npz",
            lambda off=off: simulate_ensemble(
                system, n_paths=cfg.n_ref, t_end=t_end, seed=cfg.seed + off
            ),
            f"reference ensemble {name[-1].upper()}",
        )
    return data


def _averaged_stage(system: System, cfg: ReproduceConfig, folder: Path, t_end: float):
    """The ensemble of the system's averaged equation (cached), or (None, why) without one."""
    from .simulate import simulate_ensemble

    if system.averaged is None:
        return None, "skipped: the system has no averaged equation"
    k = cfg.key("seed", "n_pred")
    pred = _cached(
        folder / f"pred_averaged_T{t_end:g}_{k}.npz",
        lambda: simulate_ensemble(
            system.averaged, x0=system.x0, n_paths=cfg.n_pred, t_end=t_end, seed=cfg.seed + 4000
        ),
        "averaged-equation ensemble",
    )
    return pred.x, {"model": "averaged", "note": system.averaged_note}


def _exact_stage(system: System, cfg: ReproduceConfig, folder: Path, t_end: float):
    """A third independent ensemble of the full system, scored like a model: what a perfect
    model scores against these references. The ratio W1/floor is itself noisy (its floor
    is one draw of W1(B, A)); where slow phases or rare transitions make that draw small,
    a perfect model scores well above 1, and this row says by how much."""
    from .simulate import simulate_ensemble

    k = cfg.key("seed", "n_pred")
    pred = _cached(
        folder / f"pred_exact_T{t_end:g}_{k}.npz",
        lambda: simulate_ensemble(system, n_paths=cfg.n_pred, t_end=t_end, seed=cfg.seed + 7000),
        "exact ensemble (a third reference)",
    )
    note = "a third independent ensemble of the full system: what a perfect model scores"
    return pred.x, {"model": "exact", "note": note}


def _trained_model(name: str, cfg: ReproduceConfig, train: Trajectories, folder: Path):
    """The model ``name`` fitted to ``train`` (or reused from an earlier run), and its file."""
    from .model.io import load_model, save_model
    from .train import TrainConfig, fit

    tk = cfg.key("seed", "n_train_traj", "epochs", "max_minutes", "patience") + FIT_REVISION
    model_path = folder / f"model_{name}_{tk}.pt"
    if model_path.exists():
        _log(f"reuse model {name}: {model_path}")
        return load_model(model_path), model_path
    _log(f"train {name} (budget {cfg.max_minutes} min, up to {cfg.epochs} epochs)")
    tcfg = TrainConfig(
        epochs=cfg.epochs, max_minutes=cfg.max_minutes, seed=cfg.seed, patience=cfg.patience
    )
    ckpt = folder / f"model_{name}_{tk}.ckpt"
    if name in ("default", "memory", "default-gaussian"):  # as `slowflow fit`: memory and
        from .model.config import get_preset  # skip chosen from the data
        from .train.memory import fit_memory_auto

        # default-gaussian: the default with N(0, I) innovations (an ablation)
        innovation = "gaussian" if name == "default-gaussian" else "auto"
        model = fit_memory_auto(train, get_preset(None, innovation=innovation), tcfg)
    else:  # "markov": the default preset at K = 0 (the paper's assumption)
        preset = None if name == "markov" else name
        model = fit(train, preset, tcfg, checkpoint=ckpt, resume=ckpt if ckpt.exists() else None)
    save_model(model, model_path)
    ckpt.unlink(missing_ok=True)
    return model, model_path


def _model_scores(model, cfg: ReproduceConfig, held: Trajectories) -> dict:
    """The training record and the held-out one-step NLL and k-step score."""
    import torch

    from .model.score import kstep_score
    from .train import evaluate_nll

    h = model.history
    h0, h1 = _heldout_windows(held, model.memory)
    h0, h1 = (torch.as_tensor(a, dtype=torch.float32) for a in (h0, h1))
    return {
        "train_seconds": h.get("train_seconds"),
        "epochs": len(h.get("epoch", [])),
        "best_val_nll": h.get("best_val_nll"),
        "stop_reason": h.get("stop_reason"),
        "preset": model.meta.get("preset"),
        "n_parameters": model.n_parameters(),
        "memory": model.memory,
        "skip_first": model.meta.get("train_config", {}).get("skip_first", 0),
        "heldout_nll": evaluate_nll(model, h0, h1),
        "heldout_kstep": kstep_score(
            model, held.x, held.lengths, seed=cfg.seed, first=HELDOUT_FIRST
        )["score"],
    }


def _model_stage(name: str, system: System, cfg: ReproduceConfig, data: dict, folder: Path):
    """Train (or reuse) the model ``name`` and roll it out; returns (pred, info)."""
    from .rollout import predict

    t_end = cfg.horizon or system.t_end
    n_steps = round(t_end / system.dt_obs)
    if name == "averaged":
        return _averaged_stage(system, cfg, folder, t_end)
    if name == "exact":
        return _exact_stage(system, cfg, folder, t_end)
    info: dict = {"model": name}
    if name in ("km", "sfi"):
        return _baseline_stage(name, system, cfg, data, folder, t_end, n_steps, info)
    model, model_path = _trained_model(name, cfg, data["train"], folder)
    info.update(_model_scores(model, cfg, data["heldout"]))
    pk = cfg.key("seed", "n_train_traj", "epochs", "max_minutes", "patience", "n_pred")
    pk += FIT_REVISION
    pred_path = folder / f"pred_{name}_T{t_end:g}_{pk}.npz"
    if pred_path.exists():
        _log(f"reuse rollout {name}: {pred_path}")
        pred = load_trajectories(pred_path)
        info["rollout_path_steps_per_s"] = pred.meta.get("path_steps_per_s")
    else:
        t0 = time.perf_counter()
        x = predict(model, np.asarray(system.x0), n_steps, cfg.n_pred, seed=cfg.seed + 5000)
        rate = cfg.n_pred * n_steps / (time.perf_counter() - t0)
        meta = {"model": str(model_path), "path_steps_per_s": rate}
        pred = Trajectories(x=x, dt=system.dt_obs, meta=meta)
        save_trajectories(pred, pred_path)
        info["rollout_path_steps_per_s"] = rate
        _log(f"rollout {name}: {x.shape}, {rate:.3g} path-steps/s")
    info["model_obj"] = model
    return pred.x, info


#: The largest slow dimension each classical baseline is run on, and why.
BASELINE_MAX_DIM = {
    "km": (2, "its binned estimator needs a grid of bins in every dimension"),
    "sfi": (3, "its memory grows like d^2 times the number of cubic monomials"),
}


def _baseline_skip(name: str, system: System) -> str | None:
    """Why the baseline ``name`` is not run on this system's dimension, or None."""
    max_dim, why = BASELINE_MAX_DIM[name]
    if system.slow_dim > max_dim:
        return f"skipped: d = {system.slow_dim} > {max_dim} ({why})"
    return None


def _fit_baseline(name: str, train: Trajectories):
    """The Kramers-Moyal (``km``) or force-inference (``sfi``) estimator."""
    if name == "km":
        from .baselines import fit_kramers_moyal

        return fit_kramers_moyal(train)
    from .baselines import fit_force_inference

    return fit_force_inference(train)


#: Held-out scores use targets from this observation of each burst on, so that maps of any
#: memory up to it (and the one-step baselines) are scored on the same observations.
HELDOUT_FIRST = 6


def _heldout_windows(heldout: Trajectories, memory: int):
    """Held-out conditions and targets from observation ``HELDOUT_FIRST + 1`` on."""
    h, x1, _ = make_windows(heldout, memory, max(0, HELDOUT_FIRST - memory))
    return (h[:, 0] if memory == 0 else h), x1


def _baseline_nll(est, heldout: Trajectories) -> float:
    """Held-out NLL of the estimator's Euler-Maruyama (Gaussian) one-step kernel."""
    h0, h1 = _heldout_windows(heldout, 0)
    a, s = est.coefficients(h0)
    cov = s * est.dt + 1e-300 * np.eye(est.dim)
    r = h1 - h0 - a * est.dt
    sign, logdet = np.linalg.slogdet(cov)
    quad = np.einsum("ni,ni->n", r, np.linalg.solve(cov, r[..., None])[..., 0])
    return float(np.mean(0.5 * (quad + logdet + est.dim * np.log(2 * np.pi))))


def _baseline_stage(name, system, cfg, data, folder, t_end, n_steps, info):
    """Fit a classical estimator (``km`` or ``sfi``) and roll it out by Euler-Maruyama, or
    (None, why) where it is not run on this system's dimension."""
    skip = _baseline_skip(name, system)
    if skip is not None:
        return None, skip
    t0 = time.perf_counter()
    est = _fit_baseline(name, data["train"])
    info["train_seconds"] = time.perf_counter() - t0
    info["heldout_nll"] = _baseline_nll(est, data["heldout"])
    k = cfg.key("seed", "n_train_traj", "n_pred")
    path = folder / f"pred_{name}_T{t_end:g}_{k}.npz"
    if path.exists():
        pred = load_trajectories(path)
        info["rollout_path_steps_per_s"] = pred.meta.get("path_steps_per_s")
    else:
        t0 = time.perf_counter()
        x = est.simulate(np.asarray(system.x0), n_steps, cfg.n_pred, seed=cfg.seed + 6000)
        rate = cfg.n_pred * n_steps / (time.perf_counter() - t0)
        pred = Trajectories(x=x, dt=system.dt_obs, meta={"model": name, "path_steps_per_s": rate})
        save_trajectories(pred, path)
        info["rollout_path_steps_per_s"] = rate
        _log(f"rollout {name}: {x.shape}, {rate:.3g} path-steps/s")

    def sample(starts, steps, seed):
        return est.simulate(starts, steps, seed=seed)

    info["kernel_sampler"] = sample
    return pred.x, info


def _report_times(system: System, cfg: ReproduceConfig) -> list[float]:
    """The paper's plot times within the horizon (three spread over it if none is)."""
    horizon = cfg.horizon or system.t_end
    times = [t for t in (system.plot_times or (system.t_end,)) if t <= horizon]
    if not times:
        times = [round(horizon * f / system.dt_obs) * system.dt_obs for f in (0.25, 0.5, 1.0)]
    return times


def _calibration_entry(name, kernel, system, cfg, data, folder, figs: list) -> dict:
    """``check`` of a model's kernel on the held-out bursts, with its figure."""
    from .evaluate import calibration, plots

    cal = calibration.check_calibration(
        kernel, data["heldout"], max_lead=cfg.calib_lead, n_starts=cfg.calib_starts,
        n_members=cfg.calib_members, seed=cfg.seed,
        reference=calibration.system_sampler(system, system.dt_obs),
    )  # fmt: skip
    scores = {f"{name} model": cal.crps[:, 0], "best Markov reference": cal.crps_reference[:, 0]}
    last = f"{name}, lead {int(cal.leads[-1])}"
    pits = {f"{name}, lead 1": cal.pit_counts[0, 0], last: cal.pit_counts[-1, 0]}
    fig = plots.calibration(cal.leads, scores, pits, "CRPS of x1")
    figs.append(str(plots.save_figure(fig, folder / f"calibration_{name}.png")))
    return {"calibration": cal.to_dict(), "calibration_summary": cal.summary()}


def _drift_figure(model, system, cfg, train, folder) -> str:
    """The learned drift and diffusion against the data's binned increments and, where
    the system has one, its averaged equation."""
    from .evaluate import plots
    from .rollout import binned_increment_stats, drift_diffusion

    dt = system.dt_obs
    x0p, x1p = make_pairs(train)
    edges = np.quantile(x0p[:, 0], np.linspace(0.01, 0.99, 16))
    c, mu, sd, _ = binned_increment_stats(x0p, x1p, edges)
    ok = np.isfinite(c[:, 0])
    if system.slow_dim > 1:
        grid = np.asarray(c[ok])
    else:
        grid = np.linspace(edges[0], edges[-1], 25).reshape(-1, 1)
    dd = drift_diffusion(model, grid, n_samples=50_000, seed=cfg.seed)
    ref_fn = None
    if system.averaged is not None:

        def ref_fn(x, avg=system.averaged):
            f, g = avg.evaluate(x)
            return f, g * g

    fig = plots.drift_diffusion(dd, ref_fn, data_stats=(c[ok], mu[ok] / dt, sd[ok] ** 2 / dt))
    return str(plots.save_figure(fig, folder / "drift_diffusion.png"))


def _header(system: System, cfg: ReproduceConfig) -> dict:
    import shlex
    import sys

    typed = Path(sys.argv[0]).name in ("slowflow", "__main__.py")
    return {
        "command": " ".join(shlex.quote(a) for a in ["slowflow", *sys.argv[1:]]) if typed else None,
        "system": system.name,
        "aliases": list(system.aliases),
        "params": dict(system.params),
        "x0": list(system.x0),
        "horizon": cfg.horizon or system.t_end,
        "config": asdict(cfg),
        "slowflow_version": __version__,
        "models": {},
        "skipped": {},
    }


def reproduce_example(
    example: str, out: str | Path, cfg: ReproduceConfig | None = None, quick: bool = False
) -> dict:
    """Run the whole study for one paper example (or any built-in system); returns the
    summary dict that is also written to ``OUT/<system>/metrics.json``."""
    from .evaluate import plots
    from .evaluate.report import evaluate_ensembles, figures_for, public, write_json

    cfg = cfg or (QUICK if quick else ReproduceConfig())
    for m in cfg.models:
        if m not in MODEL_CHOICES:
            raise ConfigError(f"unknown model '{m}'; choose from {', '.join(MODEL_CHOICES)}")
    system = get_system(example)
    folder = Path(out) / system.name
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = _system_data(system, cfg, folder)
    ref_a, ref_b, dt = data["ref_a"].x, data["ref_b"].x, system.dt_obs
    times = _report_times(system, cfg)
    results, preds, figs = _header(system, cfg), {}, []
    for name in cfg.models:
        pred, info = _model_stage(name, system, cfg, data, folder)
        if pred is None:
            results["skipped"][name] = info
            _log(f"{name}: {info}")
            continue
        ev = evaluate_ensembles(pred, ref_a, ref_b, dt, times)
        model = info.pop("model_obj", None)
        kernel = info.pop("kernel_sampler", None) or model
        entry = {**info, **public(ev)}
        if kernel is not None:
            entry.update(_calibration_entry(name, kernel, system, cfg, data, folder, figs))
        if model is not None:
            fig = plots.training_curves(model.history)
            figs.append(str(plots.save_figure(fig, folder / f"training_{name}.png")))
        first = name == cfg.models[0]
        if model is not None and first:
            figs.append(_drift_figure(model, system, cfg, data["train"], folder))
        if first:
            floor, w1 = ev.get("_floor_series"), ev.get("_w1_series")
            figs += [
                str(p) for p in figures_for(pred, ref_a, dt, times, folder, floor=floor, w1=w1)
            ]
        preds[name] = pred
        results["models"][name] = entry
    if len(preds) > 1:
        ens = {"truth": ref_a, **preds}
        figs.append(str(plots.save_figure(plots.mean_std(ens, dt), folder / "mean_std_all.png")))
        fig = plots.histograms(ens, dt, times)
        figs.append(str(plots.save_figure(fig, folder / "histograms_all.png")))
    results["figures"] = [Path(f).name for f in figs]
    results["seconds"] = time.perf_counter() - t_start
    write_json(results, folder / "metrics.json")
    write_report(results, folder / "report.md")
    _log(f"{system.name}: done in {results['seconds']:.0f} s -> {folder / 'report.md'}")
    return results


def _fmt(v, spec=".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, (list, tuple, np.ndarray)):
        return " / ".join(_fmt(x, spec) for x in v)
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


TABLE_HEAD = (
    "| example | model | W1/floor (time avg, per component) | mean abs mean err | "
    "mean abs rel std err | held-out NLL | train s | rollout path-steps/s | calibration |\n"
    "|---|---|---|---|---|---|---|---|---|\n"
)


def table_rows(results: dict) -> str:
    rows = []
    label = results["system"] + (f" ({results['aliases'][0]})" if results["aliases"] else "")
    for name, e in results["models"].items():
        cal = e.get("calibration")
        verdict = "-" if cal is None else ("calibrated" if cal["calibrated"] else "flagged")
        rows.append(
            f"| {label} | {name} | {_fmt(e['w1']['ratio_time_avg'], '.2f')} | "
            f"{_fmt(e['mean_abs_mean_error'])} | {_fmt(e['mean_abs_rel_std_error'], '.1%')} | "
            f"{_fmt(e.get('heldout_nll'), '.3f')} | {_fmt(e.get('train_seconds'), '.0f')} | "
            f"{_fmt(e.get('rollout_path_steps_per_s'))} | {verdict} |"
        )
    return "\n".join(rows) + "\n"


def write_report(results: dict, path: Path) -> None:
    from .io.atomic import atomic_write

    lines = [
        f"# {results['system']} ({', '.join(results['aliases'])})\n",
        f"slowflow {results['slowflow_version']}; start x0 = {results['x0']}, horizon "
        f"T = {results['horizon']}; parameters {results['params']}.\n",
        "W1/floor: time-averaged Wasserstein-1 distance of each slow component's marginal "
        "between the model's ensemble and reference A, divided by the same distance between "
        "two independent reference ensembles B and A (1 = indistinguishable at this sample "
        "size; the floor is one draw, so a perfect model - the `exact` row, a third "
        "reference ensemble - scores about 1 only on average). Errors of the mean and "
        "relative errors of the std are time-averaged.\n",
        TABLE_HEAD + table_rows(results),
    ]
    for name, why in results.get("skipped", {}).items():
        lines.append(f"`{name}` was not run: {why.removeprefix('skipped: ')}.\n")
    for name, e in results["models"].items():
        if "calibration_summary" in e:
            lines.append(
                f"\n## Calibration of `{name}` on held-out bursts\n\n```\n"
                f"{e['calibration_summary']}\n```\n"
            )
        if e.get("note"):
            label = "Averaged equation" if name == "averaged" else f"`{name}`"
            lines.append(f"\n{label}: {e['note']}\n")
    lines.append("\n## Figures\n")
    for f in results["figures"]:
        lines.append(f"![{f}]({f})\n")
    with atomic_write(path) as tmp:
        Path(tmp).write_text("\n".join(lines))


def reproduce(
    examples, out, quick: bool = False, models=None, seed: int = 0, max_minutes: float | None = None
) -> list[dict]:
    """Reproduce several examples (``"all"`` = the paper's five); writes ``OUT/report.md``.

    ``max_minutes`` overrides the training budget per model (default 2.5, quick 0.5)."""
    if isinstance(examples, str):
        examples = PAPER_EXAMPLES if examples == "all" else (examples,)
    base = QUICK if quick else ReproduceConfig()
    changes: dict = {"seed": seed}
    if models:
        changes["models"] = tuple(models)
    if max_minutes is not None:
        if not max_minutes > 0:
            raise ConfigError(f"max_minutes must be positive, got {max_minutes}")
        changes["max_minutes"] = float(max_minutes)
    cfg = replace(base, **changes)
    for ex in examples:
        get_system(ex)
    out = Path(out)
    t0 = time.perf_counter()
    all_results = [reproduce_example(ex, out, cfg) for ex in examples]
    from .io.atomic import atomic_write

    text = [
        "# slowflow reproduction of Chen & Xiu (2024)\n",
        f"slowflow {__version__}, seed {seed}, {'quick' if quick else 'full'} settings, "
        f"total {time.perf_counter() - t0:.0f} s.\n",
        TABLE_HEAD,
    ]
    text += [table_rows(r) for r in all_results]
    text.append(
        "\nPer-example reports: "
        + ", ".join(f"[{r['system']}]({r['system']}/report.md)" for r in all_results)
        + "\n"
    )
    with atomic_write(out / "report.md") as tmp:
        Path(tmp).write_text("".join(text))
    return all_results
