"""Trajectory files larger than memory: memory-mapped reading and chunked writing.

A :class:`TrajectoryStore` opens the trajectory array of an ``.npy`` file or of an
*uncompressed* ``.npz`` archive (what :func:`numpy.savez` and
:func:`slowflow.save_trajectories` write) as a read-only :class:`numpy.memmap`; only the
blocks being used are in memory. Opening scans the file once in blocks to check it (the
same rules as :class:`slowflow.Trajectories`: finite values, NaN only as trailing padding,
at least 2 observations per trajectory) and to record each trajectory's length and the data
range. :func:`slowflow.fit` trains on a store with ``stream=True`` (CLI: ``--stream``),
reading blocks of pairs in a shuffled order.

A :class:`TrajectoryWriter` writes such a file block by block (an ``.npz`` with the same
keys as :func:`slowflow.save_trajectories`), atomically: nothing appears under the final
name until the last block is written.

Data are split into *pieces*: a group of whole trajectories, or, for trajectories longer
than a block, a time window of one trajectory (consecutive windows share one observation,
so no pair is lost at a boundary).
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..io.atomic import atomic_write
from ..io.jsonable import json_default
from ..io.npy import HEADER_ERRORS, read_header, write_header
from .files import ZIP_ERRORS
from .trajectories import NAN_HINT, check_dt, check_names, one_line
from .windows import split_indices, time_split

#: Pairs per piece when a file is opened for streaming (about 16 MB of float64 for d = 1).
DEFAULT_BLOCK_PAIRS = 1 << 20


@dataclass(frozen=True)
class Piece:
    """Trajectories ``rows[0]..rows[1]-1``, observations ``t0..t1-1`` (pairs inside)."""

    rows: tuple[int, int]
    t0: int
    t1: int


def _npy_header(fh, src: str, where: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Read a .npy header at the current position: shape, fortran order, dtype, data offset."""
    try:
        return read_header(fh)
    except HEADER_ERRORS as exc:
        raise DataError(f"{src}: {where} has no readable NumPy header ({one_line(exc)})") from None


def _check_array(shape, fortran, dtype, src: str, where: str) -> None:
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise DataError(f"{src}: {where} has dtype {dtype}; expected a numeric (float) array")
    if len(shape) != 3:
        raise DataError(
            f"{src}: {where} has shape {shape}; streaming needs a 3-D array (n_traj, n_obs, d)"
        )
    if fortran and shape[0] > 1:
        raise DataError(
            f"{src}: {where} is stored in Fortran order; streaming needs C order "
            "(save with numpy.save / numpy.savez of a C-contiguous array)"
        )


def _memmap_npz(p: Path, src: str) -> tuple[np.memmap, dict[str, np.ndarray]]:
    """Memory-map member 'x' of an uncompressed .npz; read the small members normally."""
    try:
        zf = zipfile.ZipFile(p)
    except (ValueError, *ZIP_ERRORS) as exc:
        raise DataError(f"{src}: truncated or corrupt .npz archive ({one_line(exc)})") from None
    with zf:
        names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        if "x" not in names:
            found = ", ".join(repr(k) for k in names) or "none"
            raise DataError(
                f"{src}: missing key 'x' (found keys: {found}); expected 'x' "
                "(trajectories, shape (n_traj, n_obs, d)) and 'dt'"
            )
        info = zf.getinfo(names["x"])
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataError(
                f"{src}: key 'x' is compressed and cannot be memory-mapped; for streaming save "
                "with numpy.savez (not savez_compressed), slowflow.save_trajectories, "
                "slowflow.TrajectoryWriter or as .npy"
            )
        small: dict[str, np.ndarray] = {}
        for key in ("dt", "names", "meta"):
            if key in names:
                try:
                    with zf.open(names[key]) as fh:
                        small[key] = np.lib.format.read_array(fh, allow_pickle=False)
                except (ValueError, *ZIP_ERRORS) as exc:
                    raise DataError(f"{src}: key {key!r} unreadable ({one_line(exc)})") from None
    with open(p, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise DataError(f"{src}: corrupt .npz archive (bad local header of key 'x')")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        fh.seek(info.header_offset + 30 + n_name + n_extra)
        shape, fortran, dtype, offset = _npy_header(fh, src, "key 'x'")
    _check_array(shape, fortran, dtype, src, "key 'x'")
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if need > p.stat().st_size:
        raise DataError(f"{src}: key 'x' is truncated ({p.stat().st_size} of {need} bytes)")
    x = np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape)
    return x, small


def _memmap_npy(p: Path, src: str) -> np.memmap:
    with open(p, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise DataError(
                f"{src}: not a .npy file (no NumPy header); expected one array (n_traj, n_obs, d)"
            )
        fh.seek(0)
        shape, fortran, dtype, offset = _npy_header(fh, src, "the array")
    _check_array(shape, fortran, dtype, src, "the array")
    need = offset + int(np.prod(shape)) * dtype.itemsize
    if need > p.stat().st_size:
        raise DataError(f"{src}: the array is truncated ({p.stat().st_size} of {need} bytes)")
    return np.memmap(p, dtype=dtype, mode="r", offset=offset, shape=shape)


def _reader(x: np.memmap):
    """``read(r0, r1, t0, t1) -> float64 block`` for a memory-mapped array.

    Contiguous ranges (whole trajectories, or a time window of one) are read with plain
    file reads, not through the mapping: pages touched through a mapping count towards
    the process's resident memory until the kernel needs them back, file reads only fill
    the shared page cache. So reading a file larger than memory keeps the resident set
    small.
    """
    _, n_obs, d = x.shape
    item = x.dtype.itemsize
    path, base = x.filename, x.offset

    def read(r0: int, r1: int, t0: int, t1: int) -> np.ndarray:
        if r1 - r0 == 1 or (t0 == 0 and t1 == n_obs):
            start = ((r0 * n_obs + t0) * d) * item
            count = (
                ((r1 - r0 - 1) * n_obs + (t1 - t0)) * d if r1 - r0 == 1 else (r1 - r0) * n_obs * d
            )
            block = np.fromfile(path, dtype=x.dtype, count=count, offset=base + start)
            return block.reshape(r1 - r0, t1 - t0, d).astype(np.float64, copy=False)
        return np.asarray(x[r0:r1, t0:t1], dtype=np.float64)

    return read


class TrajectoryStore:
    """Read-only, memory-mapped trajectories ``(n_traj, n_obs, d)`` in a file.

    Use :meth:`open`. Attributes: ``path``, ``x`` (the memmap), ``dt``, ``names``, ``meta``,
    ``lengths`` (valid observations per trajectory), ``lo``/``hi`` (per-variable range).
    """

    def __init__(self, path, x, dt, names, meta, lengths, lo, hi) -> None:
        self.path, self.x, self.dt, self.names, self.meta = path, x, dt, names, meta
        self.lengths, self.lo, self.hi = lengths, lo, hi
        self._read = _reader(x)

    n_traj = property(lambda self: int(self.x.shape[0]))
    n_obs = property(lambda self: int(self.x.shape[1]))
    dim = property(lambda self: int(self.x.shape[2]))

    @property
    def n_pairs(self) -> int:
        """Consecutive pairs in the file (padding excluded)."""
        return int((self.lengths - 1).sum())

    def __repr__(self) -> str:
        return (
            f"TrajectoryStore({str(self.path)!r}, n_traj={self.n_traj}, n_obs={self.n_obs}, "
            f"dim={self.dim}, dt={self.dt!r}, pairs={self.n_pairs})"
        )

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        dt: float | None = None,
        block_pairs: int = DEFAULT_BLOCK_PAIRS,
        progress: bool | None = None,
    ) -> TrajectoryStore:
        """Memory-map ``path`` (.npy, or .npz written uncompressed) and check it in blocks.

        ``dt`` is required for ``.npy`` (it has no place for it) and must agree with the
        archive's ``dt`` for ``.npz``. Raises :class:`DataError` naming the file and field.
        """
        p, src = Path(path), str(path)
        if not p.exists():
            raise DataError(f"{src}: no such file")
        ext = p.suffix.lower()
        names: tuple[str, ...] = ()
        meta: dict[str, Any] = {}
        if ext == ".npz":
            x, small = _memmap_npz(p, src)
            if "dt" in small:
                a = small["dt"]
                if a.dtype.kind not in "iuf" or a.size != 1:
                    raise DataError(f"{src}: key 'dt' must be a single number")
                file_dt = check_dt(float(a.reshape(-1)[0]), f"{src}: key 'dt'")
                if dt is not None and not math.isclose(file_dt, dt, rel_tol=1e-9):
                    raise DataError(
                        f"{src}: key 'dt' is {file_dt!r} but dt={dt!r} was given (CLI: --dt); "
                        "they must agree"
                    )
                dt = file_dt
            if "names" in small and small["names"].dtype.kind in "US":
                names = tuple(str(s) for s in small["names"].tolist())
            if "meta" in small and small["meta"].dtype.kind in "US":
                try:
                    meta = json.loads(str(small["meta"].reshape(-1)[0]))
                except ValueError as exc:
                    raise DataError(f"{src}: key 'meta' is not valid JSON ({exc})") from None
                if not isinstance(meta, dict):
                    raise DataError(f"{src}: key 'meta' must be a JSON object")
        elif ext == ".npy":
            x = _memmap_npy(p, src)
        else:
            raise DataError(
                f"{src}: cannot stream {ext or 'a file without extension'}; streaming reads "
                ".npz (uncompressed) or .npy"
            )
        if dt is None:
            raise DataError(f"{src}: no dt in the file and none given; pass dt= (CLI: --dt)")
        dt = check_dt(dt, f"{src}: dt")
        n, n_obs, d = x.shape
        if n == 0 or d == 0 or n_obs < 2:
            raise DataError(
                f"{src}: trajectories have shape {x.shape}; expected at least 1 trajectory, "
                "2 observations and 1 variable"
            )
        names = check_names(names, d, f"{src}: key 'names'")
        lengths, lo, hi = _scan(x, src, block_pairs, progress)
        return cls(p, x, dt, names, meta, lengths, lo, hi)

    # -------------------------------------------------------------- pieces and pairs
    def pieces(
        self,
        rows: np.ndarray | None = None,
        t_range: tuple[int, int] | None = None,
        block_pairs: int = DEFAULT_BLOCK_PAIRS,
    ) -> list[Piece]:
        """Cut the given trajectory indices (default: all) into pieces of about
        ``block_pairs`` pairs: runs of consecutive indices, or time windows of one
        trajectory when it alone has more pairs than a block."""
        rows = np.arange(self.n_traj) if rows is None else np.asarray(rows, dtype=np.int64)
        t0, t1 = t_range if t_range is not None else (0, self.n_obs)
        span = t1 - t0
        out: list[Piece] = []
        if span - 1 > block_pairs:
            step = max(1, int(block_pairs))
            for r in rows.tolist():
                for a in range(t0, t1 - 1, step):
                    out.append(Piece((r, r + 1), a, min(t1, a + step + 1)))
            return out
        per = max(1, int(block_pairs) // max(1, span - 1))
        # runs of consecutive row indices, each cut into groups of at most `per`
        if rows.size == 0:
            return out
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(rows, breaks):
            for a in range(0, run.size, per):
                grp = run[a : a + per]
                out.append(Piece((int(grp[0]), int(grp[-1]) + 1), t0, t1))
        return out

    def read_pairs(self, piece: Piece) -> tuple[np.ndarray, np.ndarray]:
        """All valid consecutive pairs inside ``piece``, float64 ``(k, d)`` each."""
        h, x1 = self.read_windows(piece)
        return h[:, 0], x1

    def _targets(self, piece: Piece, memory: int, skip_first: int):
        """Per row of the piece, the first and one-past-last target index of its windows."""
        r0, r1 = piece.rows
        j_lo = max(piece.t0 + 1, skip_first + memory + 1)
        j_hi = np.minimum(self.lengths[r0:r1], piece.t1)  # targets j < j_hi
        return j_lo, j_hi

    def read_windows(
        self, piece: Piece, memory: int = 0, skip_first: int = 0
    ) -> tuple[np.ndarray, np.ndarray]:
        """The windows (k, K + 1, d) whose targets (k, d) lie inside ``piece`` (as the pairs
        do), with the history read from before the piece's first observation where
        needed, never from the first ``skip_first`` observations nor across padding."""
        k = int(memory)
        r0, r1 = piece.rows
        a = max(0, piece.t0 - k)
        block = self._read(r0, r1, a, piece.t1)
        j_lo, j_hi = self._targets(piece, k, skip_first)
        if block.shape[1] < k + 2:
            return np.empty((0, k + 1, self.dim)), np.empty((0, self.dim))
        sw = np.lib.stride_tricks.sliding_window_view(block, k + 2, axis=1)  # (r, T, d, K+2)
        j = a + np.arange(sw.shape[1]) + k + 1  # each window's target index
        valid = (j >= j_lo)[None, :] & (j[None, :] < j_hi[:, None])
        w = np.moveaxis(sw[valid], -1, 1)  # (n, K + 2, d)
        return np.ascontiguousarray(w[:, : k + 1]), np.ascontiguousarray(w[:, k + 1])

    def window_count(self, pieces: list[Piece], memory: int = 0, skip_first: int = 0) -> int:
        """The number of windows :meth:`read_windows` gives for ``pieces`` (no reading)."""
        total = 0
        for pc in pieces:
            j_lo, j_hi = self._targets(pc, int(memory), int(skip_first))
            total += int(np.maximum(j_hi - j_lo, 0).sum())
        return total

    def split(self, val_fraction: float, seed: int, block_pairs: int = DEFAULT_BLOCK_PAIRS):
        """Train/validation pieces, split like :func:`slowflow.data.split_by_trajectory`."""
        if self.n_traj == 1:
            length = int(self.lengths[0])
            n_train = time_split(length, val_fraction, str(self.path))
            return (
                self.pieces(np.array([0]), (0, n_train), block_pairs),
                self.pieces(np.array([0]), (n_train, length), block_pairs),
            )
        train_idx, val_idx = split_indices(self.n_traj, val_fraction, seed)
        return self.pieces(train_idx, None, block_pairs), self.pieces(val_idx, None, block_pairs)

    def pair_count(self, pieces: list[Piece]) -> int:
        total = 0
        for pc in pieces:
            ends = np.minimum(self.lengths[pc.rows[0] : pc.rows[1]], pc.t1) - pc.t0
            total += int(np.maximum(ends - 1, 0).sum())
        return total


def _scan(x: np.ndarray, src: str, block_pairs: int, progress: bool | None):
    """Check every value once, block by block; return lengths and the data range."""
    n, n_obs, d = x.shape
    read = _reader(x)
    lengths = np.empty(n, dtype=np.int64)
    lo = np.full(d, np.inf)
    hi = np.full(d, -np.inf)
    rows_per = max(1, int(block_pairs) // max(1, n_obs - 1))
    t_step = n_obs if rows_per > 1 or n_obs - 1 <= block_pairs else int(block_pairs)
    show = progress if progress is not None else x.nbytes > 2**30
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=x.nbytes, unit="B", unit_scale=True, desc="scan", leave=False)
    try:
        for r0 in range(0, n, rows_per):
            r1 = min(n, r0 + rows_per)
            padding = np.zeros(r1 - r0, dtype=bool)  # padding already started
            length = np.full(r1 - r0, n_obs, dtype=np.int64)
            for t0 in range(0, n_obs, t_step):
                t1 = min(n_obs, t0 + t_step)
                block = read(r0, r1, t0, t1)
                if np.isinf(block).any():
                    i, k, j = np.argwhere(np.isinf(block))[0]
                    raise DataError(
                        f"{src}: x has an infinite value at trajectory {r0 + i}, observation "
                        f"{t0 + k}, variable {j}; trajectories must be finite"
                    )
                nan = np.isnan(block)
                row_nan = nan.all(axis=2)
                part = nan.any(axis=2) & ~row_nan
                # a row with some but not all NaN, or a finite row after padding started
                after = np.maximum.accumulate(row_nan, axis=1) | padding[:, None]
                bad = part | (after & ~row_nan)
                if bad.any():
                    i, k = np.argwhere(bad)[0]
                    raise DataError(
                        f"{src}: x has a NaN at trajectory {r0 + i}, observation {t0 + k}; "
                        f"{NAN_HINT}"
                    )
                first = np.where(row_nan.any(axis=1), row_nan.argmax(axis=1) + t0, n_obs)
                newly = ~padding & row_nan.any(axis=1)
                length[newly] = first[newly]
                padding |= row_nan.any(axis=1)
                with np.errstate(invalid="ignore"):
                    lo = np.fmin(lo, np.nanmin(block, axis=(0, 1)) if (~nan).any() else lo)
                    hi = np.fmax(hi, np.nanmax(block, axis=(0, 1)) if (~nan).any() else hi)
                if bar is not None:
                    bar.update(block.size * x.dtype.itemsize)
            short = np.flatnonzero(length < 2)
            if short.size:
                raise DataError(
                    f"{src}: x has only {length[short[0]]} valid observation(s) in trajectory "
                    f"{r0 + short[0]}; each trajectory needs at least 2"
                )
            lengths[r0:r1] = length
    finally:
        if bar is not None:
            bar.close()
    return lengths, lo, hi


def pair_statistics(store: TrajectoryStore, pieces: list[Piece]) -> dict[str, np.ndarray]:
    """Mean and std of x_n and of the increments over the pieces' pairs, in one pass
    (chunk moments combined with Chan's formula, float64)."""
    d = store.dim
    acc = {k: [0, np.zeros(d), np.zeros(d)] for k in ("x", "d")}
    for pc in pieces:
        x0, x1 = store.read_pairs(pc)
        if not x0.shape[0]:
            continue
        for key, v in (("x", x0), ("d", x1 - x0)):
            n_a, mean_a, m2_a = acc[key]
            n_b, mean_b = v.shape[0], v.mean(0)
            m2_b = ((v - mean_b) ** 2).sum(0)
            n = n_a + n_b
            delta = mean_b - mean_a
            acc[key] = [n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n]
    tiny = 1e-12
    out = {}
    for key in ("x", "d"):
        n, mean, m2 = acc[key]
        if n == 0:
            raise DataError(f"{store.path}: no training pairs")
        out[f"{key}_mean"] = mean
        out[f"{key}_std"] = np.maximum(np.sqrt(m2 / n), tiny)
    return out


# ------------------------------------------------------------------------------- writing
class TrajectoryWriter:
    """Write an ``.npz`` trajectory file block by block, atomically.

    >>> with TrajectoryWriter("big.npz", n_traj, n_obs, d, dt=0.01) as w:  # doctest: +SKIP
    ...     for block in blocks:          # (k, n_obs, d) arrays, in trajectory order
    ...         w.write(block)

    The archive has the keys of :func:`slowflow.save_trajectories` (``x`` stored
    uncompressed, so it can be memory-mapped) and is readable by
    :func:`slowflow.load_trajectories` and :meth:`TrajectoryStore.open`. Leaving the ``with``
    block early (an error, Ctrl-C, fewer trajectories than announced) removes the temporary
    file and leaves any existing file under the final name untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n_traj: int,
        n_obs: int,
        dim: int,
        dt: float,
        names=(),
        meta: dict | None = None,
        dtype=np.float64,
    ) -> None:
        for name, v in (("n_traj", n_traj), ("n_obs", n_obs), ("dim", dim)):
            if int(v) != v or v < 1:
                raise ConfigError(f"TrajectoryWriter: {name} must be a positive integer, got {v}")
        if Path(path).suffix.lower() != ".npz":
            raise ConfigError(f"TrajectoryWriter: {path}: the file must end in .npz")
        self.path = Path(path)
        self.shape = (int(n_traj), int(n_obs), int(dim))
        self.dt = check_dt(dt, "TrajectoryWriter: dt")
        self.names = check_names(names, int(dim), "TrajectoryWriter: names")
        self.meta = dict(meta or {})
        self.dtype = np.dtype(dtype)
        self.written = 0
        self._ctx = None

    def __enter__(self) -> TrajectoryWriter:
        self._ctx = atomic_write(self.path)
        tmp = self._ctx.__enter__()
        self._zip = zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self._fh = self._zip.open("x.npy", "w", force_zip64=True)
        write_header(self._fh, self.shape, self.dtype, version=(2, 0))
        return self

    def write(self, block) -> None:
        """Append trajectories ``(k, n_obs, d)`` (NaN trailing padding allowed)."""
        block = np.asarray(block)
        if block.ndim != 3 or block.shape[1:] != self.shape[1:]:
            raise DataError(
                f"{self.path}: block of shape {block.shape}; expected (k, {self.shape[1]}, "
                f"{self.shape[2]})"
            )
        if self.written + block.shape[0] > self.shape[0]:
            raise DataError(
                f"{self.path}: more than the announced {self.shape[0]} trajectories written"
            )
        self._fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.written += block.shape[0]

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self._fh.close()
            if exc_type is None:
                if self.written != self.shape[0]:
                    raise DataError(
                        f"{self.path}: {self.written} of the announced {self.shape[0]} "
                        "trajectories were written; nothing was saved"
                    )
                small = {
                    "dt": np.float64(self.dt),
                    "names": np.array(self.names, dtype=np.str_),
                    "meta": np.array(json.dumps(self.meta, default=json_default)),
                }
                for key, value in small.items():
                    with self._zip.open(f"{key}.npy", "w") as fh:
                        np.lib.format.write_array(fh, np.asarray(value), allow_pickle=False)
            self._zip.close()
        except BaseException as err:
            self._zip.close()
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        return bool(self._ctx.__exit__(exc_type, exc, tb))
