"""What a fit reports: validation NLL, the multi-step score, the outcome checks and the
model's provenance."""

from __future__ import annotations

import math
import warnings

import torch

from .. import __version__
from ..errors import TrainingError
from ..model.flowmap import FlowMap
from .config import TrainConfig


@torch.no_grad()
def nll_sum(model: FlowMap, x0: torch.Tensor, x1: torch.Tensor, batch: int = 65536) -> float:
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, x0.shape[0], batch):
        total += float(-model(x0[i : i + batch]).log_prob(x1[i : i + batch]).double().sum())
    model.train(was_training)
    return total


def evaluate_nll(model: FlowMap, x0: torch.Tensor, x1: torch.Tensor, batch: int = 65536) -> float:
    """Mean negative log-likelihood (nats per pair) of pairs under ``model``."""
    return nll_sum(model, x0, x1, batch) / max(1, x0.shape[0])


def kstep(model: FlowMap, prep, cfg: TrainConfig) -> dict | None:
    """The multi-step validation score (None without validation bursts)."""
    from ..model.score import kstep_score

    if prep.val_bursts is None:
        return None
    x, lengths = prep.val_bursts
    first = cfg.skip_first + model.memory  # the first observation a window may end at
    if int(lengths.max()) - first < 2:
        return None
    score = kstep_score(model, x, lengths, seed=cfg.seed, first=first)
    score.pop("per_start")  # an array: the history holds plain numbers (weights-only files)
    return score


def check_outcome(history: dict, cfg: TrainConfig) -> None:
    """Training that did not work is never reported as success.

    No finite validation NLL at all (and not interrupted): :class:`TrainingError`. No
    improvement on the initial model, or a cosine learning rate that never reached its
    peak (warm-up unfinished): a RuntimeWarning that says so.
    """
    if history["stop_reason"].startswith("interrupted"):
        return
    init, best = history.get("initial_val_nll"), history["best_val_nll"]
    if history.get("kept_initial"):  # no epoch beat the closed-form start: it is the model
        history["stop_reason"] += "; no epoch improved on the starting model, kept it"
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


def meta_of(model, prep, cfg, preset_name, device, dctx) -> dict:
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
