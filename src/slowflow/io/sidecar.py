"""The sidecar of an ``.npy`` ensemble, written and read in one place.

An ``.npy`` file holds an array and nothing else; ``slowflow predict --out big.npy`` writes
the observation step, the variable names and the provenance next to it, in
``big.npy.json``. :func:`write_sidecar` writes it (after the array is in place) and
:func:`read_sidecar` reads it back for :func:`slowflow.load_trajectories` and
``slowflow evaluate``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import DataError, check_dt, one_line
from .jsonable import json_default

#: Suffix of the JSON file written next to an ``.npy`` ensemble (``big.npy`` -> ``big.npy.json``).
SIDECAR_SUFFIX = ".json"
#: The ``format`` key of a sidecar.
SIDECAR_FORMAT = "slowflow-npy-sidecar"


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar of the ``.npy`` file ``path`` lives."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def sidecar_info(shape, dtype: str, dt: float, names, meta: dict) -> dict:
    """The sidecar's content for an array ``shape`` of ``dtype`` observed every ``dt``."""
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "shape": [int(v) for v in shape],
        "dtype": str(dtype),
        "dt": float(dt),
        "names": list(names),
        "meta": dict(meta),
    }


def write_sidecar(path: str | Path, info: dict) -> None:
    """Write ``info`` (from :func:`sidecar_info`) as JSON to ``path`` (a temporary name of
    the sidecar when the write must be atomic)."""
    Path(path).write_text(json.dumps(info, indent=1, default=json_default) + "\n")


def read_sidecar(path: str | Path, shape: tuple, dt: float | None = None) -> dict | None:
    """The JSON file ``<file>.npy.json`` next to an ``.npy`` array, if there is one.

    ``slowflow predict --out big.npy`` (:func:`slowflow.rollout.predict_to_file`) writes it
    (:func:`write_sidecar`) with keys ``dt``, ``shape``, ``names`` and ``meta``. Returns those keys (``dt`` checked
    against a given ``dt``, ``shape`` against the array's), or None without a sidecar.
    """
    p = Path(path)
    side = sidecar_path(p)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{side}: cannot read this sidecar of {p.name} ({one_line(exc)})") from None
    if not isinstance(info, dict) or "dt" not in info:
        raise DataError(f"{side}: expected a JSON object with key 'dt' (the sidecar of {p.name})")
    described = info.get("shape", list(shape))
    if not isinstance(described, list) or described != list(shape):
        raise DataError(
            f"{side}: describes shape {described} but {p.name} holds {tuple(shape)}; "
            "remove the outdated sidecar and pass dt (CLI: --dt)"
        )
    file_dt = check_dt(info["dt"], f"{side}: key 'dt'")
    if dt is not None and not math.isclose(file_dt, dt, rel_tol=1e-9):
        raise DataError(
            f"{side}: key 'dt' is {file_dt!r} but dt={dt!r} was given (CLI: --dt); they must agree"
        )
    meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
    return {"dt": file_dt, "shape": tuple(shape), "names": info.get("names") or (), "meta": meta}
