"""Model files: one ``torch.save`` file of plain tensors, numbers, strings, lists and dicts.

Loading uses ``torch.load(..., weights_only=True)``, which never unpickles arbitrary
objects: a file that would run code, a truncated or corrupted file, or a file that is not a
slowflow model is refused with a one-line :class:`~slowflow.errors.ModelFileError`.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import warnings
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
        "history": _plain(getattr(model, "history", {}) or {}),
        "meta": _plain(meta or getattr(model, "meta", {}) or {}),
    }


def _plain(obj):
    """JSON-native copy (numpy scalars and arrays become numbers and lists), so that the
    file loads with ``weights_only=True``."""
    from ..data import _json_default

    return json.loads(json.dumps(obj, default=_json_default))


def save_model(model: FlowMap, path: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model`` (weights, config, standardization, Delta, d, version, history)."""
    path = Path(path)
    payload = model_payload(model, meta)
    buffer = io.BytesIO()  # in memory, so the archive's inner name does not depend on the path
    torch.save(payload, buffer)
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return path


def _read(path: Path) -> dict:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, expected a slowflow model file")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: empty file, expected a slowflow model file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes about pickle protocols
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*\n\s*\n", text, re.S)
        with open(path, "rb") as fh:
            head = fh.read(2)
        if found:
            raise ModelFileError(
                f"{path}: refused to load: the file asks to import {found.group(1)}, which a "
                "model file never needs; slowflow never unpickles arbitrary objects"
            ) from None
        if head[:1] == b"\x80" or head == b"PK":
            reason = " ".join(detail.group(1).split())[:80] if detail else "unsupported content"
            raise ModelFileError(
                f"{path}: refused to load: a pickle that is not plain weights and data "
                f"({reason}); slowflow never unpickles arbitrary objects"
            ) from None
        raise ModelFileError(
            f"{path}: not a slowflow model file (corrupted or another format)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError):
        hint = ""
        if path.suffix.lower() in (".npz", ".npy", ".csv", ".mat"):
            hint = "; it looks like a trajectory data file: pass a model written by 'slowflow fit'"
        raise ModelFileError(
            f"{path}: not a readable slowflow model file (truncated, corrupted or another "
            f"format){hint}"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a slowflow model file (no '{FORMAT}' format marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"{path}: model file has a missing or invalid format_version {version!r}"
        )
    if version > FORMAT_VERSION:
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
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ModelFileError(f"{path}: model file does not match its config: {msg}") from None
    model.history = payload.get("history", {})
    model.meta = payload.get("meta", {})
    model.meta.setdefault("slowflow_version", payload.get("slowflow_version"))
    model.eval()
    return model.to(device)
