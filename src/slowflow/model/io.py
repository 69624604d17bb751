"""Model files: one ``torch.save`` file of plain tensors, numbers, strings, lists and dicts.

Loading uses ``torch.load(..., weights_only=True)``, which never unpickles arbitrary
objects: a file that would run code, a truncated or corrupted file, or a file that is not a
slowflow model is refused with a one-line :class:`~slowflow.errors.ModelFileError`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .. import __version__
from .._io import atomic_write
from ..errors import ModelFileError
from .config import ModelConfig
from .flowmap import FlowMap

FORMAT = "slowflow-model"
FORMAT_VERSION = 1


def model_payload(model: FlowMap, meta: dict | None = None) -> dict:
    """Everything needed to rebuild ``model``, as weights-only-loadable objects."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "slowflow_version": __version__,
        "dim": int(model.dim),
        "dt": float(model.dt),
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "history": getattr(model, "history", {}) or {},
        "meta": meta or getattr(model, "meta", {}) or {},
    }


def save_model(model: FlowMap, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model`` (weights, config, standardization, Delta, d, version, history)."""
    path = Path(path)
    payload = model_payload(model, meta)
    with atomic_write(path) as tmp:
        torch.save(payload, tmp)
    return path


def _read(path: Path) -> dict:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a slowflow model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, expected a slowflow model file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: refused to load: the file holds objects other than weights and plain data "
            f"({first[:120]}); slowflow never unpickles arbitrary objects"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(
            f"{path}: not a readable slowflow model file (truncated or corrupted?): {first}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a slowflow model file (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version!r} is newer than this slowflow "
            f"({__version__}, format {FORMAT_VERSION}); upgrade slowflow"
        )
    for key in ("dim", "dt", "config", "state_dict"):
        if key not in payload:
            raise ModelFileError(f"{path}: model file lacks field '{key}'")
    return payload


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> FlowMap:
    """Load a model written by :func:`save_model` (safely, without unpickling code)."""
    path = Path(path)
    payload = _read(path)
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
        model = FlowMap(int(payload["dim"]), config, float(payload["dt"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any mismatch means the file is unusable
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: model file does not match its config: {msg}") from None
    model.history = payload.get("history", {})
    model.meta = payload.get("meta", {})
    model.meta.setdefault("slowflow_version", payload.get("slowflow_version"))
    model.eval()
    return model.to(device)
