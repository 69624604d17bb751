"""The learned one-step map.

* :mod:`.config`: :class:`ModelConfig` and the named presets;
* :mod:`.flowmap`: the :class:`FlowMap` module (a ``torch`` Distribution per condition);
* :mod:`.basis`, :mod:`.covariance`: the closed-form drift and covariance on a Legendre basis;
* :mod:`.score`: multi-step scores on held-out bursts, and the one sampling helper;
* :mod:`.periods`: a model's periodic variables against those of data;
* :mod:`.io`: model files (saved and loaded without unpickling).
"""

from __future__ import annotations

from .config import DEFAULT_PRESET, PRESETS, ModelConfig, get_preset
from .flowmap import FlowMap, build_model
from .io import load_model, save_model

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "FlowMap",
    "ModelConfig",
    "build_model",
    "get_preset",
    "load_model",
    "save_model",
]
