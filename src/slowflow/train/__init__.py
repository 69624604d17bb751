"""Training: ``fit(data, ...) -> FlowMap``.

The closed-form stages (basis drift and covariance) come first; a model with weights is
then trained by maximum likelihood on consecutive pairs (or windows): the mean negative
log-likelihood ``-model(x_n).log_prob(x_{n+1})`` over mini-batches (paper eq. (16), batch
mean), Adam, a learning-rate schedule, gradient clipping, validation NLL every epoch on
held-out *trajectories*, the best weights kept, early stopping, a NaN guard, a wall-clock
budget, Ctrl-C handling and resumable checkpoints.

Modules: :mod:`~slowflow.train.config` (TrainConfig), :mod:`~slowflow.train.schedule`,
:mod:`~slowflow.train.prepare` (data -> windows, statistics, validation sets),
:mod:`~slowflow.train.batches`, :mod:`~slowflow.train.distributed` (torchrun),
:mod:`~slowflow.train.closed_form`, :mod:`~slowflow.train.checkpoint`,
:mod:`~slowflow.train.results` (scores, outcome checks) and :mod:`~slowflow.train.loop`
(``fit``, ``train``).
"""

from __future__ import annotations

from .checkpoint import CHECKPOINT_FORMAT, load_checkpoint
from .config import SCHEDULES, TrainConfig, resolve_device
from .loop import fit, train
from .results import evaluate_nll
from .schedule import Schedule

__all__ = [
    "CHECKPOINT_FORMAT",
    "SCHEDULES",
    "Schedule",
    "TrainConfig",
    "evaluate_nll",
    "fit",
    "train",
    "load_checkpoint",
    "resolve_device",
]
