"""Resumable training: checkpoints written atomically, read without unpickling, and the
rules for what a resumed run may change."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from .. import __version__
from ..errors import ConfigError, SlowflowError
from ..io.atomic import atomic_write
from ..model.config import ModelConfig, get_preset
from .config import TrainConfig

_RESUMABLE = ("epochs", "max_minutes", "device", "threads")


def resume_settings(
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


CHECKPOINT_FORMAT = "slowflow-checkpoint"


@dataclass
class Checkpoint:
    """What a resumed run needs: the settings, the weights and optimizer state, the best
    weights so far, the record, the counters and the data order's random state. Stored as
    a dict of plain tensors, numbers and strings (read back with ``weights_only=True``)."""

    model_config: dict
    train_config: dict
    preset: str
    data: dict
    basis_degree_asked: int | None
    model: dict
    optimizer: dict
    history: dict
    best_val: float
    best_state: dict
    best_epoch: int
    epoch: int
    step: int
    elapsed: float
    lr_factor: float
    nan_events: int
    generator: torch.Tensor

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, state: dict) -> Checkpoint:
        old = {"lr_factor": 1.0, "nan_events": 0, "preset": "custom", "data": None,
               "basis_degree_asked": None}  # fmt: skip
        return cls(**{f.name: state.get(f.name, old.get(f.name)) for f in fields(cls)})


def write_checkpoint(path, state: dict) -> None:
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
