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

__version__ = "0.1.0"

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
__all__ = sorted([*_API, "__version__"])


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'slowflow' has no attribute {name!r}")
