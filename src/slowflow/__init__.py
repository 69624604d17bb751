"""slowflow: learn the slow dynamics of multiscale stochastic systems from data.

The public API (imported lazily, so ``import slowflow`` stays fast):

* data: :class:`Trajectories`, :func:`load_trajectories`, :func:`save_trajectories`,
  :func:`make_pairs`, :func:`make_windows`, :func:`split_by_trajectory`; files larger than memory:
  :class:`TrajectoryStore` (memory-mapped reading), :class:`TrajectoryWriter`
* systems and ground truth: :func:`get_system`, :func:`list_systems`,
  :func:`simulate_bursts`, :func:`simulate_ensemble`
* the learned map: :class:`ModelConfig`, :func:`get_preset`, :class:`TrainConfig`,
  :func:`fit`, :func:`fit_memory_auto`, :func:`predict`, :func:`drift_diffusion`,
  :func:`save_model`, :func:`load_model`
* evaluation: :func:`check_calibration`, :func:`reproduce`
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what IDEs and type checkers see; at run time the names load lazily
    from .data import (
        Trajectories,
        declare_periodic,
        load_trajectories,
        make_pairs,
        make_windows,
        save_trajectories,
        split_by_trajectory,
    )
    from .data.store import TrajectoryStore, TrajectoryWriter
    from .evaluate.calibration import check_calibration
    from .model.config import PRESETS, ModelConfig, get_preset
    from .model.flowmap import FlowMap
    from .model.io import load_model, save_model
    from .reproduce import reproduce
    from .rollout import drift_diffusion, predict
    from .simulate import simulate_bursts, simulate_ensemble
    from .systems import System, get_system, list_systems
    from .train import TrainConfig, fit
    from .train.memory import fit_memory_auto

_API = {
    "Trajectories": "slowflow.data",
    "load_trajectories": "slowflow.data",
    "save_trajectories": "slowflow.data",
    "make_pairs": "slowflow.data",
    "split_by_trajectory": "slowflow.data",
    "TrajectoryStore": "slowflow.data.store",
    "TrajectoryWriter": "slowflow.data.store",
    "get_system": "slowflow.systems",
    "list_systems": "slowflow.systems",
    "System": "slowflow.systems",
    "simulate_bursts": "slowflow.simulate",
    "simulate_ensemble": "slowflow.simulate",
    "ModelConfig": "slowflow.model.config",
    "get_preset": "slowflow.model.config",
    "PRESETS": "slowflow.model.config",
    "FlowMap": "slowflow.model.flowmap",
    "TrainConfig": "slowflow.train",
    "fit": "slowflow.train",
    "fit_memory_auto": "slowflow.train.memory",
    "make_windows": "slowflow.data",
    "declare_periodic": "slowflow.data",
    "drift_diffusion": "slowflow.rollout",
    "predict": "slowflow.rollout",
    "save_model": "slowflow.model.io",
    "load_model": "slowflow.model.io",
    "check_calibration": "slowflow.evaluate.calibration",
    "reproduce": "slowflow.reproduce",
}
__all__ = [
    "FlowMap",
    "ModelConfig",
    "PRESETS",
    "System",
    "TrainConfig",
    "Trajectories",
    "TrajectoryStore",
    "TrajectoryWriter",
    "__version__",
    "check_calibration",
    "declare_periodic",
    "drift_diffusion",
    "fit",
    "fit_memory_auto",
    "get_preset",
    "get_system",
    "list_systems",
    "load_model",
    "load_trajectories",
    "make_pairs",
    "make_windows",
    "predict",
    "reproduce",
    "save_model",
    "save_trajectories",
    "simulate_bursts",
    "simulate_ensemble",
    "split_by_trajectory",
]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slowflow' has no attribute {name!r}")
