"""Trajectory data of slow variables: container, file formats, training pairs and splits.

Formats (chosen by the file extension, case-insensitive):

``.npz`` (native)
    Key ``x``: float array ``(n_traj, n_obs, d)``; ``(n_obs, d)`` or ``(n_obs,)`` is one
    trajectory. Key ``dt``: scalar step. Optional ``names`` (string array, length ``d``) and
    ``meta`` (a JSON object string). Read without pickle: object arrays are refused.
``.npy``
    One array shaped like ``x``; ``dt`` must be passed unless a sidecar ``<file>.npy.json``
    (written by ``slowflow predict --out X.npy``) holds it, see :func:`npy_sidecar`.
``.csv``
    Long layout with a header: a trajectory id column (``traj``, ``trajectory`` or ``id``), a
    time column (``t`` or ``time``) and one column per slow variable. Time steps must be
    regular. Trajectory ids (ints or strings) are replaced by their order of first appearance
    and times are re-based to start at 0.
``.mat``
    MATLAB (v7 or older) file in the layout of the original authors' code: variable ``data``
    of shape ``[d, n_obs, n_traj]`` (``[d, n_obs]`` is one trajectory); ``dt`` must be passed.

Ragged trajectories (different lengths) are stored in one array padded with trailing rows of
NaN. Indices in error messages are 0-based.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slowflow._io import atomic_write
from slowflow.errors import ConfigError, DataError
from slowflow.jsonable import json_default

__all__ = [
    "READ_FORMATS",
    "WRITE_FORMATS",
    "Trajectories",
    "check_dim",
    "load_trajectories",
    "make_pairs",
    "save_trajectories",
    "split_by_trajectory",
]

READ_FORMATS = (".npz", ".npy", ".csv", ".mat")
WRITE_FORMATS = (".npz", ".csv")
_TRAJ_COLUMNS = ("traj", "trajectory", "id")
_TIME_COLUMNS = ("t", "time")
_NAN_HINT = "trajectories must be finite (pad ragged trajectories only with trailing NaN)"
_PASS_DT = "pass dt (CLI: --dt)"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _as_numeric(a: Any, where: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{where} cannot be converted to a numeric array ({_one_line(exc)}); "
            "use Trajectories.from_list for trajectories of different lengths"
        ) from None
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{where} has dtype {arr.dtype}; expected a numeric (float) array")
    return arr


def _to_3d(arr: np.ndarray, where: str) -> np.ndarray:
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


def _validate_x(x: np.ndarray, where: str) -> np.ndarray:
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
        raise DataError(f"{where} has a NaN at trajectory {i}, observation {k}; {_NAN_HINT}")
    short = np.flatnonzero(lengths < 2)
    if short.size:
        i = short[0]
        raise DataError(
            f"{where} has only {lengths[i]} valid observation(s) in trajectory {i} "
            "(the rest is NaN padding); each trajectory needs at least 2"
        )
    return lengths


def _check_dt(dt: Any, where: str) -> float:
    if isinstance(dt, np.ndarray) and dt.size == 1:
        dt = dt.reshape(-1)[0]
    if isinstance(dt, (bool, np.bool_)) or not isinstance(dt, numbers.Real):
        raise DataError(f"{where} must be a finite number > 0, found {dt!r}")
    value = float(dt)
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"{where} must be a finite number > 0, found {value!r}")
    return value


def _check_names(names: Any, d: int, where: str) -> tuple[str, ...]:
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
        x = _as_numeric(self.x, "Trajectories: x")
        if x.ndim != 3:
            raise DataError(
                f"Trajectories: x has {x.ndim} dimension(s) (shape {x.shape}); expected 3 "
                "(n_traj, n_obs, d); use Trajectories.from_list for single or ragged trajectories"
            )
        x = np.ascontiguousarray(x, dtype=np.float64)
        lengths = _validate_x(x, "Trajectories: x")
        meta = {} if self.meta is None else self.meta
        if not isinstance(meta, Mapping):
            raise DataError(f"Trajectories: meta must be a dict, found {type(meta).__name__}")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "dt", _check_dt(self.dt, "Trajectories: dt"))
        object.__setattr__(
            self, "names", _check_names(self.names, x.shape[2], "Trajectories: names")
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
            a = _as_numeric(t, where)
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
                    f"{where} has a non-finite value at observation {bad[0]}; {_NAN_HINT}"
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


# ------------------------------------------------------------------------ periodic variables
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


# --------------------------------------------------------------------------------------- I/O


def _check_ext(path: Path, src: str, formats: tuple[str, ...], verb: str) -> str:
    ext = path.suffix.lower()
    if ext not in formats:
        raise DataError(
            f"{src}: cannot {verb} files with extension {ext or '(none)'!r}; "
            f"supported: {', '.join(formats)}"
        )
    return ext


def load_trajectories(path: str | Path, dt: float | None = None) -> Trajectories:
    """Read trajectories from ``.npz``, ``.npy``, ``.csv`` or ``.mat`` (see module docstring).

    Parameters
    ----------
    path : str or pathlib.Path
        File to read; the format is chosen by the extension.
    dt : float, optional
        Observation step. Required for ``.npy`` and ``.mat`` (and for ``.npz`` without a
        ``dt`` key); when the file also has a step, both must agree (relative tolerance 1e-9
        for ``.npz``, 1e-6 for ``.csv``).

    Returns
    -------
    Trajectories
        ``x`` of shape (n_traj, n_obs, d).

    Raises
    ------
    DataError
        One-line message naming the file, the key/column and what was expected vs found.
    """
    p, src = Path(path), str(path)
    ext = _check_ext(p, src, READ_FORMATS, "read")
    if dt is not None:
        dt = _check_dt(dt, f"{src}: dt")
    if not p.exists():
        raise DataError(f"{src}: no such file")
    if p.is_dir():
        raise DataError(f"{src}: is a directory; expected a {ext} file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"{src}: cannot read ({_one_line(exc)})") from None
    if size == 0:
        raise DataError(f"{src}: file is empty (0 bytes); expected {ext} trajectory data")
    reader = {".npz": _load_npz, ".npy": _load_npy, ".csv": _load_csv, ".mat": _load_mat}[ext]
    try:
        return reader(p, src, dt)
    except OSError as exc:
        raise DataError(f"{src}: cannot read ({_one_line(exc)})") from None


def _magic(p: Path, n: int) -> bytes:
    with open(p, "rb") as fh:
        return fh.read(n)


def _declared(fh: Any, src: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype declared by the ``.npy`` header at the position of ``fh``."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError, *_ZIP_ERRORS) as exc:
        raise DataError(f"{src}: not a readable NumPy array header ({_one_line(exc)})") from None
    return tuple(int(v) for v in shape), np.dtype(dtype)


def _check_declared(shape, dtype: np.dtype, have: int, src: str) -> None:
    """Refuse a header that declares more data than the file holds, or than memory takes
    once converted to float64, before anything is allocated."""
    from ._limits import check_memory

    n = math.prod(shape)
    need = n * dtype.itemsize
    if dtype.kind in "iuf" and need > have:
        raise DataError(
            f"{src}: truncated: the header declares shape {shape} ({need} bytes of "
            f"{dtype}) but only {have} bytes follow it"
        )
    try:
        # the array, its float64 copy and the validation's masks
        check_memory(n * (dtype.itemsize + 8 + 2), f"{src}: shape {shape}")
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def _npz_member(z: Any, key: str, src: str) -> np.ndarray:
    try:
        info = z.zip.getinfo(f"{key}.npy")
        with z.zip.open(info) as fh:
            shape, dtype = _declared(fh, f"{src}: key {key!r}")
            header = fh.tell()
        _check_declared(shape, dtype, info.file_size - header, f"{src}: key {key!r}")
    except (KeyError, AttributeError):
        pass  # not a .npy member: numpy reports it below
    except _ZIP_ERRORS as exc:
        raise DataError(
            f"{src}: key {key!r} cannot be read; the archive is truncated or corrupt "
            f"({_one_line(exc)})"
        ) from None
    try:
        return z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{src}: key {key!r} holds Python objects (dtype object), which are refused "
                "because loading them would require unpickling; store a numeric array"
            ) from None
        raise DataError(f"{src}: key {key!r} is corrupt ({_one_line(exc)})") from None
    except _ZIP_ERRORS as exc:
        raise DataError(
            f"{src}: key {key!r} cannot be read; the archive is truncated or corrupt "
            f"({_one_line(exc)})"
        ) from None


# What zipfile and zlib raise on damaged archives (an unknown compression method is a
# NotImplementedError, found by fuzzing).
_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def _load_npz(p: Path, src: str, dt: float | None) -> Trajectories:
    head = _magic(p, 6)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{src}: contains a single .npy array, not an .npz archive; rename it to .npy and {_PASS_DT}, or save with numpy.savez"
        )
    if not head.startswith(b"PK"):
        raise DataError(
            f"{src}: not an .npz archive (no zip signature); expected keys 'x' and 'dt'"
        )
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, *_ZIP_ERRORS) as exc:
        raise DataError(f"{src}: truncated or corrupt .npz archive ({_one_line(exc)})") from None
    with z:
        keys = list(z.files)
        if "x" not in keys:
            found = ", ".join(repr(k) for k in keys) or "none"
            raise DataError(
                f"{src}: missing key 'x' (found keys: {found}); expected 'x' "
                "(trajectories, shape (n_traj, n_obs, d)) and 'dt'"
            )
        where = f"{src}: key 'x'"
        x = _to_3d(_as_numeric(_npz_member(z, "x", src), where), where)
        _validate_x(x, where)
        if "dt" in keys:
            a = _npz_member(z, "dt", src)
            if a.dtype.kind not in "iuf" or a.size != 1:
                raise DataError(
                    f"{src}: key 'dt' must be a single number, found dtype {a.dtype} shape {a.shape}"
                )
            file_dt = _check_dt(float(a.reshape(-1)[0]), f"{src}: key 'dt'")
            if dt is not None and not math.isclose(file_dt, dt, rel_tol=1e-9):
                raise DataError(
                    f"{src}: key 'dt' is {file_dt!r} but dt={dt!r} was given (CLI: --dt); they must agree (relative tolerance 1e-9)"
                )
            dt = file_dt
        elif dt is None:
            raise DataError(
                f"{src}: no key 'dt' (found keys: {', '.join(map(repr, keys))}) and no dt given; {_PASS_DT}"
            )
        names: tuple[str, ...] = ()
        if "names" in keys:
            a = _npz_member(z, "names", src)
            if a.dtype.kind not in "US" or a.ndim != 1:
                raise DataError(
                    f"{src}: key 'names' must be a 1-D string array, found dtype {a.dtype} shape {a.shape}"
                )
            names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in a.tolist())
            names = _check_names(names, x.shape[2], f"{src}: key 'names'")
        meta: dict[str, Any] = {}
        if "meta" in keys:
            a = _npz_member(z, "meta", src)
            if a.dtype.kind not in "US" or a.size != 1:
                raise DataError(
                    f"{src}: key 'meta' must be a JSON string, found dtype {a.dtype} shape {a.shape}"
                )
            text = a.reshape(-1)[0]
            try:
                meta = json.loads(text.decode() if isinstance(text, bytes) else str(text))
            except (ValueError, UnicodeDecodeError) as exc:
                raise DataError(
                    f"{src}: key 'meta' is not valid JSON ({_one_line(exc)}); expected a JSON object"
                ) from None
            if not isinstance(meta, dict):
                raise DataError(
                    f"{src}: key 'meta' must be a JSON object, found {type(meta).__name__}"
                )
    return Trajectories(x, dt, names, meta)


def _load_npy(p: Path, src: str, dt: float | None) -> Trajectories:
    if not _magic(p, 6).startswith(b"\x93NUMPY"):
        raise DataError(
            f"{src}: not a .npy file (no NumPy header); expected one array (n_traj, n_obs, d)"
        )
    with open(p, "rb") as fh:
        shape, dtype = _declared(fh, src)
        offset = fh.tell()
    _check_declared(shape, dtype, p.stat().st_size - offset, src)
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{src}: array holds Python objects (dtype object), which are refused because loading them would require unpickling; store a numeric array"
            ) from None
        raise DataError(f"{src}: truncated or corrupt .npy file ({_one_line(exc)})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{src}: truncated or corrupt .npy file ({_one_line(exc)})") from None
    where = f"{src}: array"
    x = _to_3d(_as_numeric(arr, where), where)
    _validate_x(x, where)
    side = npy_sidecar(p, arr.shape, dt)
    if side is not None:
        dt, names, meta = side["dt"], side["names"], {**side["meta"], "source": src}
        return Trajectories(
            x, dt, _check_names(names, x.shape[2], f"{src}.json: key 'names'"), meta
        )
    if dt is None:
        raise DataError(f"{src}: a .npy file holds no time step; {_PASS_DT}")
    return Trajectories(x, dt, (), {"source": src})


def npy_sidecar(path: str | Path, shape: tuple, dt: float | None = None) -> dict | None:
    """The JSON file ``<file>.npy.json`` next to an ``.npy`` array, if there is one.

    ``slowflow predict --out big.npy`` (:func:`slowflow.rollout.simulate_to_file`) writes it
    with keys ``dt``, ``shape``, ``names`` and ``meta``. Returns those keys (``dt`` checked
    against a given ``dt``, ``shape`` against the array's), or None without a sidecar.
    """
    p = Path(path)
    side = p.with_name(p.name + ".json")
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{side}: cannot read this sidecar of {p.name} ({_one_line(exc)})"
        ) from None
    if not isinstance(info, dict) or "dt" not in info:
        raise DataError(f"{side}: expected a JSON object with key 'dt' (the sidecar of {p.name})")
    described = info.get("shape", list(shape))
    if not isinstance(described, list) or described != list(shape):
        raise DataError(
            f"{side}: describes shape {described} but {p.name} holds {tuple(shape)}; "
            "remove the outdated sidecar and pass dt (CLI: --dt)"
        )
    file_dt = _check_dt(info["dt"], f"{side}: key 'dt'")
    if dt is not None and not math.isclose(file_dt, dt, rel_tol=1e-9):
        raise DataError(
            f"{side}: key 'dt' is {file_dt!r} but dt={dt!r} was given (CLI: --dt); they must agree"
        )
    meta = info.get("meta") if isinstance(info.get("meta"), dict) else {}
    return {"dt": file_dt, "shape": tuple(shape), "names": info.get("names") or (), "meta": meta}


_MAT_CHILD = """
import sys, numpy as np
from scipy.io import loadmat
try:
    contents = loadmat(sys.argv[1])
except NotImplementedError:
    sys.exit(4)
except Exception as exc:
    print(" ".join(str(exc).split())[:200] or type(exc).__name__, file=sys.stderr)
    sys.exit(3)
if "data" in contents:
    try:
        np.save(sys.argv[2], np.asarray(contents["data"], dtype=float), allow_pickle=False)
    except (TypeError, ValueError):
        sys.exit(5)
else:
    print("\\n".join(k for k in contents if not k.startswith("__")))
"""


def _loadmat_isolated(p: Path, src: str) -> dict:
    """Run scipy's MATLAB reader in a child process: on some corrupted files it crashes
    the interpreter (a segmentation fault found by fuzzing), which must not take the
    caller's process, and its work, down with it."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "data.npy"
        # isolated (-I: no current directory or script directory on sys.path, no PYTHON*
        # variables, no user site-packages), run in the empty temporary folder with a
        # minimal environment: a numpy.py or sitecustomize.py next to the data never runs
        env = {k: os.environ[k] for k in ("PATH", "SYSTEMROOT", "LANG") if k in os.environ}
        run = subprocess.run(
            [sys.executable, "-I", "-c", _MAT_CHILD, str(p.absolute()), str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp,
            env=env,
        )
        if run.returncode == 4:
            raise NotImplementedError
        if run.returncode == 3:
            raise DataError(f"{src}: not a readable MATLAB file ({run.stderr.strip()})")
        if run.returncode == 5:
            raise DataError(f"{src}: variable 'data' is not a numeric array")
        if run.returncode != 0:
            raise DataError(
                f"{src}: not a readable MATLAB file (the reader crashed on it; "
                "the file is corrupted or not a MATLAB v5/v7 file)"
            )
        if run.returncode == 0 and not out.exists():
            return {name: None for name in run.stdout.split("\n") if name}
        try:
            return {"data": np.load(out, allow_pickle=False)}
        except ValueError:
            raise DataError(f"{src}: variable 'data' is not a numeric array") from None


def _load_mat(p: Path, src: str, dt: float | None) -> Trajectories:
    from scipy.io.matlab import matfile_version

    v73 = f"{src}: is a MATLAB v7.3 (HDF5) file, which cannot be read; re-save it in MATLAB with save(..., '-v7') or convert it to .npz"
    try:
        if matfile_version(str(p))[0] == 2:
            raise DataError(v73)
        _check_read_size(p, src)
        contents = _loadmat_isolated(p, src)
    except NotImplementedError:
        raise DataError(v73) from None
    except DataError:
        raise
    except Exception as exc:  # scipy raises many types on corrupt input
        raise DataError(f"{src}: not a readable MATLAB file ({_one_line(exc)})") from None
    if "data" not in contents:
        found = ", ".join(repr(k) for k in contents if not k.startswith("__")) or "none"
        raise DataError(
            f"{src}: missing variable 'data' (found: {found}); expected 'data' of shape [d, n_obs, n_traj]"
        )
    where = f"{src}: variable 'data'"
    arr = _as_numeric(contents["data"], where)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{where} has {arr.ndim} dimensions (shape {arr.shape}); expected [d, n_obs, n_traj] or [d, n_obs]"
        )
    x = _to_3d(arr.T if arr.ndim == 3 else arr.T[None], where)
    _validate_x(x, where)
    if dt is None:
        raise DataError(f"{src}: .mat files hold no time step; {_PASS_DT}")
    return Trajectories(x, dt, (), {"source": src})


#: Memory taken while reading a file, per byte of file: a CSV's cells become Python strings
#: and lists (about 60 bytes per cell of a few characters) before they become floats; a
#: MATLAB file is read whole by the child and saved again for this process.
_READ_FACTOR = {".csv": 12, ".mat": 3}


def _check_read_size(p: Path, src: str) -> None:
    from ._limits import check_memory

    size = p.stat().st_size
    try:
        check_memory(size * _READ_FACTOR[p.suffix.lower()], f"{src}: reading this file")
    except ConfigError as exc:
        raise DataError(f"{exc}; convert it to .npz or .npy (read without copies)") from None


def _load_csv(p: Path, src: str, dt: float | None) -> Trajectories:
    _check_read_size(p, src)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            for row in reader:
                if not any(c.strip() for c in row):
                    continue
                if header is None:
                    header = [c.strip() for c in row]
                elif len(row) != len(header):
                    raise DataError(
                        f"{src}: line {reader.line_num} has {len(row)} cells but the header has {len(header)} columns ({', '.join(header)})"
                    )
                else:
                    rows.append(row)
                    lines.append(reader.line_num)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{src}: not UTF-8 text ({exc.reason} at byte {exc.start}); expected a CSV file"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{src}: malformed CSV ({_one_line(exc)})") from None
    if header is None:
        raise DataError(f"{src}: no header row; expected columns traj,t,<variables>")
    low = [h.lower() for h in header]
    cols = {}
    for what, allowed in (("trajectory id", _TRAJ_COLUMNS), ("time", _TIME_COLUMNS)):
        found = [j for j, h in enumerate(low) if h in allowed]
        if len(found) != 1:
            raise DataError(
                f"{src}: header must have exactly one {what} column named one of {', '.join(allowed)}; found {len(found)} in header {','.join(header)}"
            )
        cols[what] = found[0]
    tcol = cols["time"]
    var = [j for j in range(len(header)) if j not in cols.values()]
    names = tuple(header[j] for j in var)
    if not var or any(not s for s in names) or len(set(names)) != len(names):
        raise DataError(
            f"{src}: header {','.join(header)} must name one or more distinct variable columns after the trajectory id and time columns"
        )
    if not rows:
        raise DataError(f"{src}: header but no data rows; expected at least 1 trajectory")
    numcols = [tcol, *var]
    cells = [[r[j] for j in numcols] for r in rows]
    try:
        vals = np.array(cells, dtype=np.float64)
    except ValueError:
        vals = np.empty((len(cells), len(numcols)))
        for r, row in enumerate(cells):
            for c, cell in enumerate(row):
                try:
                    vals[r, c] = float(cell)
                except ValueError:
                    raise DataError(
                        f"{src}: line {lines[r]}, column {header[numcols[c]]!r}: cannot parse {cell!r} as a number"
                    ) from None
    bad = np.argwhere(~np.isfinite(vals))
    if bad.size:
        r, c = bad[0]
        raise DataError(
            f"{src}: line {lines[r]}, column {header[numcols[c]]!r}: value {cells[r][c].strip()!r} is not finite; trajectories must be finite (ragged trajectories are simply shorter)"
        )
    groups: dict[str, list[int]] = {}
    for r, row in enumerate(rows):
        tid = row[cols["trajectory id"]].strip()
        if not tid:
            raise DataError(
                f"{src}: line {lines[r]}, column {header[cols['trajectory id']]!r}: empty trajectory id"
            )
        groups.setdefault(tid, []).append(r)
    tname = header[tcol]
    trajs = []
    for tid, members in groups.items():
        idx = np.asarray(members)
        idx = idx[np.argsort(vals[idx, 0], kind="stable")]
        if len(idx) < 2:
            raise DataError(
                f"{src}: trajectory {tid!r} has 1 observation (line {lines[idx[0]]}); each trajectory needs at least 2"
            )
        steps = np.diff(vals[idx, 0])
        dup = np.flatnonzero(steps == 0)
        if dup.size:
            k = dup[0]
            raise DataError(
                f"{src}: trajectory {tid!r} has duplicate {tname}={float(vals[idx[k], 0])!r} at lines {lines[idx[k]]} and {lines[idx[k + 1]]}; each time must appear once"
            )
        trajs.append((tid, idx, steps))
    median = float(np.median(np.concatenate([s for _, _, s in trajs])))
    if dt is not None and not math.isclose(median, dt, rel_tol=1e-6):
        raise DataError(
            f"{src}: column {tname!r} has time step {median!r} but dt={dt!r} was given (CLI: --dt); they must agree (relative tolerance 1e-6)"
        )
    ref = median if dt is None else dt
    for tid, idx, steps in trajs:
        off = np.flatnonzero(np.abs(steps - ref) > 1e-6 * ref)
        if off.size:
            k = off[0]
            raise DataError(
                f"{src}: trajectory {tid!r}, line {lines[idx[k + 1]]}: column {tname!r} steps by {float(steps[k])!r}, expected {ref!r}; time steps must be regular (relative tolerance 1e-6)"
            )
    if dt is None:
        dt = float(trajs[0][2][0])
    x = np.full((len(trajs), max(len(i) for _, i, _ in trajs), len(var)), np.nan)
    for n, (_, idx, _) in enumerate(trajs):
        x[n, : len(idx)] = vals[idx, 1:]
    return Trajectories(x, dt, names, {"source": src})


def save_trajectories(data: Trajectories, path: str | Path) -> None:
    """Write ``data`` to ``.npz`` (keys x, dt, names, meta) or ``.csv`` (traj,t,<names>).

    The file is written atomically (a temporary file moved into place), parent directories are
    created, and nothing is written when an error is raised. CSV values use the shortest
    repr that round-trips exactly; CSV does not store ``meta``.

    Raises
    ------
    DataError
        Unsupported extension, CSV-incompatible variable names, or an OS error while writing.
    """
    p, src = Path(path), str(path)
    if not isinstance(data, Trajectories):
        raise TypeError(f"save_trajectories expects Trajectories, got {type(data).__name__}")
    ext = _check_ext(p, src, WRITE_FORMATS, "write")
    if ext == ".csv":
        reserved = _TRAJ_COLUMNS + _TIME_COLUMNS
        for s in data.names:
            if s.lower() in reserved or s != s.strip() or "\n" in s or "\r" in s:
                raise DataError(
                    f"{src}: variable name {s!r} cannot be a CSV column (reserved: {', '.join(reserved)}; no surrounding whitespace or newlines); rename it"
                )
    meta_json = json.dumps(data.meta, default=json_default)
    try:
        with atomic_write(p) as tmp:
            if ext == ".npz":
                with open(tmp, "wb") as fh:
                    np.savez(
                        fh,
                        x=data.x,
                        dt=np.float64(data.dt),
                        names=np.array(data.names, dtype=np.str_),
                        meta=np.array(meta_json),
                    )
            else:
                with open(tmp, "w", newline="", encoding="utf-8") as fh:
                    w = csv.writer(fh, lineterminator="\n")
                    w.writerow(["traj", "t", *data.names])
                    for i, traj in enumerate(data.trajectories()):
                        times = (data.dt * np.arange(len(traj))).tolist()
                        w.writerows(
                            [str(i), repr(t), *map(repr, row)]
                            for t, row in zip(times, traj.tolist(), strict=True)
                        )
    except OSError as exc:
        raise DataError(f"{src}: cannot write ({_one_line(exc)})") from None


# ------------------------------------------------------------------------------ pairs, splits


def make_pairs(
    data: Trajectories,
    pairs_per_traj: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive observation pairs ``(x_k, x_{k+1})``, never across padding.

    Parameters
    ----------
    data : Trajectories
    pairs_per_traj : int, optional
        ``None``: all ``sum(L_i - 1)`` pairs, trajectory by trajectory in time order.
        ``k``: the paper's scheme, ``k`` start indices per trajectory drawn uniformly with
        replacement from ``{0, ..., L_i - 2}`` (``n_traj * k`` pairs).
    rng : numpy.random.Generator or int or None
        Randomness for ``pairs_per_traj`` (passed to :func:`numpy.random.default_rng`).

    Returns
    -------
    x0, x1 : numpy.ndarray, shape (N, d), float64
    """
    x, lengths = data.x, data.lengths
    if pairs_per_traj is None:
        valid = np.arange(data.n_obs - 1) < (lengths - 1)[:, None]
        return x[:, :-1][valid], x[:, 1:][valid]
    if (
        isinstance(pairs_per_traj, (bool, np.bool_))
        or not isinstance(pairs_per_traj, numbers.Integral)
        or pairs_per_traj < 1
    ):
        raise ConfigError(
            f"pairs_per_traj must be a positive integer or None, found {pairs_per_traj!r}"
        )
    from ._limits import check_memory

    check_memory(  # start indices, pair indices and the two pair arrays
        8.0 * data.n_traj * int(pairs_per_traj) * (2 + 2 * data.dim),
        f"pairs_per_traj={pairs_per_traj} (CLI: --pairs-per-traj) x {data.n_traj} trajectories",
    )
    gen = np.random.default_rng(rng)
    start = gen.integers(0, (lengths - 1)[:, None], size=(data.n_traj, int(pairs_per_traj)))
    traj = np.broadcast_to(np.arange(data.n_traj)[:, None], start.shape)
    return x[traj, start].reshape(-1, data.dim), x[traj, start + 1].reshape(-1, data.dim)


def make_windows(
    data: Trajectories,
    memory: int = 0,
    skip_first: int = 0,
    pairs_per_traj: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histories of ``memory + 1`` consecutive observations and the observation after
    each, never across a trajectory's end or padding: the training data of a map with
    memory (``memory = 0``: the pairs of :func:`make_pairs`).

    Parameters
    ----------
    data : Trajectories
    memory : int
        K: each window holds x_{n-K}, ..., x_n (shape (K + 1, d)) and its target x_{n+1}.
    skip_first : int
        Drop the first ``skip_first`` observations of every trajectory (transients of
        bursts started out of equilibrium): windows start at index >= ``skip_first``.
    pairs_per_traj : int, optional
        ``None``: every window; ``k``: ``k`` windows per trajectory drawn uniformly with
        replacement (the paper's sampling of pairs).
    rng : numpy.random.Generator or int or None
        Randomness for ``pairs_per_traj``.

    Returns
    -------
    history : array (N, K + 1, d), float64 (oldest first, x_n last)
    target : array (N, d); a periodic variable's target is x_n plus its increment on the
        circle (which may lie outside the range: the model's law is continuous there)
    traj : array (N,) of ints, the trajectory of each window
    """
    k, s = int(memory), int(skip_first)
    if k < 0 or s < 0:
        raise ConfigError(f"memory and skip_first must be >= 0, got {memory} and {skip_first}")
    x, lengths = data.x, data.lengths
    usable = lengths - s - k - 1  # windows per trajectory (starts s .. L - K - 2)
    if usable.max(initial=0) < 1:
        raise DataError(
            f"no trajectory has more than {s + k + 1} observations: none holds a window of "
            f"{k + 1} past observations and a target after skipping the first {s}"
        )
    if pairs_per_traj is None:
        starts = [np.arange(s, s + max(u, 0)) for u in usable.tolist()]
        traj = np.repeat(np.arange(data.n_traj), np.maximum(usable, 0))
        start = np.concatenate(starts).astype(np.int64)
    else:
        if (
            isinstance(pairs_per_traj, (bool, np.bool_))
            or not isinstance(pairs_per_traj, numbers.Integral)
            or pairs_per_traj < 1
        ):
            raise ConfigError(
                f"pairs_per_traj must be a positive integer or None, found {pairs_per_traj!r}"
            )
        from ._limits import check_memory

        keep = np.flatnonzero(usable >= 1)
        check_memory(
            8.0 * keep.size * int(pairs_per_traj) * (2 + (k + 2) * data.dim),
            f"pairs_per_traj={pairs_per_traj} (CLI: --pairs-per-traj) x {keep.size} trajectories",
        )
        gen = np.random.default_rng(rng)
        start = s + gen.integers(0, usable[keep][:, None], size=(keep.size, int(pairs_per_traj)))
        traj = np.broadcast_to(keep[:, None], start.shape).ravel()
        start = start.ravel()
    idx = start[:, None] + np.arange(k + 2)[None, :]
    w = x[traj[:, None], idx]  # (N, K + 2, d)
    target = w[:, k + 1]
    for j, r in enumerate(periodic_ranges(data)):
        if r is not None:  # the target next to x_n: x_n + the increment on the circle
            xn = w[:, k, j]
            target[:, j] = xn + wrap_delta(target[:, j] - xn, r[1] - r[0])
    return w[:, : k + 1], target, traj


def _time_split(length: int, val_fraction: float, where: str) -> int:
    """Observations of a single trajectory that train (the rest validate), each part >= 2."""
    n_train = round((1 - val_fraction) * length)
    if n_train < 2 or length - n_train < 2:
        raise DataError(
            f"{where}: the single trajectory has {length} observations; a time split with val_fraction={val_fraction} leaves {n_train} for training and {length - n_train} for validation, each needs at least 2"
        )
    return n_train


def _split_indices(n_traj: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) trajectory indices of :func:`split_by_trajectory`."""
    n_val = min(max(round(val_fraction * n_traj), 1), n_traj - 1)
    perm = np.random.default_rng(seed).permutation(n_traj)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_by_trajectory(
    data: Trajectories, val_fraction: float = 0.1, seed: int = 0
) -> tuple[Trajectories, Trajectories]:
    """Random train/validation split by whole trajectories (never by pair).

    ``round(val_fraction * n_traj)`` trajectories, clipped to ``[1, n_traj - 1]``, drawn with
    ``numpy.random.default_rng(seed)``, go to validation; both parts keep the original order.
    With a single trajectory the split is in time instead: the first
    ``round((1 - val_fraction) * L)`` observations train, the rest validate (both need >= 2;
    the pair straddling the cut is used by neither). ``meta["split"]`` records the split.

    Returns
    -------
    train, val : Trajectories
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction must be a number in (0, 1), found {val_fraction!r}")

    def part(sub: Trajectories, name: str, by: str) -> Trajectories:
        info = {"part": name, "by": by, "val_fraction": float(val_fraction), "seed": seed}
        return Trajectories(sub.x, sub.dt, sub.names, {**sub.meta, "split": info})

    if data.n_traj == 1:
        length = int(data.lengths[0])
        n_train = _time_split(length, val_fraction, "split_by_trajectory")
        train = Trajectories(data.x[:, :n_train], data.dt, data.names, data.meta)
        val = Trajectories(data.x[:, n_train:length], data.dt, data.names, data.meta)
        return part(train, "train", "time"), part(val, "val", "time")
    train_idx, val_idx = _split_indices(data.n_traj, val_fraction, seed)
    return part(data.subset(train_idx), "train", "trajectory"), part(
        data.subset(val_idx), "val", "trajectory"
    )


def check_dim(data: Trajectories, expected_dim: int, source: str) -> None:
    """Raise :class:`DataError` unless ``data.dim == expected_dim``; ``source`` names the file."""
    if data.dim != expected_dim:
        raise DataError(
            f"{source}: data has d={data.dim} slow variables but the model expects d={expected_dim}"
        )
