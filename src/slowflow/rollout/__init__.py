"""Ensembles from the learned map, and the drift and diffusion read off it.

* :mod:`~slowflow.rollout.starts`: starts and histories (:func:`check_x0`,
  :func:`draw_histories`, :func:`histories_from_file`);
* :mod:`~slowflow.rollout.engine`: the rollout (:func:`predict`), chunk by chunk;
* :mod:`~slowflow.rollout.files`: ensembles streamed to ``.npy`` (with a sidecar), ``.npz``
  and ``.csv`` files (:func:`predict_to_file`, :func:`predict_to_trajectories_file`);
* :mod:`~slowflow.rollout.drift`: :func:`drift_diffusion` and the data's binned statistics.

The verbs: the learned map *predicts* (``predict*``); the built-in systems' ground truth
is *simulated* (:mod:`slowflow.simulate`). The old names ``simulate``,
``simulate_to_file`` and ``simulate_to_trajectories_file`` of this module still work for
this release, with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import functools
import warnings

from ..io.sidecar import SIDECAR_SUFFIX
from .drift import (
    DriftDiffusion,
    binned_increment_stats,
    d_mem,
    data_drift_diffusion,
    drift_diffusion,
)
from .engine import RolloutSummary, predict
from .files import CSV_LIMIT_BYTES, predict_to_file, predict_to_trajectories_file
from .starts import check_x0, draw_histories, histories_from_file

__all__ = [
    "CSV_LIMIT_BYTES",
    "SIDECAR_SUFFIX",
    "DriftDiffusion",
    "RolloutSummary",
    "binned_increment_stats",
    "check_x0",
    "d_mem",
    "data_drift_diffusion",
    "draw_histories",
    "drift_diffusion",
    "histories_from_file",
    "predict",
    "predict_to_file",
    "predict_to_trajectories_file",
]


def _renamed(new, old: str):
    @functools.wraps(new)
    def alias(*args, **kwargs):
        warnings.warn(
            f"slowflow.rollout.{old} is now {new.__name__} (the learned map predicts; "
            "'simulate' is the ground truth of the built-in systems); the old name goes "
            "in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    return alias


simulate = _renamed(predict, "simulate")
simulate_to_file = _renamed(predict_to_file, "simulate_to_file")
simulate_to_trajectories_file = _renamed(
    predict_to_trajectories_file, "simulate_to_trajectories_file"
)
