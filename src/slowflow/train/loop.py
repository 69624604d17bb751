"""The training loop: ``fit`` (data -> a fitted model) and ``train`` (a model -> trained).

``fit`` resolves the settings (preset, overrides, a checkpoint to resume), prepares the
data (:mod:`~slowflow.train.prepare`), fits the closed-form stages
(:mod:`~slowflow.train.closed_form`), builds the model and, if it has weights, trains it.
The loop is :func:`_train_epoch` (the optimizer steps of one epoch), :func:`_after_nonfinite`
(the NaN guard), :func:`_validate` (validation NLL, history, best weights) and
:func:`_should_stop` (patience and the wall-clock budget), around a :class:`_Run` that holds
what a checkpoint saves.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..data.store import TrajectoryStore
from ..errors import ConfigError
from ..model.config import ModelConfig, get_preset
from ..model.flowmap import FlowMap, build_model
from .checkpoint import Checkpoint, load_checkpoint, resume_settings, write_checkpoint
from .closed_form import (
    closed_form_model,
    fit_closed_form,
    history_bank,
    innovation_law,
    reweight_drift,
)
from .config import TrainConfig
from .distributed import Dist, PairNLL, all_reduce, caller_state, device_for, process_group
from .prepare import (
    Prepared,
    as_data,
    check_prepared,
    prepare_memory,
    prepare_stream,
    with_periodic,
)
from .results import check_outcome, kstep, meta_of, nll_sum
from .schedule import Schedule


def optimizer(model: FlowMap, cfg: TrainConfig, lr: float) -> torch.optim.Adam:
    """Adam with the affine stage and the rest in separate parameter groups."""
    affine = list(model.affine.parameters()) if model.affine is not None else []
    ids = {id(p) for p in affine}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": g, "name": n} for n, g in (("affine", affine), ("flow", rest)) if g]
    return torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)


def state_to_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _settings(model_config, train_config, overrides, memory, resume_path):
    """The model and training configs, the preset's name and the checkpoint to resume (or
    None): from a preset name or config, the overrides and, when resuming, the checkpoint."""
    requested_model = model_config
    if isinstance(model_config, str) or model_config is None:
        preset_name = model_config or "default"
        model_config = get_preset(model_config)
    else:
        preset_name = "custom"
    if memory is not None:
        model_config = replace(model_config, memory=int(memory))
    cfg = replace(train_config or TrainConfig(), **overrides)
    resume_state = None
    if resume_path is not None:
        resume_state = load_checkpoint(resume_path)
        model_config, cfg, preset_name = resume_settings(
            resume_state, requested_model, train_config, overrides, cfg, memory
        )
    return model_config, cfg, preset_name, resume_state


def fit(
    data,
    model_config: ModelConfig | str | None = None,
    train_config: TrainConfig | None = None,
    *,
    dt: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | bool | None = None,
    progress: bool | None = None,
    stop_flag=None,
    memory: int | None = None,
    **overrides,
) -> FlowMap:
    """Learn the one-step map from trajectory data.

    Parameters
    ----------
    data : Trajectories, TrajectoryStore or path
        Slow-variable bursts ``(n_traj, n_obs, d)`` (any supported file format). A
        :class:`~slowflow.data.store.TrajectoryStore`, or a path with ``stream=True``, is read
        from disk piece by piece (files larger than memory).
    model_config : ModelConfig, preset name or None
        Architecture (None: the default preset).
    train_config : TrainConfig or None
        Optimisation settings; keyword ``overrides`` replace its fields (``epochs=5``).
    checkpoint : path or None
        Written atomically after every epoch (model, optimizer, best weights, history):
        an interrupted run loses at most one epoch.
    resume : path, True or None
        Continue from a checkpoint (True: the ``checkpoint`` path).
    stop_flag : callable or None
        Polled between steps; returning True stops cleanly (used for SIGTERM).
    memory : int or None
        Condition the map on this many past observations besides x_n (replaces the
        config's ``memory``; None keeps it). To choose it from the data use
        :func:`slowflow.train.memory.fit_memory_auto`.

    Returns
    -------
    FlowMap
        In eval mode, holding the best validation weights, with ``history`` (per-epoch
        train/val NLL, learning rate, time, why training stopped, the basis drift's
        selection, the k-step scores) and ``meta``.

    Notes
    -----
    Data-parallel training: started by ``torchrun`` (``WORLD_SIZE`` > 1 in the
    environment), each process joins the process group, trains a
    :class:`~torch.nn.parallel.DistributedDataParallel` replica on its share of every batch
    (``batch_size`` stays the global batch), and rank 0 alone writes checkpoints.
    """
    resume_path = None if not resume else Path(checkpoint if resume is True else resume)
    model_config, cfg, preset_name, resume_state = _settings(
        model_config, train_config, overrides, memory, resume_path
    )
    with caller_state(cfg), process_group(cfg) as dctx:
        device = device_for(cfg, dctx)
        if dctx.world > cfg.batch_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is smaller than the {dctx.world} processes"
            )
        torch.manual_seed(cfg.seed)
        prep = _prepare(data, cfg, device, model_config.memory, dt)
        source = str(data) if isinstance(data, (str, os.PathLike)) else "data"
        check_prepared(prep, resume_state, source)
        model_config = with_periodic(model_config, prep, source)
        t_closed = time.perf_counter()
        fits = (None, None, None) if resume_state else fit_closed_form(model_config, prep, cfg)
        t_closed = time.perf_counter() - t_closed
        model = _build(model_config, prep, cfg, device, fits)
        if model.n_parameters() == 0:  # drift and covariance in closed form: nothing to train
            return closed_form_model(
                model, prep, cfg, preset_name, device, dctx, fits, t_closed, stop_flag
            )
        # the degree asked for (None: chosen from the data, and again when the drift is
        # reweighted); a checkpoint's config holds the chosen one, so it records the request
        asked = model_config.basis_degree
        if resume_state is not None:
            asked = resume_state.get("basis_degree_asked", asked)
        run = _Run.start(model, prep, cfg, dctx, device, preset_name, asked)
        if resume_state is not None:
            run.restore(Checkpoint.from_dict(resume_state))
        keys = ("drift_basis", "covariance_basis", "memory_ar")
        for key, fitted in zip(keys, fits, strict=True):
            if fitted is not None:
                run.history[key] = fitted.summary()
        run.history.setdefault("closed_form_seconds", t_closed)
        return _train(run, checkpoint, progress, stop_flag)


def train(
    model: FlowMap,
    data,
    train_config: TrainConfig | None = None,
    *,
    dt: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    progress: bool | None = None,
    stop_flag=None,
    **overrides,
) -> FlowMap:
    """Train the weights of an existing model on ``data`` (fine-tuning): its closed-form
    stages, standardization and history bank are kept as they are; the loop, the schedule,
    validation and early stopping are those of :func:`fit`. Returns the model, trained in
    place, with its new ``history`` and ``meta``."""
    cfg = replace(train_config or TrainConfig(), **overrides)
    if model.n_parameters() == 0:
        raise ConfigError("this model has no weights to train (its stages are closed form)")
    with caller_state(cfg), process_group(cfg) as dctx:
        device = device_for(cfg, dctx)
        torch.manual_seed(cfg.seed)
        prep = _prepare(data, cfg, device, model.memory, dt)
        check_prepared(prep, None, str(data) if isinstance(data, (str, os.PathLike)) else "data")
        model.to(device)
        if model.empirical_innovation:  # trained with N(0, I); chosen again at the end
            model.set_innovation_law(None)
        preset = (getattr(model, "meta", None) or {}).get("preset", "custom")
        run = _Run.start(model, prep, cfg, dctx, device, preset, model.config.basis_degree)
        run.initial_is_fitted = True
        return _train(run, checkpoint, progress, stop_flag)


def _prepare(data, cfg: TrainConfig, device, memory: int, dt) -> Prepared:
    if isinstance(data, TrajectoryStore):
        return prepare_stream(data, cfg, device, memory)
    if cfg.stream:
        if not isinstance(data, (str, os.PathLike)):
            raise ConfigError("stream=True needs a file path or a TrajectoryStore")
        store = TrajectoryStore.open(data, dt=dt, block_pairs=cfg.block_pairs)
        return prepare_stream(store, cfg, device, memory)
    return prepare_memory(as_data(data, dt), cfg, device, memory)


def _build(config: ModelConfig, prep: Prepared, cfg: TrainConfig, device, fits) -> FlowMap:
    """The model with its closed-form stages, statistics, ranges and history bank."""
    model = build_model(config, prep.dim, prep.dt, *fits)
    n = model.n_parameters()
    if prep.n_train < 20 * n**0.5:
        warnings.warn(
            f"only {prep.n_train} training pairs for a model with {n} parameters; "
            "expect overfitting (early stopping on the validation trajectories limits it)",
            RuntimeWarning,
            stacklevel=3,
        )
    model.set_statistics(**prep.stats)
    if model.memory and prep.drift_sample is not None:
        model.set_history_bank(history_bank(prep.drift_sample[0], cfg.seed))
    if model.periodic:
        model.set_periods(prep.periods)
    model.x_lo.copy_(torch.as_tensor(prep.lo))
    model.x_hi.copy_(torch.as_tensor(prep.hi))
    return model.to(device)


@dataclass
class _Run:
    """A training run: the model and its optimizer, the data, the record, and the counters
    a checkpoint saves (so that a resumed run continues exactly where it stopped)."""

    model: FlowMap
    prep: Prepared
    cfg: TrainConfig
    dctx: Dist
    device: torch.device
    preset: str
    basis_degree_asked: int | None
    opt: torch.optim.Adam
    sched: Schedule
    gen: torch.Generator
    loss_fn: torch.nn.Module
    tv0: torch.Tensor
    tv1: torch.Tensor
    batch: int
    steps_per_epoch: int
    has_warmup: bool
    history: dict = field(default_factory=dict)
    best_val: float = math.inf
    best_state: dict = field(default_factory=dict)
    best_epoch: int = -1
    start_epoch: int = 0
    step: int = 0
    elapsed_before: float = 0.0
    lr_factor: float = 1.0
    nan_events: int = 0
    epochs_since_best: int = 0
    t_start: float = 0.0
    initial_is_fitted: bool = (
        False  # fine-tuning: the start is a model to keep if no epoch beats it
    )

    @classmethod
    def start(cls, model, prep, cfg, dctx, device, preset, asked) -> _Run:
        n_train = prep.n_train
        bs = min(cfg.batch_size, n_train)
        bs -= bs % dctx.world
        spe = max(1, n_train // bs)
        has_warmup = model.flow is not None and model.affine is not None and cfg.warmup_epochs > 0
        # validation pairs: each process scores its share; the sums are added up
        tv0 = torch.as_tensor(prep.v0[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
        tv1 = torch.as_tensor(prep.v1[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
        return cls(
            model, prep, cfg, dctx, device, preset, asked,
            opt=optimizer(model, cfg, cfg.lr),
            sched=Schedule(cfg, spe),
            gen=torch.Generator(device="cpu").manual_seed(cfg.seed),
            loss_fn=_loss(model, dctx, device, has_warmup),
            tv0=tv0, tv1=tv1, batch=bs, steps_per_epoch=spe, has_warmup=has_warmup,
            history={"epoch": [], "train_nll": [], "val_nll": [], "lr": [], "seconds": []},
            best_state=state_to_cpu(model.state_dict()),
        )  # fmt: skip

    @property
    def lead(self) -> bool:
        return self.dctx.rank == 0

    @property
    def n_val(self) -> int:
        return int(self.prep.v0.shape[0])

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start

    def val_nll(self) -> float:
        total = all_reduce([nll_sum(self.model, self.tv0, self.tv1)], self.device, self.dctx)[0]
        return total / max(1, self.n_val)

    def restore(self, ck: Checkpoint) -> None:
        self.model.load_state_dict(ck.model)
        self.opt.load_state_dict(ck.optimizer)
        self.history, self.best_val, self.best_state = ck.history, ck.best_val, ck.best_state
        self.best_epoch, self.start_epoch, self.step = ck.best_epoch, ck.epoch + 1, ck.step
        self.elapsed_before, self.lr_factor, self.nan_events = (
            ck.elapsed,
            ck.lr_factor,
            ck.nan_events,
        )
        self.gen.set_state(ck.generator)

    def checkpoint(self, epoch: int, elapsed: float) -> Checkpoint:
        p = self.prep
        return Checkpoint(
            model_config=self.model.config.to_dict(),
            train_config=self.cfg.to_dict(),
            preset=self.preset,
            data={"dt": p.dt, "dim": p.dim, "names": list(p.names)},
            basis_degree_asked=self.basis_degree_asked,
            model=state_to_cpu(self.model.state_dict()),
            optimizer=self.opt.state_dict(),
            history=copy.deepcopy(self.history),
            best_val=float(self.best_val),
            best_state=self.best_state,
            best_epoch=int(self.best_epoch),
            epoch=int(epoch),
            step=int(self.step),
            elapsed=float(elapsed),
            lr_factor=float(self.lr_factor),
            nan_events=int(self.nan_events),
            generator=self.gen.get_state(),
        )


def _loss(model: FlowMap, dctx: Dist, device, has_warmup: bool) -> torch.nn.Module:
    """The pair NLL as a module, wrapped in DistributedDataParallel when distributed."""
    loss_fn: torch.nn.Module = PairNLL(model)
    if not dctx.active:
        return loss_fn
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # the statistics buffers are equal on every process: no need to sync them per step
    params = inspect.signature(DistributedDataParallel).parameters
    no_sync = (
        {"forward_sync_buffers": False}
        if "forward_sync_buffers" in params
        else {"broadcast_buffers": False}
    )
    return DistributedDataParallel(
        loss_fn,
        device_ids=[device] if device.type == "cuda" else None,
        find_unused_parameters=has_warmup,  # the flow sits idle during the warm-up
        **no_sync,
    )


def _train(run: _Run, checkpoint, progress, stop_flag) -> FlowMap:
    """The epoch loop of a prepared run; returns the model with the best weights."""
    cfg, model, history = run.cfg, run.model, run.history
    if "initial_val_nll" not in history:  # what training must improve on
        history["initial_val_nll"] = run.val_nll()
        fitted = model.config.uses_basis_scale or run.initial_is_fitted
        if fitted and math.isfinite(history["initial_val_nll"]):
            # the start is a fitted model (the closed-form Gaussian the flow refines, or
            # the model being fine-tuned): an epoch is kept only if it beats it
            run.best_val = history["initial_val_nll"]
            history["kept_initial"] = True
    # a fixed epoch, not a fraction of the planned ones, so a resumed run does the same
    # (a closed-form covariance already weighted the drift's fit)
    reweight_epoch = (
        cfg.reweight_after - 1 if cfg.reweight_after and not model.config.uses_basis_scale else -1
    )
    bar = None
    if (progress if progress is not None else True) and run.lead:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=run.start_epoch, unit="epoch", desc="fit", leave=True)
    run.t_start = time.perf_counter()
    stop_reason = "completed all epochs"
    run.epochs_since_best = 0 if run.best_epoch < 0 else (run.start_epoch - 1 - run.best_epoch)
    model.train()
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            run_loss, nonfinite = _train_epoch(run, epoch, stop_flag)
            if bool(nonfinite):
                stop_reason = _after_nonfinite(run, epoch)
                if stop_reason:
                    break
                stop_reason = "completed all epochs"
                continue
            if epoch == reweight_epoch:
                refit = reweight_drift(model, run.prep, cfg, run.basis_degree_asked)
                if refit is not None:
                    history["drift_basis"] = refit.summary()
                    # the old best weights hold the old drift (maybe of another degree)
                    run.best_val, run.best_state = math.inf, state_to_cpu(model.state_dict())
            elapsed = _validate(run, epoch, run_loss, bar)
            if checkpoint is not None and run.lead:
                write_checkpoint(checkpoint, run.checkpoint(epoch, elapsed).to_dict())
            reason = _should_stop(run, elapsed)
            if reason:
                stop_reason = reason
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted; kept the best weights so far"
    finally:
        model.gaussian_only = False
        if bar is not None:
            bar.close()
    return _finish(run, stop_reason)


def _train_epoch(run: _Run, epoch: int, stop_flag) -> tuple[torch.Tensor, torch.Tensor]:
    """The optimizer steps of one epoch; returns the summed loss and whether any step's
    gradient was non-finite (both kept on the device: no host sync per step)."""
    cfg, model, dctx, device = run.cfg, run.model, run.dctx, run.device
    model.gaussian_only = (
        epoch < cfg.warmup_epochs and model.flow is not None and model.affine is not None
    )
    run_loss = torch.zeros((), device=device)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    after_warmup = epoch >= cfg.warmup_epochs
    params = list(model.parameters())
    batches = run.prep.batches.epoch(epoch, run.steps_per_epoch, run.batch, run.gen, dctx)
    for b, (xb0, xb1) in enumerate(batches):
        if b % 16 == 0:
            now = run.elapsed()
            stop_now = stop_flag is not None and bool(stop_flag())
            if dctx.active:  # every process stops at the same step
                stop_now = all_reduce([float(stop_now)], device, dctx, "max")[0] > 0
            if stop_now:
                raise KeyboardInterrupt
        for group in run.opt.param_groups:
            slow = cfg.affine_lr_after_warmup if group["name"] == "affine" else 1.0
            group["lr"] = (
                cfg.lr
                * run.lr_factor
                * run.sched(run.step, now)
                * (slow if after_warmup and run.has_warmup else 1.0)
            )
        loss = run.loss_fn(xb0, xb1)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        # a non-finite loss anywhere makes the (averaged) gradient norm non-finite on every
        # process, so all of them take the same decision afterwards
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        nonfinite |= ~torch.isfinite(norm)
        run.opt.step()
        run.step += 1
        run_loss += loss.detach()
    return run_loss, nonfinite


def _after_nonfinite(run: _Run, epoch: int) -> str | None:
    """The NaN guard: restore the best weights; the first time lower the learning rate
    10x and go on (None), the second time stop (the reason)."""
    run.nan_events += 1
    run.model.load_state_dict(run.best_state)
    if run.nan_events >= 2:
        return (
            f"non-finite loss at epoch {epoch} again after lowering the learning rate; "
            "stopped with the best weights"
        )
    run.lr_factor *= 0.1
    run.opt = optimizer(run.model, run.cfg, run.cfg.lr * run.lr_factor)
    if run.lead:
        warnings.warn(
            f"non-finite loss at epoch {epoch}: restored the best weights and lowered the "
            "learning rate 10x",
            RuntimeWarning,
            stacklevel=4,
        )
    return None


def _validate(run: _Run, epoch: int, run_loss: torch.Tensor, bar) -> float:
    """Score the epoch on the validation pairs, record it, keep the best weights; returns
    the elapsed seconds (rank 0's clock)."""
    cfg, history, dctx = run.cfg, run.history, run.dctx
    val_sum, train_sum = all_reduce(
        [nll_sum(run.model, run.tv0, run.tv1), float(run_loss)], run.device, dctx
    )
    val_nll = val_sum / max(1, run.n_val)
    train_nll = train_sum / dctx.world / max(1, run.steps_per_epoch)
    elapsed = run.elapsed()
    if dctx.active:  # the budget is rank 0's clock
        elapsed = all_reduce([elapsed if run.lead else 0.0], run.device, dctx, "max")[0]
    for key, value in (
        ("epoch", epoch),
        ("train_nll", train_nll),
        ("val_nll", val_nll),
        ("lr", run.opt.param_groups[0]["lr"]),
        ("seconds", elapsed),
    ):
        history[key].append(value)
    if run.lead and cfg.kstep_every and (epoch + 1) % cfg.kstep_every == 0:
        score = kstep(run.model, run.prep, cfg)
        if score is not None:
            history.setdefault("val_kstep_epoch", []).append(epoch)
            history.setdefault("val_kstep", []).append(score["score"])
    if math.isfinite(val_nll) and val_nll < run.best_val - 1e-4:
        run.best_val, run.best_epoch = val_nll, epoch
        run.best_state = state_to_cpu(run.model.state_dict())
        run.epochs_since_best = 0
        history["kept_initial"] = False
    else:
        run.epochs_since_best += 1
    if bar is not None:
        bar.set_postfix(
            train=f"{train_nll:.4f}", val=f"{val_nll:.4f}", best=f"{run.best_val:.4f}",
            t=f"{elapsed:.0f}s",
        )  # fmt: skip
        bar.update(1)
    return elapsed


def _should_stop(run: _Run, elapsed: float) -> str | None:
    """Why training stops after this epoch (None: it goes on)."""
    cfg = run.cfg
    if run.epochs_since_best >= cfg.patience:
        return f"early stopping: no validation improvement for {cfg.patience} epochs"
    if cfg.max_minutes is not None and elapsed > 60.0 * cfg.max_minutes:
        return f"wall-clock budget of {cfg.max_minutes} min reached"
    return None


def _finish(run: _Run, stop_reason: str) -> FlowMap:
    """The best weights back in the model, the history completed and checked."""
    model, history, cfg = run.model, run.history, run.cfg
    model.load_state_dict(run.best_state)
    model.eval()
    innovation = innovation_law(model, run.prep, cfg)
    if innovation is not None:
        history["innovation"] = innovation
    if run.lead and cfg.kstep_every:
        history["kstep"] = kstep(model, run.prep, cfg)
    seconds = run.elapsed()
    history.update(
        stop_reason=stop_reason,
        best_epoch=run.best_epoch,
        best_val_nll=run.best_val,
        train_seconds=seconds,
        n_train_pairs=int(run.prep.n_train),
        n_val_pairs=run.n_val,
        world_size=run.dctx.world,
        lr_reached_peak=run.sched.warmed_up(run.step, seconds),
    )
    check_outcome(history, cfg)
    model.history = history
    model.meta = meta_of(model, run.prep, cfg, run.preset, run.device, run.dctx)
    return model
