"""Model files: one ``torch.save`` file of plain tensors, numbers, strings, lists and dicts.

Loading uses ``torch.load(..., weights_only=True)``, which never unpickles arbitrary
objects: a file that would run code, a truncated or corrupted file, or a file that is not a
slowflow model is refused with a one-line :class:`~slowflow.errors.ModelFileError`.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .. import __version__
from ..errors import ConfigError, ModelFileError
from ..io.atomic import atomic_write
from .config import ModelConfig
from .flowmap import FlowMap

FORMAT = "slowflow-model"
FORMAT_VERSION = 2
#: Format 1 files of closed-form maps with memory carried it in the drift's inputs (the
#: window's increments); format 2 carries it in the noise (:mod:`.residual_ar`).
_NOISE_MEMORY_SINCE = 2


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
    from ..io.jsonable import json_default

    return json.loads(json.dumps(obj, default=json_default))


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
    from ..io.limits import check_archive

    try:
        check_archive(path, f"{path}: the unpacked model file")
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from None
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


def min_parameters(config: ModelConfig, dim: int) -> int:
    """A lower bound on the number of weights of ``FlowMap(dim, config)``: the products of
    consecutive hidden widths of every conditioner (and of the affine network), plus their
    last layer's outputs. Used to refuse a config that does not match the weights stored
    with it before building (and allocating) the modules it asks for."""

    def mlp(widths) -> int:
        w = list(widths)
        return sum(a * b for a, b in zip(w, w[1:])) + (w[-1] if w else 1) * dim

    n = 0
    if config.flow != "gaussian":
        per = mlp(config.hidden)
        if config.flow == "nsf":
            per += (config.hidden[-1] if config.hidden else 1) * config.bins
        n += config.transforms * per
    if config.parametrization == "increment" and not config.uses_basis_scale:
        n += mlp(config.affine_hidden)
    return n


def _check_payload(path: Path, payload: dict) -> ModelConfig:
    """Check a model file's fields against each other before anything is built."""
    from ..io.limits import check_memory

    dim, dt = payload["dim"], payload["dt"]
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 100_000:
        raise ModelFileError(f"{path}: field 'dim' must be an integer >= 1, found {dim!r}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (0 < dt < math.inf):
        raise ModelFileError(f"{path}: field 'dt' must be a finite number > 0, found {dt!r}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: field 'state_dict' must map names to tensors")
    x_mean = state.get("x_mean")
    if x_mean is None or tuple(x_mean.shape) != (dim,):
        raise ModelFileError(
            f"{path}: weights do not match dim={dim} (x_mean has shape "
            f"{None if x_mean is None else tuple(x_mean.shape)})"
        )
    try:
        config = ModelConfig.from_dict(dict(payload["config"]))
    except (ConfigError, TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{path}: invalid model config: {_first(exc)}") from None
    if (
        payload["format_version"] < _NOISE_MEMORY_SINCE
        and config.memory > 0
        and config.uses_basis_scale
    ):
        raise ModelFileError(
            f"{path}: this closed-form map with memory {config.memory} was written by an "
            "earlier slowflow (format 1, memory in the drift's inputs); fit it again"
        )
    stored = sum(int(v.numel()) for v in state.values())
    need = min_parameters(config, dim)
    if need > stored:
        raise ModelFileError(
            f"{path}: model file does not match its config: the config (flow {config.flow}, "
            f"{config.transforms} transforms, hidden {list(config.hidden)}, affine_hidden "
            f"{list(config.affine_hidden)}) needs at least {need} weights but the file holds "
            f"{stored}"
        )
    try:
        check_memory(4.0 * 4 * stored, f"{path}: the model")
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from None
    names = (
        (payload.get("meta") or {}).get("names") if isinstance(payload.get("meta"), dict) else None
    )
    if names is not None and (
        not isinstance(names, list)
        or len(names) != dim
        or not all(isinstance(n, str) for n in names)
    ):
        raise ModelFileError(f"{path}: meta 'names' must be {dim} strings, found {names!r}")
    return config


def _first(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> FlowMap:
    """Load a model written by :func:`save_model` (safely, without unpickling code).

    The file's fields are checked against each other (dim, dt > 0, the weights' count and
    shapes against the config, variable names) before the model's modules are built."""
    path = Path(path)
    payload = _read(path)
    config = _check_payload(path, payload)
    try:
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
