"""Periodic variables (angles): their declaration in ``meta["periodic"]``, checks, wrapping."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigError, DataError
from .trajectories import Trajectories

#: ``meta`` key of the periodic variables: {name: [lo, hi]}, each value in [lo, hi).
PERIODIC = "periodic"


def periodic_ranges(data: Trajectories) -> list[tuple[float, float] | None]:
    """Per variable, the range (lo, hi) of a periodic variable (an angle: lo and hi are the
    same point), or None; read from ``data.meta["periodic"]``."""
    spec = data.meta.get(PERIODIC) or {}
    if not isinstance(spec, Mapping):
        raise DataError(f"meta 'periodic' must map variable names to [lo, hi], found {spec!r}")
    unknown = set(spec) - set(data.names)
    if unknown:
        raise DataError(
            f"meta 'periodic' names {sorted(unknown)}, which are not among the variables "
            f"{list(data.names)}"
        )
    out: list[tuple[float, float] | None] = []
    for name in data.names:
        r = spec.get(name)
        if r is None:
            out.append(None)
            continue
        try:
            lo, hi = (float(v) for v in r)
        except (TypeError, ValueError):
            raise DataError(f"meta 'periodic' of {name!r} must be [lo, hi], found {r!r}") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise DataError(f"meta 'periodic' of {name!r} must be finite with lo < hi, found {r!r}")
        out.append((lo, hi))
    return out


def declare_periodic(
    data: Trajectories, which, source: str = "data", value_range=(-math.pi, math.pi)
) -> Trajectories:
    """``data`` with the variables ``which`` (names or 0-based indices) declared periodic
    on ``value_range`` (default (-pi, pi]: angles in radians), after checking that every
    value lies in it (half-open either way, to 1e-9 of the period).

    Raises
    ------
    DataError
        A name or index that is not a variable, or a value outside the range (naming the
        file, the variable, the value and where it is).
    """
    lo, hi = (float(v) for v in value_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ConfigError(f"the periodic range must be finite with lo < hi, got {value_range!r}")
    spec = dict(data.meta.get(PERIODIC) or {})
    for item in which:
        key = str(item).strip()
        if key in data.names:
            name = key
        elif re.fullmatch(r"\d+", key) and int(key) < data.dim:
            name = data.names[int(key)]
        else:
            raise DataError(
                f"{source}: --periodic {key!r} is neither a variable name ({', '.join(data.names)}) "
                f"nor an index 0..{data.dim - 1}"
            )
        spec[name] = [lo, hi]
    out = Trajectories(data.x, data.dt, data.names, {**data.meta, PERIODIC: spec})
    check_periodic(out, source)
    return out


def check_periodic(data: Trajectories, source: str = "data") -> None:
    """Raise :class:`DataError` if a periodic variable has a value outside its range."""
    for j, r in enumerate(periodic_ranges(data)):
        if r is None:
            continue
        lo, hi = r
        tol = 1e-9 * (hi - lo)
        v = data.x[..., j]
        bad = np.argwhere(np.isfinite(v) & ((v < lo - tol) | (v > hi + tol)))
        if bad.size:
            i, k = bad[0]
            raise DataError(
                f"{source}: variable {data.names[j]!r} is declared periodic on [{lo:g}, {hi:g}] "
                f"but holds {v[i, k]:g} (trajectory {i}, observation {k}; {len(bad)} values "
                "outside); give the angles in that range (radians from -pi to pi by default)"
            )


def wrap(x, lo, hi):
    """Values of x mapped into [lo, hi) by whole periods (numpy or torch)."""
    period = hi - lo
    return lo + (x - lo) % period


def wrap_delta(dx, period):
    """Differences of angles mapped into [-period / 2, period / 2) (numpy or torch)."""
    return (dx + 0.5 * period) % period - 0.5 * period
