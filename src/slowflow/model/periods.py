"""A model's periodic variables (angles) against those of data it is used with.

A model stores which variables are angles and their ranges; data passed to it later
(held-out bursts, histories) must declare the same, or declare none and take the model's.
"""

from __future__ import annotations

from ..data import Trajectories, declare_periodic, periodic_ranges
from ..errors import DataError


def check_model_periods(model, periods, source: str) -> None:
    """Refuse data whose periodic variables (``periods``: (lo, hi) or None per variable)
    differ from the model's, in one line naming what differs."""
    mine = set(getattr(model, "periodic", ()))
    theirs = {j for j, r in enumerate(periods) if r is not None}
    if mine != theirs:
        raise DataError(
            f"{source}: periodic variables {sorted(theirs)} (indices) but the model was fitted "
            f"with {sorted(mine)}; declare the same ones"
        )
    for j in mine:
        lo, length = float(model.period_lo[j]), float(model.period_len[j])
        r = periods[j]
        if abs(r[0] - lo) > 1e-6 * length or abs((r[1] - r[0]) - length) > 1e-6 * length:
            raise DataError(
                f"{source}: variable {j} is periodic on [{r[0]:g}, {r[1]:g}] but the model's "
                f"range is [{lo:g}, {lo + length:g}]"
            )


def with_model_periods(data: Trajectories, model, source: str) -> Trajectories:
    """``data`` with the model's periodic variables when the data declare none (their
    values are checked against the model's ranges), checked against the model's."""
    periods = periodic_ranges(data)
    if getattr(model, "periodic", ()) and all(r is None for r in periods):
        for j in model.periodic:
            lo, length = float(model.period_lo[j]), float(model.period_len[j])
            data = declare_periodic(data, [j], source, (lo, lo + length))
        periods = periodic_ranges(data)
    check_model_periods(model, periods, source)
    return data
