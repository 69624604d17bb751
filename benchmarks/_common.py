"""Shared helpers of the benchmark scripts: machine facts, JSON output, system names."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent, check=False
        ).stdout.strip()
    except OSError:
        return ""


# The code a benchmark runs is the one at its start (the commit may move while it runs):
# recorded on import, with "+changes" when the package's sources differed from it.
START_COMMIT = _git("rev-parse", "--short", "HEAD") + (
    "+changes" if _git("status", "--porcelain", "--", "../src") else ""
)


def machine() -> dict:
    import numba
    import numpy
    import torch

    import slowflow

    commit = START_COMMIT
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": commit,
        "slowflow": slowflow.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def write_json(name: str, payload: dict, out_dir: str | os.PathLike | None = None) -> Path:
    out = Path(out_dir) if out_dir else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def benchmark_system(name: str):
    """A built-in system by name or alias; ``ringN`` is the ring system with ell = N slow and
    10 N fast variables."""
    from slowflow.systems import get_system
    from slowflow.systems.ring import make_ring

    if name.startswith("ring") and name[4:].isdigit():
        ell = int(name[4:])
        return make_ring(ell, 10 * ell)
    return get_system(name)
