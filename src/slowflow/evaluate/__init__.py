"""How good is a model? Metrics, calibration, reports and figures.

* :mod:`.arrays`, :mod:`.marginal`, :mod:`.joint`, :mod:`.temporal`, :mod:`.scoring`,
  :mod:`.streaming`: the metrics, one concept per module (:mod:`.metrics` gathers them);
* :mod:`.calibration`: the kernel checked on held-out data (``slowflow check``);
* :mod:`.report`: all ensemble metrics at once and their JSON;
* :mod:`.files`: ``evaluate`` and ``check`` on files, written as folders;
* :mod:`.plots`: the figures (``matplotlib.figure.Figure`` objects, no global state).

Names are imported on first use, so importing a metric does not import matplotlib.
"""

from __future__ import annotations

import importlib

_API = {
    "check_calibration": "calibration",
    "evaluate_ensembles": "report",
    "evaluate_files": "files",
    "check_files": "files",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
