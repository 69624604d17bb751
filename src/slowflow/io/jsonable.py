"""JSON for everything slowflow writes: :func:`to_jsonable` for results (numpy arrays and
scalars become lists and numbers, NaN and inf become ``null``, so the files are strict
JSON), :func:`json_default` for free-form metadata (``json.dumps(meta, default=...)``:
numpy values become numbers and lists, anything else its ``str``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` recursively into values that :func:`json.dumps` accepts.

    Parameters
    ----------
    obj : any
        Nested dicts / lists / tuples of numpy arrays, numpy scalars and Python values.

    Returns
    -------
    any
        The same structure with numpy arrays turned into (nested) lists, numpy scalars into
        Python scalars, tuples into lists, mapping keys into strings, and non-finite floats
        (NaN, +-inf, which strict JSON cannot represent) into ``None``.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, complex):
        raise TypeError(f"complex value {obj!r} cannot be converted to JSON")
    return obj


def json_default(obj: Any) -> Any:
    """The ``default=`` of ``json.dumps`` for metadata: numpy scalars and arrays as numbers
    and lists, any other object as its string (a path, a dtype)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
