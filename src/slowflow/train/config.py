"""Training settings: the frozen, validated :class:`TrainConfig`, and the device."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch

from ..data.store import DEFAULT_BLOCK_PAIRS
from ..errors import ConfigError

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
    (files larger than memory; see :mod:`slowflow.data.store`): pieces of about ``block_pairs``
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
