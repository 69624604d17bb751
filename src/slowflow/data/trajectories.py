"""The container of trajectory data: :class:`Trajectories` ``(n_traj, n_obs, d)``, ragged
trajectories padded with NaN, and the checks every reader shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DataError, check_dt, one_line

NAN_HINT = "trajectories must be finite (pad ragged trajectories only with trailing NaN)"


def as_numeric(a: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{where} cannot be converted to a numeric array ({one_line(exc)}); "
            "use Trajectories.from_list for trajectories of different lengths"
        ) from None
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{where} has dtype {arr.dtype}; expected a numeric (float) array")
    return arr


def to_3d(arr: np.ndarray, where: str) -> np.ndarray:
    """Reshape ``(n_obs,)`` / ``(n_obs, d)`` / ``(n_traj, n_obs, d)`` to 3-D float64."""
    if arr.ndim == 1:
        arr = arr[None, :, None]
    elif arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise DataError(
            f"{where} has {arr.ndim} dimensions (shape {arr.shape}); "
            "expected (n_traj, n_obs, d), (n_obs, d) or (n_obs,)"
        )
    return np.ascontiguousarray(arr, dtype=np.float64)


def validate_x(x: np.ndarray, where: str) -> np.ndarray:
    """Check a 3-D float array; return the valid length of every trajectory."""
    n, n_obs, d = x.shape
    if n == 0:
        raise DataError(f"{where} contains 0 trajectories (shape {x.shape}); expected at least 1")
    if d == 0:
        raise DataError(f"{where} has 0 variables (shape {x.shape}); expected d >= 1")
    if n_obs < 2:
        raise DataError(
            f"{where} has {n_obs} observation(s) per trajectory (shape {x.shape}); "
            "each trajectory needs at least 2"
        )
    inf = np.isinf(x)
    if inf.any():
        i, k, j = np.argwhere(inf)[0]
        raise DataError(
            f"{where} has an infinite value at trajectory {i}, observation {k}, variable {j}; "
            "trajectories must be finite"
        )
    nan = np.isnan(x)
    trailing = np.cumprod(nan.all(axis=2)[:, ::-1], axis=1).sum(axis=1)
    lengths = (n_obs - trailing).astype(np.int64)
    bad = nan.any(axis=2) & (np.arange(n_obs) < lengths[:, None])
    if bad.any():
        i, k = np.argwhere(bad)[0]
        raise DataError(f"{where} has a NaN at trajectory {i}, observation {k}; {NAN_HINT}")
    short = np.flatnonzero(lengths < 2)
    if short.size:
        i = short[0]
        raise DataError(
            f"{where} has only {lengths[i]} valid observation(s) in trajectory {i} "
            "(the rest is NaN padding); each trajectory needs at least 2"
        )
    return lengths


def check_names(names: Any, d: int, where: str) -> tuple[str, ...]:
    if names is None or (not isinstance(names, str) and len(names) == 0):
        return tuple(f"x{j + 1}" for j in range(d))
    if not isinstance(names, str):
        names = tuple(str(s) if isinstance(s, str) else s for s in names)  # np.str_ -> str
    if isinstance(names, str) or not all(isinstance(s, str) for s in names):
        raise DataError(f"{where} must be a sequence of {d} strings, found {names!r}")
    if len(names) != d:
        raise DataError(f"{where} has {len(names)} entries {names!r} but the data has d={d}")
    if any(not s for s in names) or len(set(names)) != d:
        raise DataError(f"{where} must be {d} distinct non-empty strings, found {names!r}")
    return names


@dataclass(frozen=True)
class Trajectories:
    """A set of equally sampled trajectories of ``d`` slow variables.

    Parameters
    ----------
    x : numpy.ndarray, shape (n_traj, n_obs, d)
        Observations, converted to C-contiguous float64 (not copied when it already is).
        Ragged trajectories are padded with trailing rows that are entirely NaN: trajectory
        ``i`` is ``x[i, :lengths[i]]``. NaN elsewhere and inf anywhere are errors; every
        trajectory needs at least 2 valid observations.
    dt : float
        Observation step Delta (finite, > 0).
    names : tuple of str, length d
        Variable names; empty (the default) means ``("x1", ..., "xd")``.
    meta : dict
        Free-form provenance (system, seed, command, version...); ignored by ``==``.

    Raises
    ------
    DataError
        If any of the above does not hold.
    """

    x: np.ndarray
    dt: float
    names: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        x = as_numeric(self.x, "Trajectories: x")
        if x.ndim != 3:
            raise DataError(
                f"Trajectories: x has {x.ndim} dimension(s) (shape {x.shape}); expected 3 "
                "(n_traj, n_obs, d); use Trajectories.from_list for single or ragged trajectories"
            )
        x = np.ascontiguousarray(x, dtype=np.float64)
        lengths = validate_x(x, "Trajectories: x")
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise DataError(f"Trajectories: meta must be a dict, found {type(meta).__name__}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "dt", check_dt(self.dt, "Trajectories: dt"))
        object.__setattr__(
            self, "names", check_names(self.names, x.shape[2], "Trajectories: names")
        )
        object.__setattr__(self, "meta", dict(meta))
        object.__setattr__(self, "_lengths", lengths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trajectories):
            return NotImplemented
        return (
            self.dt == other.dt
            and self.names == other.names
            and self.x.shape == other.x.shape
            and bool(np.array_equal(self.x, other.x, equal_nan=True))
        )

    def __hash__(self) -> int:
        return hash((self.x.shape, self.dt, self.names))

    def __repr__(self) -> str:
        return (
            f"Trajectories(n_traj={self.n_traj}, n_obs={self.n_obs}, dim={self.dim}, "
            f"dt={self.dt!r}, names={self.names!r}, ragged={self.is_ragged})"
        )

    @property
    def n_traj(self) -> int:
        """Number of trajectories."""
        return self.x.shape[0]

    @property
    def n_obs(self) -> int:
        """Observations per trajectory including padding (the longest length)."""
        return self.x.shape[1]

    @property
    def dim(self) -> int:
        """Number ``d`` of slow variables."""
        return self.x.shape[2]

    @property
    def lengths(self) -> np.ndarray:
        """Valid observations per trajectory, int array of shape (n_traj,)."""
        return self._lengths.copy()  # type: ignore[attr-defined]

    @property
    def is_ragged(self) -> bool:
        """Whether any trajectory is shorter than ``n_obs`` (i.e. there is NaN padding)."""
        return bool(np.any(self._lengths < self.n_obs))  # type: ignore[attr-defined]

    def trajectories(self) -> list[np.ndarray]:
        """Trajectories without padding: a list of views of shape (L_i, d)."""
        return [self.x[i, :n] for i, n in enumerate(self._lengths)]  # type: ignore[attr-defined]

    def times(self) -> np.ndarray:
        """Observation times ``dt * arange(n_obs)``, shape (n_obs,)."""
        return self.dt * np.arange(self.n_obs, dtype=np.float64)

    @classmethod
    def from_list(
        cls,
        trajs: Sequence[Any],
        dt: float,
        names: Sequence[str] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Trajectories:
        """Build from a list of arrays of shape (L_i, d) or (L_i,), padding with NaN.

        Each array must be finite with ``L_i >= 2``; all must share ``d``.
        """
        if len(trajs) == 0:
            raise DataError("Trajectories.from_list: got 0 trajectories; expected at least 1")
        arrays = []
        for i, t in enumerate(trajs):
            where = f"Trajectories.from_list: trajectory {i}"
            a = as_numeric(t, where)
            if a.ndim not in (1, 2):
                raise DataError(f"{where} has shape {a.shape}; expected (L, d) or (L,)")
            a = a.reshape(len(a), -1) if a.ndim == 2 else a[:, None]
            if arrays and a.shape[1] != arrays[0].shape[1]:
                raise DataError(
                    f"{where} has d={a.shape[1]} but trajectory 0 has d={arrays[0].shape[1]}"
                )
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1))
            if bad.size:
                raise DataError(
                    f"{where} has a non-finite value at observation {bad[0]}; {NAN_HINT}"
                )
            if len(a) < 2:
                raise DataError(
                    f"{where} has {len(a)} observation(s); each trajectory needs at least 2"
                )
            arrays.append(a)
        x = np.full((len(arrays), max(len(a) for a in arrays), arrays[0].shape[1]), np.nan)
        for i, a in enumerate(arrays):
            x[i, : len(a)] = a
        return cls(x, dt, () if names is None else tuple(names), dict(meta or {}))

    def subset(self, idx: Any) -> Trajectories:
        """Trajectories selected by an index array (or boolean mask) along axis 0.

        Trailing observation columns that are padding for every selected trajectory are trimmed.
        """
        idx = np.asarray(idx)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.reshape(-1).astype(np.intp)
        if idx.size == 0:
            raise DataError("Trajectories.subset: empty selection; expected at least 1 trajectory")
        n_obs = int(self._lengths[idx].max())  # type: ignore[attr-defined]
        return Trajectories(self.x[idx, :n_obs], self.dt, self.names, dict(self.meta))
