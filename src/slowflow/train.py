"""Training: maximum likelihood on consecutive pairs, ``fit(data, ...) -> FlowMap``.

Loss: the mean negative log-likelihood ``-model(x_n).log_prob(x_{n+1})`` over mini-batches
of pairs (paper eq. (16), batch mean). Adam, a learning-rate schedule, gradient clipping,
validation NLL every epoch on held-out *trajectories*, the best weights kept, early
stopping, a NaN guard, a wall-clock budget, Ctrl-C handling and resumable checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch

from . import __version__
from ._io import atomic_write
from .data import (
    Trajectories,
    load_trajectories,
    make_windows,
    periodic_ranges,
    split_by_trajectory,
)
from .errors import ConfigError, DataError, SlowflowError, TrainingError
from .model.basis import WEIGHT_FLOOR
from .model.config import ModelConfig, get_preset
from .model.flowmap import FlowMap, build_model
from .store import DEFAULT_BLOCK_PAIRS, TrajectoryStore

SCHEDULES = ("cosine", "constant", "step_cyclic")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    ``epochs`` passes over the training pairs, batches of ``batch_size``; ``lr`` is the peak
    learning rate. ``schedule``: ``"cosine"`` (linear warm-up over 2 % of the steps, cosine
    decay to lr/100), ``"constant"``, or ``"step_cyclic"`` (the authors' schedule, digest
    2.3: exp-range cycles between lr/3 and lr with a half-period of ``cyclic_step`` epochs,
    amplitudes scaled by 0.5/(i+1) in segments of ``cyclic_segment`` epochs).
    ``patience``: epochs without a validation improvement before stopping.
    ``max_minutes``: wall-clock budget (the best model so far is kept).
    ``pairs_per_traj``: use only this many random pairs per trajectory (the paper's
    sampling); None uses every consecutive pair.
    ``warmup_epochs``: for models with an affine stage and a flow, the first epochs train
    the affine stage alone (the flow starts as the identity and is bypassed), which is
    several times cheaper per step and settles the conditional mean and scale first;
    afterwards the affine stage learns at ``affine_lr_after_warmup`` times the rate, so that
    fitting the flow's shape does not stir up the drift (long rollouts are sensitive to
    drift errors the likelihood hardly sees).
    ``kstep_every``: every this many epochs, and for the final model, the multi-step score
    of :func:`slowflow.model.score.kstep_score` on the validation bursts is recorded in the
    history (``val_kstep``, ``kstep``); 0 turns it off. It sees drift errors that the
    one-step NLL cannot (not computed when streaming: pieces are pairs, not bursts).
    ``reweight_after``: for a basis drift (``ModelConfig.drift="basis"``), after this many
    epochs (if training gets that far) the drift is fitted again by least squares weighted
    with the inverse of the conditional variance the model has learned by then (0: never). Multiplicative noise
    makes this matter: the quiet states then pin the drift as tightly as their noise allows.
    ``skip_first``: drop the first this many observations of every trajectory from the
    training and validation windows (transients of bursts whose fast variables start out of
    equilibrium).
    ``stream``: read a file path's pairs from disk piece by piece instead of loading it
    (files larger than memory; see :mod:`slowflow.store`): pieces of about ``block_pairs``
    pairs, ``shuffle_pieces`` of them loaded and mixed at a time.
    With ``max_minutes`` the cosine schedule runs on whichever is further along, the
    epochs or the wall-clock budget, so the learning rate has decayed when time is up.
    """

    epochs: int = 40
    batch_size: int = 2048
    lr: float = 2e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    patience: int = 20
    clip_grad: float = 5.0
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    pairs_per_traj: int | None = None
    max_val_pairs: int = 100_000
    cyclic_step: int = 10_000
    cyclic_segment: int = 40_000
    cyclic_gamma: float = 0.99999
    warmup_epochs: int = 5
    affine_lr_after_warmup: float = 0.1
    threads: int | None = None
    stream: bool = False
    block_pairs: int = DEFAULT_BLOCK_PAIRS
    shuffle_pieces: int = 4
    kstep_every: int = 10
    reweight_after: int = 5
    skip_first: int = 0

    def __post_init__(self) -> None:
        def positive(name, value, integer=True):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and value > 0
            if not ok or (integer and int(value) != value):
                raise ConfigError(
                    f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}"
                )

        positive("epochs", self.epochs)
        positive("batch_size", self.batch_size)
        positive("lr", self.lr, integer=False)
        positive("patience", self.patience)
        positive("clip_grad", self.clip_grad, integer=False)
        positive("affine_lr_after_warmup", self.affine_lr_after_warmup, integer=False)
        positive("max_val_pairs", self.max_val_pairs)
        positive("block_pairs", self.block_pairs)
        positive("shuffle_pieces", self.shuffle_pieces)
        if int(self.reweight_after) != self.reweight_after or self.reweight_after < 0:
            raise ConfigError(
                f"reweight_after must be an integer >= 0, got {self.reweight_after!r}"
            )
        if (
            isinstance(self.skip_first, bool)
            or int(self.skip_first) != self.skip_first
            or self.skip_first < 0
        ):
            raise ConfigError(f"skip_first must be an integer >= 0, got {self.skip_first!r}")
        if int(self.kstep_every) != self.kstep_every or self.kstep_every < 0:
            raise ConfigError(f"kstep_every must be an integer >= 0, got {self.kstep_every!r}")
        if int(self.warmup_epochs) != self.warmup_epochs or self.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs!r}")
        if self.max_minutes is not None:
            positive("max_minutes", self.max_minutes, integer=False)
        if self.pairs_per_traj is not None:
            positive("pairs_per_traj", self.pairs_per_traj)
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "device 'cuda' was asked for but no CUDA GPU is available; use --device cpu"
        )
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None


class _Schedule:
    """Learning-rate multiplier as a function of the optimizer step (and elapsed time).

    With a wall-clock budget (``max_minutes``) the cosine schedule, warm-up included, runs
    on whichever is further along, the steps or the budget: ``--epochs 1e9 --max-minutes 1``
    warms up over the first 2 % of the minute, not of 10^9 epochs.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.spe = max(1, steps_per_epoch)
        self.total = cfg.epochs * self.spe
        self.warmup = max(1, int(0.02 * self.total))

    def __call__(self, step: int, elapsed: float = 0.0) -> float:
        return self._value(step, elapsed)

    def warmed_up(self, step: int, elapsed: float) -> bool:
        """Whether the learning rate has reached its peak after ``step`` steps and
        ``elapsed`` seconds (always true without a warm-up)."""
        if self.cfg.schedule != "cosine" or step >= self.warmup:
            return True
        budget = self.cfg.max_minutes
        return budget is not None and elapsed >= 0.02 * 60.0 * budget

    def _value(self, step: int, elapsed: float) -> float:
        cfg = self.cfg
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            time_frac = 0.0
            if cfg.max_minutes is not None:
                time_frac = min(1.0, elapsed / (60.0 * cfg.max_minutes))
            if step < self.warmup and time_frac < 0.02:
                return max((step + 1) / self.warmup, time_frac / 0.02)
            frac = min(1.0, max(0, step - self.warmup) / max(1, self.total - self.warmup))
            if cfg.max_minutes is not None:
                frac = max(frac, (time_frac - 0.02) / 0.98)
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac))
        epoch = step // self.spe  # step_cyclic steps once per epoch, like the authors' code
        seg, it = divmod(epoch, cfg.cyclic_segment)
        scale = 0.5 / (seg + 1)
        base, top = 1.0 / 3.0, 1.0
        cycle = math.floor(1 + it / (2 * cfg.cyclic_step))
        x = abs(it / cfg.cyclic_step - 2 * cycle + 1)
        return scale * (base + (top - base) * max(0.0, 1 - x) * cfg.cyclic_gamma**it)


def _as_data(data, dt: float | None) -> Trajectories:
    if isinstance(data, Trajectories):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_trajectories(data, dt=dt)
    raise ConfigError(
        f"data must be a Trajectories object, a TrajectoryStore or a file path, "
        f"got {type(data).__name__}"
    )


@np.errstate(over="ignore", invalid="ignore")  # huge data are refused by _check_prepared
def _statistics(x0: np.ndarray, x1: np.ndarray) -> dict[str, np.ndarray]:
    """Standardization statistics of conditions x0 ((N, d) or windows (N, K + 1, d), whose
    last row is x_n) and targets x1."""
    if x0.ndim == 3:
        x0 = x0[:, -1]
    inc = x1 - x0
    tiny = 1e-12
    return {
        "x_mean": x0.mean(0),
        "x_std": np.maximum(x0.std(0), tiny),
        "d_mean": inc.mean(0),
        "d_std": np.maximum(inc.std(0), tiny),
    }


@torch.no_grad()
def _nll_sum(model: FlowMap, x0: torch.Tensor, x1: torch.Tensor, batch: int = 65536) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, x0.shape[0], batch):
        total += float(-model(x0[i : i + batch]).log_prob(x1[i : i + batch]).double().sum())
    model.train(was_training)
    return total


def evaluate_nll(model: FlowMap, x0: torch.Tensor, x1: torch.Tensor, batch: int = 65536) -> float:
    """Mean negative log-likelihood (nats per pair) of pairs under ``model``."""
    return _nll_sum(model, x0, x1, batch) / max(1, x0.shape[0])


def _optimizer(model: FlowMap, cfg: TrainConfig, lr: float) -> torch.optim.Adam:
    """Adam with the affine stage and the rest in separate parameter groups."""
    affine = list(model.affine.parameters()) if model.affine is not None else []
    ids = {id(p) for p in affine}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": g, "name": n} for n, g in (("affine", affine), ("flow", rest)) if g]
    return torch.optim.Adam(groups, lr=lr, weight_decay=cfg.weight_decay)


def _state_to_cpu(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


# ------------------------------------------------------------------ data-parallel training
@dataclass(frozen=True)
class _Dist:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1


@contextlib.contextmanager
def _process_group(cfg: TrainConfig):
    """This process's :class:`_Dist`; a process group created here is destroyed on exit."""
    dctx = _init_distributed(cfg)
    try:
        yield dctx
        if dctx.owns_group:
            import torch.distributed as dist

            # all ranks leave together: tearing the group down while a peer is still in
            # it aborted gloo processes now and then ("terminate called without an
            # active exception")
            dist.barrier()
    finally:
        if dctx.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


@contextlib.contextmanager
def _caller_state(cfg: TrainConfig):
    """Run with ``cfg.threads`` torch threads and a forked torch RNG: the caller's global
    random state and thread count are as they were afterwards, whatever fit did."""
    threads = torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _init_distributed(cfg: TrainConfig) -> _Dist:
    """Join the process group that ``torchrun`` describes in the environment.

    Outside torchrun (no ``WORLD_SIZE`` > 1) training is single-process. The backend is
    NCCL when the processes train on CUDA, gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    owns = False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available() and cfg.device != "cpu"
        dist.init_process_group("nccl" if cuda else "gloo")
        owns = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, owns)


def _device(cfg: TrainConfig, dctx: _Dist) -> torch.device:
    device = resolve_device(cfg.device)
    if dctx.active and device.type == "cuda":
        device = torch.device("cuda", dctx.local_rank)
        torch.cuda.set_device(device)
    return device


class _PairNLL(torch.nn.Module):
    """The training loss as a module, so DistributedDataParallel can wrap it (the model
    itself returns a distribution, which DDP cannot inspect)."""

    def __init__(self, model: FlowMap) -> None:
        super().__init__()
        self.model = model

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return -self.model(x0).log_prob(x1).mean()


def _all_reduce(values: list[float], device, dctx: _Dist, op: str = "sum") -> list[float]:
    if not dctx.active:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.tolist()


# -------------------------------------------------------------------------- batch sources
class _MemoryBatches:
    """Pairs held on the training device; each epoch a fresh permutation.

    With ``world`` processes every global batch of ``bs`` pairs is cut into equal shares,
    so the gradient DDP averages is the one-process gradient of the same batch.
    """

    def __init__(self, x0: np.ndarray, x1: np.ndarray, device) -> None:
        self.tx0 = torch.as_tensor(x0, dtype=torch.float32, device=device)
        self.tx1 = torch.as_tensor(x1, dtype=torch.float32, device=device)
        self.device = device

    def epoch(self, epoch: int, steps: int, bs: int, gen: torch.Generator, dctx: _Dist):
        perm = torch.randperm(self.tx0.shape[0], generator=gen).to(self.device)
        share = bs // dctx.world
        for b in range(steps):
            idx = perm[b * bs + dctx.rank * share : b * bs + (dctx.rank + 1) * share]
            yield self.tx0[idx], self.tx1[idx]


class _StreamBatches:
    """Pairs read from a memory-mapped file piece by piece.

    Each epoch visits the pieces in a new random order (seeded by seed and epoch, so a
    resumed run reads what the uninterrupted one would); ``buffer`` pieces at a time are
    loaded (the next group in a background thread while the current one trains), mixed,
    and cut into batches. Memory: about two groups of pieces. With several processes each
    takes every ``world``-th piece of the order; all take the same number of steps.
    """

    def __init__(self, store, pieces, seed: int, device, buffer: int, read, memory: int) -> None:
        self.store, self.pieces, self.seed = store, pieces, int(seed)
        self.device, self.buffer = device, max(1, int(buffer))
        self.read = read  # piece -> (conditions, targets)
        d = store.dim
        self.cond_shape = (d,) if memory == 0 else (memory + 1, d)

    def _load(self, idx) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.read(self.pieces[i]) for i in idx]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def epoch(self, epoch: int, steps: int, bs: int, gen, dctx: _Dist):
        from concurrent.futures import ThreadPoolExecutor

        share = bs // dctx.world
        if len(self.pieces) < dctx.world:
            raise ConfigError(
                f"{len(self.pieces)} data piece(s) for {dctx.world} processes; lower "
                "block_pairs so that every process gets at least one"
            )
        produced, rep = 0, 0
        carry = (np.empty((0, *self.cond_shape)), np.empty((0, self.store.dim)))
        with ThreadPoolExecutor(1) as pool:
            while produced < steps:
                rng = np.random.default_rng([self.seed, epoch, rep])
                order = rng.permutation(len(self.pieces))[dctx.rank :: dctx.world]
                groups = [order[g : g + self.buffer] for g in range(0, len(order), self.buffer)]
                pending = pool.submit(self._load, groups[0])
                got_any = False
                for gi in range(len(groups)):
                    x0, x1 = pending.result()
                    if gi + 1 < len(groups):
                        pending = pool.submit(self._load, groups[gi + 1])
                    got_any = got_any or x0.shape[0] > 0
                    x0 = np.concatenate([carry[0], x0])
                    x1 = np.concatenate([carry[1], x1])
                    perm = rng.permutation(x0.shape[0])
                    nb = x0.shape[0] // share
                    use = perm[: nb * share]
                    t0 = torch.as_tensor(x0[use], dtype=torch.float32).to(self.device)
                    t1 = torch.as_tensor(x1[use], dtype=torch.float32).to(self.device)
                    carry = (x0[perm[nb * share :]], x1[perm[nb * share :]])
                    for b in range(nb):
                        yield t0[b * share : (b + 1) * share], t1[b * share : (b + 1) * share]
                        produced += 1
                        if produced >= steps:
                            return
                if not got_any:
                    raise DataError(f"{self.store.path}: no training pairs for this process")
                rep += 1


@dataclass
class _Prepared:
    """What training needs from the data, however it is held."""

    dim: int
    dt: float
    names: tuple
    meta: dict
    stats: dict
    lo: np.ndarray
    hi: np.ndarray
    n_train: int
    v0: np.ndarray
    v1: np.ndarray
    batches: object
    drift_sample: tuple | None = None  # (x0, x1, groups) for the basis drift estimator
    val_bursts: tuple | None = None  # (x, lengths) of the validation bursts (in memory)
    periods: list | None = None  # per variable (lo, hi) of a periodic one, or None


def _cap_pairs(v0: np.ndarray, v1: np.ndarray, n: int, rng: np.random.Generator):
    """At most ``n`` of the validation pairs, drawn at random without replacement."""
    if v0.shape[0] <= n:
        return v0, v1
    keep = rng.choice(v0.shape[0], n, replace=False)
    return v0[keep], v1[keep]


def _windows(data: Trajectories, memory: int, cfg: TrainConfig, pairs_per_traj, rng, what: str):
    """Training or validation windows (conditions (N, d) or (N, K + 1, d), targets, groups)."""
    try:
        h, x1, traj = make_windows(data, memory, cfg.skip_first, pairs_per_traj, rng)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None
    return (h[:, 0] if memory == 0 else h), x1, traj


def _prepare_memory(data: Trajectories, cfg: TrainConfig, device, memory: int = 0) -> _Prepared:
    train, val = split_by_trajectory(data, cfg.val_fraction, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x0, x1, groups = _windows(train, memory, cfg, cfg.pairs_per_traj, rng, "training data")
    v0, v1, _ = _windows(val, memory, cfg, None, rng, "validation data")
    v0, v1 = _cap_pairs(v0, v1, cfg.max_val_pairs, rng)
    return _Prepared(
        data.dim,
        data.dt,
        tuple(data.names),
        dict(data.meta or {}),
        _statistics(x0, x1),
        np.nanmin(data.x, axis=(0, 1)),
        np.nanmax(data.x, axis=(0, 1)),
        int(x0.shape[0]),
        v0,
        v1,
        _MemoryBatches(x0, x1, device),
        (x0, x1, groups),
        (val.x, val.lengths),
        periodic_ranges(data),
    )


def _stream_reader(store, memory: int, skip_first: int):
    """piece -> (conditions, targets): windows (k, K + 1, d), or (k, d) for K = 0; a
    periodic variable's target is x_n plus its increment on the circle."""
    from .data import wrap_delta

    periods = periodic_ranges(store)

    def read(piece):
        h, x1 = store.read_windows(piece, memory, skip_first)
        for j, r in enumerate(periods):
            if r is not None:
                x1[:, j] = h[:, -1, j] + wrap_delta(x1[:, j] - h[:, -1, j], r[1] - r[0])
        return (h[:, 0] if memory == 0 else h), x1

    return read


def _prepare_stream(store, cfg: TrainConfig, device, memory: int = 0) -> _Prepared:
    from .store import pair_statistics

    if cfg.pairs_per_traj is not None:
        raise ConfigError("pairs_per_traj is not available with streaming; it uses every pair")
    train, val = store.split(cfg.val_fraction, cfg.seed, cfg.block_pairs)
    read = _stream_reader(store, memory, cfg.skip_first)
    n_train = store.window_count(train, memory, cfg.skip_first)
    if n_train < 1:
        raise DataError(f"{store.path}: no training windows of {memory + 1} observations")
    rng = np.random.default_rng(cfg.seed)
    v0s, v1s, have = [], [], 0
    for i in rng.permutation(len(val)):
        a, b = read(val[i])
        v0s.append(a)
        v1s.append(b)
        have += a.shape[0]
        if have >= cfg.max_val_pairs:
            break
    v0, v1 = np.concatenate(v0s), np.concatenate(v1s)
    v0, v1 = _cap_pairs(v0, v1, cfg.max_val_pairs, rng)
    return _Prepared(
        store.dim,
        store.dt,
        tuple(store.names),
        dict(store.meta or {}),
        pair_statistics(store, train),
        store.lo,
        store.hi,
        n_train,
        v0,
        v1,
        _StreamBatches(store, train, cfg.seed, device, cfg.shuffle_pieces, read, memory),
        _stream_drift_sample(read, train, cfg.seed),
        None,
        periodic_ranges(store),
    )


#: Pairs of a streamed file that the basis drift estimator reads (pieces in random order).
STREAM_DRIFT_PAIRS = 4_000_000


def _stream_drift_sample(read, pieces, seed: int) -> tuple:
    """Up to ``STREAM_DRIFT_PAIRS`` training windows of a streamed file, grouped by piece."""
    rng = np.random.default_rng([seed, 7])
    parts, have = [], 0
    for i in rng.permutation(len(pieces)):
        a, b = read(pieces[i])
        parts.append((a, b, np.full(a.shape[0], i)))
        have += a.shape[0]
        if have >= STREAM_DRIFT_PAIRS:
            break
    return tuple(np.concatenate([p[k] for p in parts]) for k in range(3))


_RESUMABLE = ("epochs", "max_minutes", "device", "threads")


def _resume_settings(
    state: dict, requested, train_config, overrides: dict, cfg: TrainConfig, memory=None
):
    """Model config, train config and preset name of a resumed run.

    The checkpoint's settings are kept; what the caller asks for may change only
    ``epochs`` (extended, never shortened), ``max_minutes``, ``device`` and ``threads``.
    Anything else that differs from the checkpoint is refused, naming what differs.
    """
    ck_model = ModelConfig.from_dict(state["model_config"])
    ck_preset = state.get("preset", "custom")
    if requested is not None:
        req = get_preset(requested) if isinstance(requested, str) else requested
        if req.basis_degree is None:  # the checkpoint holds the degree chosen from the data
            req = replace(req, basis_degree=ck_model.basis_degree)
        if req.scale_degree is None:
            req = replace(req, scale_degree=ck_model.scale_degree)
        if isinstance(requested, str):  # a preset name says nothing of the memory
            req = replace(req, memory=ck_model.memory if memory is None else int(memory))
        if req != ck_model:
            diff = [
                f"{k}: {v!r} vs {ck_model.to_dict()[k]!r}"
                for k, v in req.to_dict().items()
                if v != ck_model.to_dict()[k]
            ]
            raise ConfigError(
                f"--resume: the checkpoint was trained with preset {ck_preset!r}, not "
                f"{requested if isinstance(requested, str) else 'this config'!r} "
                f"({'; '.join(diff)}); drop --preset or start a new fit"
            )
    ck = TrainConfig.from_dict(state["train_config"])
    given = dict(overrides)
    if train_config is not None:
        given = {**train_config.to_dict(), **given}
    diff = [
        f"{k} {given[k]!r} (checkpoint: {getattr(ck, k)!r})"
        for k in given
        if k not in _RESUMABLE and given[k] != getattr(ck, k)
    ]
    if diff:
        raise ConfigError(
            f"--resume: options differ from the checkpoint's: {', '.join(diff)}; resume with "
            "the same options (only epochs, max_minutes and device may change) or start anew"
        )
    cfg = replace(
        ck, epochs=max(cfg.epochs, ck.epochs), max_minutes=cfg.max_minutes, device=cfg.device
    )
    if memory is not None and int(memory) != ck_model.memory:
        raise ConfigError(
            f"--resume: the checkpoint was trained with memory {ck_model.memory}, not "
            f"{memory}; drop --memory or start a new fit"
        )
    return ck_model, cfg, ck_preset


def _check_prepared(prep, resume_state: dict | None, source: str) -> None:
    """Refuse data that training (in float32) cannot use, or that differ from a resumed
    run's data in Delta, d or the variable names."""
    big = np.finfo(np.float32).max / 1e3
    for key in ("x_mean", "x_std", "d_mean", "d_std"):
        v = np.asarray(prep.stats[key], dtype=np.float64)
        if not (np.isfinite(v).all() and (np.abs(v) < big).all()):
            raise DataError(
                f"{source}: the values are too large for training in float32 ({key} = "
                f"{np.asarray(v).tolist()}); rescale the data"
            )
    if resume_state is None:
        return
    info = resume_state.get("data")
    if info is None:  # checkpoints of older versions: Delta and d from the weights
        state = resume_state["model"]
        info = {"dt": float(state["dt"]), "dim": int(state["x_mean"].shape[0]), "names": None}
    if int(info["dim"]) != prep.dim:
        raise DataError(
            f"--resume: the data have d={prep.dim} slow variables but the checkpoint was "
            f"trained on d={info['dim']}"
        )
    if not math.isclose(float(info["dt"]), prep.dt, rel_tol=1e-9):
        raise DataError(
            f"--resume: the data have dt={prep.dt!r} but the checkpoint was trained at "
            f"dt={float(info['dt'])!r}"
        )
    if info.get("names") is not None and list(info["names"]) != list(prep.names):
        raise DataError(
            f"--resume: the data's variables {list(prep.names)} differ from the checkpoint's "
            f"{list(info['names'])}"
        )


def _with_periodic(config: ModelConfig, prep, source: str) -> ModelConfig:
    """The config with the data's periodic variables; a config that names others is refused."""
    per = tuple(j for j, r in enumerate(prep.periods or []) if r is not None)
    if config.periodic and tuple(config.periodic) != per:
        raise DataError(
            f"{source}: the data's periodic variables are {list(per)} (indices) but the model "
            f"config says {list(config.periodic)}; declare the same ones"
        )
    return replace(config, periodic=per)


def _check_outcome(history: dict, cfg: TrainConfig) -> None:
    """Training that did not work is never reported as success.

    No finite validation NLL at all (and not interrupted): :class:`TrainingError`. No
    improvement on the initial model, or a cosine learning rate that never reached its
    peak (warm-up unfinished): a RuntimeWarning that says so.
    """
    if history["stop_reason"].startswith("interrupted"):
        return
    init, best = history.get("initial_val_nll"), history["best_val_nll"]
    if history.get("kept_initial"):  # no epoch beat the closed-form start: it is the model
        history["stop_reason"] += "; no epoch improved on the closed-form Gaussian, kept it"
        return
    if history["best_epoch"] < 0:
        raise TrainingError(
            f"training produced no usable model: no epoch had a finite validation NLL "
            f"({history['stop_reason']}); nothing was written; check the data's scale or "
            "lower --lr"
        )
    if init is not None and math.isfinite(init) and not best < init - 1e-4:
        warnings.warn(
            f"training did not improve on the initial model: best validation NLL {best:.4f} "
            f"vs {init:.4f} before training; the model is no better than its starting point "
            "(train longer, or change --lr)",
            RuntimeWarning,
            stacklevel=3,
        )
    if not history.get("lr_reached_peak", True):
        warnings.warn(
            f"the learning rate never reached its peak lr={cfg.lr:g}: training stopped "
            "during the warm-up; raise --max-minutes or lower --epochs",
            RuntimeWarning,
            stacklevel=3,
        )


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
        :class:`~slowflow.store.TrajectoryStore`, or a path with ``stream=True``, is read
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
        :func:`slowflow.selection.fit_memory_auto`.

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
    requested_model = model_config
    if isinstance(model_config, str) or model_config is None:
        preset_name = model_config or "default"
        model_config = get_preset(model_config)
    else:
        preset_name = "custom"
    if memory is not None:
        model_config = replace(model_config, memory=int(memory))
    cfg = train_config or TrainConfig()
    if overrides:
        cfg = replace(cfg, **overrides)

    resume_state = None
    if resume:
        rpath = Path(checkpoint if resume is True else resume)
        resume_state = load_checkpoint(rpath)
        model_config, cfg, preset_name = _resume_settings(
            resume_state, requested_model, train_config, overrides, cfg, memory
        )

    with _caller_state(cfg), _process_group(cfg) as dctx:
        device = _device(cfg, dctx)
        if dctx.world > cfg.batch_size:
            raise ConfigError(
                f"batch_size {cfg.batch_size} is smaller than the {dctx.world} processes"
            )
        torch.manual_seed(cfg.seed)
        k = model_config.memory
        if isinstance(data, TrajectoryStore):
            prep = _prepare_stream(data, cfg, device, k)
        elif cfg.stream:
            if not isinstance(data, (str, os.PathLike)):
                raise ConfigError("stream=True needs a file path or a TrajectoryStore")
            prep = _prepare_stream(
                TrajectoryStore.open(data, dt=dt, block_pairs=cfg.block_pairs), cfg, device, k
            )
        else:
            prep = _prepare_memory(_as_data(data, dt), cfg, device, k)
        source = str(data) if isinstance(data, (str, os.PathLike)) else "data"
        _check_prepared(prep, resume_state, source)
        model_config = _with_periodic(model_config, prep, source)
        n_train = prep.n_train
        # the degree asked for (None: chosen from the data, and again when the drift is
        # reweighted); a checkpoint's config holds the chosen one, so it records the request
        fixed_degree = (
            resume_state.get("basis_degree_asked", model_config.basis_degree)
            if resume_state is not None
            else model_config.basis_degree
        )
        t_closed = time.perf_counter()
        drift_fit, cov_fit = (
            _fit_closed_form(model_config, prep, cfg) if resume_state is None else (None, None)
        )
        t_closed = time.perf_counter() - t_closed
        model = build_model(model_config, prep.dim, prep.dt, drift_fit, cov_fit)
        model_config = model.config
        if n_train < 20 * model.n_parameters() ** 0.5:
            warnings.warn(
                f"only {n_train} training pairs for a model with {model.n_parameters()} parameters; "
                "expect overfitting (early stopping on the validation trajectories limits it)",
                RuntimeWarning,
                stacklevel=2,
            )
        model.set_statistics(**prep.stats)
        if model.memory and prep.drift_sample is not None:
            model.set_history_bank(_bank(prep.drift_sample[0], cfg.seed))
        if model.periodic:
            model.set_periods(prep.periods)
        model.x_lo.copy_(torch.as_tensor(prep.lo))
        model.x_hi.copy_(torch.as_tensor(prep.hi))
        model.to(device)
        lead = dctx.rank == 0
        if model.n_parameters() == 0:  # drift and covariance in closed form: nothing to train
            fits = (drift_fit, cov_fit)
            return _closed_form_model(
                model, prep, cfg, preset_name, device, dctx, fits, t_closed, stop_flag
            )

        # validation pairs: each process scores its share; the sums are added up
        tv0 = torch.as_tensor(prep.v0[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
        tv1 = torch.as_tensor(prep.v1[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
        n_val = int(prep.v0.shape[0])
        bs = min(cfg.batch_size, n_train)
        bs -= bs % dctx.world
        steps_per_epoch = max(1, n_train // bs)
        opt = _optimizer(model, cfg, cfg.lr)
        sched = _Schedule(cfg, steps_per_epoch)
        has_warmup = model.flow is not None and model.affine is not None and cfg.warmup_epochs > 0
        gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        loss_fn: torch.nn.Module = _PairNLL(model)
        if dctx.active:
            import inspect

            from torch.nn.parallel import DistributedDataParallel

            # the statistics buffers are equal on every process: no need to sync them per step
            no_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                else {"broadcast_buffers": False}
            )
            loss_fn = DistributedDataParallel(
                loss_fn,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=has_warmup,  # the flow sits idle during the warm-up
                **no_sync,
            )

        history: dict = {"epoch": [], "train_nll": [], "val_nll": [], "lr": [], "seconds": []}
        best_val, best_state, best_epoch = math.inf, _state_to_cpu(model.state_dict()), -1
        start_epoch, step, elapsed_before, lr_factor, nan_events = 0, 0, 0.0, 1.0, 0
        if resume_state is not None:
            model.load_state_dict(resume_state["model"])
            opt.load_state_dict(resume_state["optimizer"])
            history = resume_state["history"]
            best_val = resume_state["best_val"]
            best_state = resume_state["best_state"]
            best_epoch = resume_state["best_epoch"]
            start_epoch = resume_state["epoch"] + 1
            step = resume_state["step"]
            elapsed_before = resume_state["elapsed"]
            lr_factor = resume_state.get("lr_factor", 1.0)
            nan_events = resume_state.get("nan_events", 0)
            gen.set_state(resume_state["generator"])
        if drift_fit is not None:
            history["drift_basis"] = drift_fit.summary()
        if cov_fit is not None:
            history["covariance_basis"] = cov_fit.summary()
        history.setdefault("closed_form_seconds", t_closed)

        if "initial_val_nll" not in history:  # what training must improve on
            init_sum = _all_reduce([_nll_sum(model, tv0, tv1)], device, dctx)[0]
            history["initial_val_nll"] = init_sum / max(1, n_val)
            if model_config.uses_basis_scale and math.isfinite(history["initial_val_nll"]):
                # the start is a fitted model (the closed-form Gaussian the flow refines):
                # an epoch is kept only if it beats it
                best_val = history["initial_val_nll"]
                history["kept_initial"] = True
        # a fixed epoch, not a fraction of the planned ones, so a resumed run does the same
        # (a closed-form covariance already weighted the drift's fit)
        reweight_epoch = (
            cfg.reweight_after - 1
            if cfg.reweight_after and not model_config.uses_basis_scale
            else -1
        )
        show = (progress if progress is not None else True) and lead
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.epochs, initial=start_epoch, unit="epoch", desc="fit", leave=True)
        t_start = time.perf_counter()
        stop_reason = "completed all epochs"
        epochs_since_best = 0 if best_epoch < 0 else (start_epoch - 1 - best_epoch)
        model.train()
        params = list(model.parameters())
        try:
            for epoch in range(start_epoch, cfg.epochs):
                model.gaussian_only = (
                    epoch < cfg.warmup_epochs
                    and model.flow is not None
                    and model.affine is not None
                )
                # Loss sums and the non-finite flag stay on the device: no host sync per step.
                run_loss = torch.zeros((), device=device)
                nonfinite = torch.zeros((), dtype=torch.bool, device=device)
                after_warmup = epoch >= cfg.warmup_epochs
                batches = prep.batches.epoch(epoch, steps_per_epoch, bs, gen, dctx)
                for b, (xb0, xb1) in enumerate(batches):
                    if b % 16 == 0:
                        now = elapsed_before + time.perf_counter() - t_start
                        stop_now = stop_flag is not None and bool(stop_flag())
                        if dctx.active:  # every process stops at the same step
                            stop_now = _all_reduce([float(stop_now)], device, dctx, "max")[0] > 0
                        if stop_now:
                            raise KeyboardInterrupt
                    for group in opt.param_groups:
                        slow = cfg.affine_lr_after_warmup if group["name"] == "affine" else 1.0
                        group["lr"] = (
                            cfg.lr
                            * lr_factor
                            * sched(step, now)
                            * (slow if after_warmup and has_warmup else 1.0)
                        )
                    loss = loss_fn(xb0, xb1)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    # a non-finite loss anywhere makes the (averaged) gradient norm non-finite
                    # on every process, so all of them take the same decision below
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
                    nonfinite |= ~torch.isfinite(norm)
                    opt.step()
                    step += 1
                    run_loss += loss.detach()
                bad = bool(nonfinite)
                if bad:
                    nan_events += 1
                    model.load_state_dict(best_state)
                    if nan_events >= 2:
                        stop_reason = (
                            f"non-finite loss at epoch {epoch} again after lowering the "
                            "learning rate; stopped with the best weights"
                        )
                        break
                    lr_factor *= 0.1
                    opt = _optimizer(model, cfg, cfg.lr * lr_factor)
                    if lead:
                        warnings.warn(
                            f"non-finite loss at epoch {epoch}: restored the best weights and "
                            "lowered the learning rate 10x",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    continue
                refit = (
                    _reweight_drift(model, prep, cfg, fixed_degree)
                    if epoch == reweight_epoch
                    else None
                )
                if refit is not None:
                    model_config = model.config
                    history["drift_basis"] = refit.summary()
                    # the old best weights hold the old drift (maybe of another degree)
                    best_val, best_state = math.inf, _state_to_cpu(model.state_dict())
                val_sum, train_sum = _all_reduce(
                    [_nll_sum(model, tv0, tv1), float(run_loss)], device, dctx
                )
                val_nll = val_sum / max(1, n_val)
                train_nll = train_sum / dctx.world / max(1, steps_per_epoch)
                elapsed = elapsed_before + time.perf_counter() - t_start
                if dctx.active:  # the budget is rank 0's clock
                    elapsed = _all_reduce([elapsed if lead else 0.0], device, dctx, "max")[0]
                history["epoch"].append(epoch)
                history["train_nll"].append(train_nll)
                history["val_nll"].append(val_nll)
                history["lr"].append(opt.param_groups[0]["lr"])
                history["seconds"].append(elapsed)
                if lead and cfg.kstep_every and (epoch + 1) % cfg.kstep_every == 0:
                    score = _kstep(model, prep, cfg)
                    if score is not None:
                        history.setdefault("val_kstep_epoch", []).append(epoch)
                        history.setdefault("val_kstep", []).append(score["score"])
                if math.isfinite(val_nll) and val_nll < best_val - 1e-4:
                    best_val, best_state, best_epoch = (
                        val_nll,
                        _state_to_cpu(model.state_dict()),
                        epoch,
                    )
                    epochs_since_best = 0
                    history["kept_initial"] = False
                else:
                    epochs_since_best += 1
                if bar is not None:
                    bar.set_postfix(
                        train=f"{train_nll:.4f}",
                        val=f"{val_nll:.4f}",
                        best=f"{best_val:.4f}",
                        t=f"{elapsed:.0f}s",
                    )
                    bar.update(1)
                if checkpoint is not None and lead:
                    _write_checkpoint(
                        checkpoint,
                        {
                            "model_config": model_config.to_dict(),
                            "train_config": cfg.to_dict(),
                            "preset": preset_name,
                            "data": {"dt": prep.dt, "dim": prep.dim, "names": list(prep.names)},
                            "basis_degree_asked": fixed_degree,
                            "model": _state_to_cpu(model.state_dict()),
                            "optimizer": opt.state_dict(),
                            "history": copy.deepcopy(history),
                            "best_val": float(best_val),
                            "best_state": best_state,
                            "best_epoch": int(best_epoch),
                            "epoch": int(epoch),
                            "step": int(step),
                            "elapsed": float(elapsed),
                            "lr_factor": float(lr_factor),
                            "nan_events": int(nan_events),
                            "generator": gen.get_state(),
                        },
                    )
                if epochs_since_best >= cfg.patience:
                    stop_reason = (
                        f"early stopping: no validation improvement for {cfg.patience} epochs"
                    )
                    break
                if cfg.max_minutes is not None and elapsed > 60.0 * cfg.max_minutes:
                    stop_reason = f"wall-clock budget of {cfg.max_minutes} min reached"
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted; kept the best weights so far"
        finally:
            model.gaussian_only = False
            if bar is not None:
                bar.close()
        model.load_state_dict(best_state)
        model.eval()
        if lead and cfg.kstep_every:
            history["kstep"] = _kstep(model, prep, cfg)
        history["stop_reason"] = stop_reason
        history["best_epoch"] = best_epoch
        history["best_val_nll"] = best_val
        history["train_seconds"] = elapsed_before + time.perf_counter() - t_start
        history["n_train_pairs"] = int(n_train)
        history["n_val_pairs"] = n_val
        history["world_size"] = dctx.world
        history["lr_reached_peak"] = sched.warmed_up(step, history["train_seconds"])
        _check_outcome(history, cfg)
        model.history = history
        model.meta = _meta(model, prep, cfg, preset_name, device, dctx)
        return model


def _meta(model, prep, cfg, preset_name, device, dctx) -> dict:
    return {
        "slowflow_version": __version__,
        "preset": preset_name,
        "train_config": cfg.to_dict(),
        "data_meta": prep.meta,
        "names": list(prep.names),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": dctx.world,
    }


def _kstep(model: FlowMap, prep: _Prepared, cfg: TrainConfig) -> dict | None:
    """The multi-step validation score (None without validation bursts)."""
    from .model.score import kstep_score

    if prep.val_bursts is None:
        return None
    x, lengths = prep.val_bursts
    first = cfg.skip_first + model.memory  # the first observation a window may end at
    if int(lengths.max()) - first < 2:
        return None
    score = kstep_score(model, x, lengths, seed=cfg.seed, first=first)
    score.pop("per_start")  # an array: the history holds plain numbers (weights-only files)
    return score


def _fit_closed_form(config: ModelConfig, prep: _Prepared, cfg: TrainConfig):
    """The closed-form stages of a model from the training pairs: (drift, covariance), each
    a fit or None.

    Basis drift by feasible GLS (:func:`~slowflow.model.basis.fit_drift`). With a
    closed-form scale: the covariance of its residuals
    (:func:`~slowflow.model.covariance.fit_covariance`), the drift fitted again weighted by
    the inverse of that covariance's diagonal, and the covariance of the final residuals.
    """
    from .model.basis import fit_drift
    from .model.covariance import fit_covariance

    if not config.uses_basis or prep.drift_sample is None:
        return None, None
    h, x1, groups = prep.drift_sample
    x0, z = _condition_parts(h, config.memory, prep.periods)
    dt, seed, deg = prep.dt, cfg.seed, config.basis_degree
    drift = fit_drift(x0, x1, dt, groups, degree=deg, seed=seed, context=z)
    if not config.uses_basis_scale:
        return drift, None
    for final in (False, True):
        resid = x1 - x0 - dt * drift.drift(z)
        cov = fit_covariance(resid, dt, z, groups, degree=config.scale_degree, seed=seed)
        if final:
            return drift, cov
        var = np.einsum("nii->ni", cov.sigma(z))
        # floored like the residual weights: a covariance that nearly vanishes somewhere
        # must not let a few pairs carry the fit
        var = np.maximum(var, WEIGHT_FLOOR * var.mean(0))
        drift = fit_drift(x0, x1, dt, groups, degree=deg, weights=1.0 / var, seed=seed, context=z)
    raise AssertionError("unreachable")


def _condition_parts(h: np.ndarray, memory: int, periods=None) -> tuple[np.ndarray, np.ndarray]:
    """(x_n, coordinates) of conditions: (N, d) for K = 0, windows (N, K + 1, d); periodic
    variables (``periods``: (lo, hi) or None per variable) enter through cos and sin."""
    from .model.flowmap import window_coords

    x0 = h if memory == 0 else h[:, -1]
    per = [j for j, r in enumerate(periods or []) if r is not None]
    if not per:
        return x0, window_coords(h, memory)
    lo = np.array([r[0] if r else 0.0 for r in periods])
    period = np.array([r[1] - r[0] if r else 1.0 for r in periods])
    return x0, window_coords(h, memory, per, lo, period)


#: Training windows a map with memory keeps to draw rollout histories from.
HISTORY_BANK = 20_000


def _bank(h: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 11])
    keep = rng.choice(h.shape[0], min(HISTORY_BANK, h.shape[0]), replace=False)
    return h[np.sort(keep)]


def _closed_form_model(
    model, prep, cfg, preset_name, device, dctx, fits, seconds, stop_flag=None
) -> FlowMap:
    """Finish a model whose every stage was fitted in closed form: its validation scores,
    history and meta (no epochs, no checkpoints: a refit takes seconds)."""
    model.eval()
    tv0 = torch.as_tensor(prep.v0[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
    tv1 = torch.as_tensor(prep.v1[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
    n_val = int(prep.v0.shape[0])
    val = _all_reduce([_nll_sum(model, tv0, tv1)], device, dctx)[0] / max(1, n_val)
    if not math.isfinite(val):
        raise TrainingError(
            f"the closed-form model has no finite validation NLL ({val}); check the data"
        )
    history: dict = {"epoch": [], "train_nll": [], "val_nll": [], "lr": [], "seconds": []}
    for key, fit in zip(("drift_basis", "covariance_basis"), fits):
        if fit is not None:
            history[key] = fit.summary()
    stopped = stop_flag is not None and bool(stop_flag())
    history.update(
        initial_val_nll=val,
        best_val_nll=val,
        best_epoch=-1 if stopped else 0,
        stop_reason="interrupted during the closed-form fit"
        if stopped
        else "closed form: drift and covariance fitted by least squares, nothing to train",
        closed_form_seconds=seconds,
        train_seconds=seconds,
        n_train_pairs=int(prep.n_train),
        n_val_pairs=n_val,
        world_size=dctx.world,
        lr_reached_peak=True,
    )
    if dctx.rank == 0 and cfg.kstep_every:
        history["kstep"] = _kstep(model, prep, cfg)
    model.history = history
    model.meta = _meta(model, prep, cfg, preset_name, device, dctx)
    return model


def _reweight_drift(model: FlowMap, prep: _Prepared, cfg: TrainConfig, degree: int | None):
    """Refit a basis drift weighted by the model's learned conditional variance (``degree``
    None: chosen again) and store it in the model; returns the fit (None: nothing to do)."""
    from .model.basis import fit_drift

    if not model.config.uses_basis or prep.drift_sample is None:
        return None
    h, x1, groups = prep.drift_sample
    x0, z = _condition_parts(h, model.memory, prep.periods)
    var = model.conditional_variance(h)
    weights = 1.0 / np.maximum(var, 1e-12 * var.mean(0))
    fit = fit_drift(
        x0, x1, prep.dt, groups, degree=degree, weights=weights, seed=cfg.seed, context=z
    )
    model.set_drift(fit)
    return fit


CHECKPOINT_FORMAT = "slowflow-checkpoint"


def _write_checkpoint(path, state: dict) -> None:
    """Write the training state atomically, marked as a slowflow checkpoint."""
    payload = {"format": CHECKPOINT_FORMAT, "slowflow_version": __version__, **state}
    with atomic_write(Path(path)) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path) -> dict:
    """Read a training checkpoint (weights-only, no arbitrary unpickling)."""
    path = Path(path)
    if not path.exists():
        raise SlowflowError(f"{path}: no checkpoint to resume from (run without --resume first)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SlowflowError(
            f"{path}: unreadable checkpoint (truncated or corrupted?): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise SlowflowError(f"{path}: not a slowflow training checkpoint")
    return payload
