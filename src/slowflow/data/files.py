"""Reading and writing trajectory files: .npz, .npy (with its sidecar), .csv and .mat."""

from __future__ import annotations

import csv
import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..io.atomic import atomic_write
from ..io.jsonable import json_default
from ..io.npy import HEADER_ERRORS, read_header
from ..io.sidecar import read_sidecar
from .trajectories import (
    Trajectories,
    as_numeric,
    check_dt,
    check_names,
    one_line,
    to_3d,
    validate_x,
)

READ_FORMATS = (".npz", ".npy", ".csv", ".mat")
WRITE_FORMATS = (".npz", ".csv")
_TRAJ_COLUMNS = ("traj", "trajectory", "id")
_TIME_COLUMNS = ("t", "time")
#: Column names a CSV trajectory file reserves for the trajectory and the time.
CSV_RESERVED = _TRAJ_COLUMNS + _TIME_COLUMNS
PASS_DT = "pass dt (CLI: --dt)"


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
        dt = check_dt(dt, f"{src}: dt")
    if not p.exists():
        raise DataError(f"{src}: no such file")
    if p.is_dir():
        raise DataError(f"{src}: is a directory; expected a {ext} file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise DataError(f"{src}: cannot read ({one_line(exc)})") from None
    if size == 0:
        raise DataError(f"{src}: file is empty (0 bytes); expected {ext} trajectory data")
    reader = {".npz": _load_npz, ".npy": _load_npy, ".csv": _load_csv, ".mat": _load_mat}[ext]
    try:
        return reader(p, src, dt)
    except OSError as exc:
        raise DataError(f"{src}: cannot read ({one_line(exc)})") from None


def _magic(p: Path, n: int) -> bytes:
    with open(p, "rb") as fh:
        return fh.read(n)


def _declared(fh: Any, src: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype declared by the ``.npy`` header at the position of ``fh``."""
    try:
        shape, _, dtype, _ = read_header(fh)
    except (*HEADER_ERRORS, *ZIP_ERRORS) as exc:
        raise DataError(f"{src}: not a readable NumPy array header ({one_line(exc)})") from None
    return shape, dtype


def _check_declared(shape, dtype: np.dtype, have: int, src: str) -> None:
    """Refuse a header that declares more data than the file holds, or than memory takes
    once converted to float64, before anything is allocated."""
    from ..io.limits import check_memory

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
    except ZIP_ERRORS as exc:
        raise DataError(
            f"{src}: key {key!r} cannot be read; the archive is truncated or corrupt "
            f"({one_line(exc)})"
        ) from None
    try:
        return z[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{src}: key {key!r} holds Python objects (dtype object), which are refused "
                "because loading them would require unpickling; store a numeric array"
            ) from None
        raise DataError(f"{src}: key {key!r} is corrupt ({one_line(exc)})") from None
    except ZIP_ERRORS as exc:
        raise DataError(
            f"{src}: key {key!r} cannot be read; the archive is truncated or corrupt "
            f"({one_line(exc)})"
        ) from None


# What zipfile and zlib raise on damaged archives (an unknown compression method is a
# NotImplementedError, found by fuzzing).
ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError)


def _load_npz(p: Path, src: str, dt: float | None) -> Trajectories:
    head = _magic(p, 6)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{src}: contains a single .npy array, not an .npz archive; rename it to .npy and {PASS_DT}, or save with numpy.savez"
        )
    if not head.startswith(b"PK"):
        raise DataError(
            f"{src}: not an .npz archive (no zip signature); expected keys 'x' and 'dt'"
        )
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, *ZIP_ERRORS) as exc:
        raise DataError(f"{src}: truncated or corrupt .npz archive ({one_line(exc)})") from None
    with z:
        keys = list(z.files)
        if "x" not in keys:
            found = ", ".join(repr(k) for k in keys) or "none"
            raise DataError(
                f"{src}: missing key 'x' (found keys: {found}); expected 'x' "
                "(trajectories, shape (n_traj, n_obs, d)) and 'dt'"
            )
        where = f"{src}: key 'x'"
        x = to_3d(as_numeric(_npz_member(z, "x", src), where), where)
        validate_x(x, where)
        if "dt" in keys:
            a = _npz_member(z, "dt", src)
            if a.dtype.kind not in "iuf" or a.size != 1:
                raise DataError(
                    f"{src}: key 'dt' must be a single number, found dtype {a.dtype} shape {a.shape}"
                )
            file_dt = check_dt(float(a.reshape(-1)[0]), f"{src}: key 'dt'")
            if dt is not None and not math.isclose(file_dt, dt, rel_tol=1e-9):
                raise DataError(
                    f"{src}: key 'dt' is {file_dt!r} but dt={dt!r} was given (CLI: --dt); they must agree (relative tolerance 1e-9)"
                )
            dt = file_dt
        elif dt is None:
            raise DataError(
                f"{src}: no key 'dt' (found keys: {', '.join(map(repr, keys))}) and no dt given; {PASS_DT}"
            )
        names: tuple[str, ...] = ()
        if "names" in keys:
            a = _npz_member(z, "names", src)
            if a.dtype.kind not in "US" or a.ndim != 1:
                raise DataError(
                    f"{src}: key 'names' must be a 1-D string array, found dtype {a.dtype} shape {a.shape}"
                )
            names = tuple(s.decode() if isinstance(s, bytes) else str(s) for s in a.tolist())
            names = check_names(names, x.shape[2], f"{src}: key 'names'")
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
                    f"{src}: key 'meta' is not valid JSON ({one_line(exc)}); expected a JSON object"
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
        raise DataError(f"{src}: truncated or corrupt .npy file ({one_line(exc)})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{src}: truncated or corrupt .npy file ({one_line(exc)})") from None
    where = f"{src}: array"
    x = to_3d(as_numeric(arr, where), where)
    validate_x(x, where)
    side = read_sidecar(p, arr.shape, dt)
    if side is not None:
        dt, names, meta = side["dt"], side["names"], {**side["meta"], "source": src}
        return Trajectories(x, dt, check_names(names, x.shape[2], f"{src}.json: key 'names'"), meta)
    if dt is None:
        raise DataError(f"{src}: a .npy file holds no time step; {PASS_DT}")
    return Trajectories(x, dt, (), {"source": src})


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
        raise DataError(f"{src}: not a readable MATLAB file ({one_line(exc)})") from None
    if "data" not in contents:
        found = ", ".join(repr(k) for k in contents if not k.startswith("__")) or "none"
        raise DataError(
            f"{src}: missing variable 'data' (found: {found}); expected 'data' of shape [d, n_obs, n_traj]"
        )
    where = f"{src}: variable 'data'"
    arr = as_numeric(contents["data"], where)
    if arr.ndim not in (2, 3):
        raise DataError(
            f"{where} has {arr.ndim} dimensions (shape {arr.shape}); expected [d, n_obs, n_traj] or [d, n_obs]"
        )
    x = to_3d(arr.T if arr.ndim == 3 else arr.T[None], where)
    validate_x(x, where)
    if dt is None:
        raise DataError(f"{src}: .mat files hold no time step; {PASS_DT}")
    return Trajectories(x, dt, (), {"source": src})


#: Memory taken while reading a file, per byte of file: a CSV's cells become Python strings
#: and lists (about 60 bytes per cell of a few characters) before they become floats; a
#: MATLAB file is read whole by the child and saved again for this process.
_READ_FACTOR = {".csv": 12, ".mat": 3}


def _check_read_size(p: Path, src: str) -> None:
    from ..io.limits import check_memory

    size = p.stat().st_size
    try:
        check_memory(size * _READ_FACTOR[p.suffix.lower()], f"{src}: reading this file")
    except ConfigError as exc:
        raise DataError(f"{exc}; convert it to .npz or .npy (read without copies)") from None


def _csv_rows(p: Path, src: str) -> tuple[list[str], list[list[str]], list[int]]:
    """The header, the non-blank data rows and their line numbers of a CSV file."""
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
        raise DataError(f"{src}: malformed CSV ({one_line(exc)})") from None
    if header is None:
        raise DataError(f"{src}: no header row; expected columns traj,t,<variables>")
    return header, rows, lines


def _csv_columns(header: list[str], src: str) -> tuple[int, int, list[int]]:
    """The trajectory id column, the time column and the variable columns."""
    low = [h.lower() for h in header]
    cols = {}
    for what, allowed in (("trajectory id", _TRAJ_COLUMNS), ("time", _TIME_COLUMNS)):
        found = [j for j, h in enumerate(low) if h in allowed]
        if len(found) != 1:
            raise DataError(
                f"{src}: header must have exactly one {what} column named one of {', '.join(allowed)}; found {len(found)} in header {','.join(header)}"
            )
        cols[what] = found[0]
    var = [j for j in range(len(header)) if j not in cols.values()]
    names = [header[j] for j in var]
    if not var or any(not s for s in names) or len(set(names)) != len(names):
        raise DataError(
            f"{src}: header {','.join(header)} must name one or more distinct variable columns after the trajectory id and time columns"
        )
    return cols["trajectory id"], cols["time"], var


def _csv_numbers(rows, lines, header, numcols, src: str) -> np.ndarray:
    """The numeric columns as float64 (rows, columns); the first bad cell is one line."""
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
    return vals


def _csv_trajectories(rows, lines, header, id_col: int, tname: str, times, src: str):
    """(id, row indices in time order, time steps) per trajectory, in order of first
    appearance; empty ids, single observations and duplicate times are refused."""
    groups: dict[str, list[int]] = {}
    for r, row in enumerate(rows):
        tid = row[id_col].strip()
        if not tid:
            raise DataError(
                f"{src}: line {lines[r]}, column {header[id_col]!r}: empty trajectory id"
            )
        groups.setdefault(tid, []).append(r)
    trajs = []
    for tid, members in groups.items():
        idx = np.asarray(members)
        idx = idx[np.argsort(times[idx], kind="stable")]
        if len(idx) < 2:
            raise DataError(
                f"{src}: trajectory {tid!r} has 1 observation (line {lines[idx[0]]}); each trajectory needs at least 2"
            )
        steps = np.diff(times[idx])
        dup = np.flatnonzero(steps == 0)
        if dup.size:
            k = dup[0]
            raise DataError(
                f"{src}: trajectory {tid!r} has duplicate {tname}={float(times[idx[k]])!r} at lines {lines[idx[k]]} and {lines[idx[k + 1]]}; each time must appear once"
            )
        trajs.append((tid, idx, steps))
    return trajs


def _csv_step(trajs, lines, tname: str, dt: float | None, src: str) -> float:
    """The one regular time step of all trajectories (checked against a given dt)."""
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
    return float(trajs[0][2][0]) if dt is None else dt


def _load_csv(p: Path, src: str, dt: float | None) -> Trajectories:
    """A CSV file in long layout: trajectory id, time, one column per variable."""
    _check_read_size(p, src)
    header, rows, lines = _csv_rows(p, src)
    id_col, tcol, var = _csv_columns(header, src)
    if not rows:
        raise DataError(f"{src}: header but no data rows; expected at least 1 trajectory")
    vals = _csv_numbers(rows, lines, header, [tcol, *var], src)
    tname = header[tcol]
    trajs = _csv_trajectories(rows, lines, header, id_col, tname, vals[:, 0], src)
    dt = _csv_step(trajs, lines, tname, dt, src)
    x = np.full((len(trajs), max(len(i) for _, i, _ in trajs), len(var)), np.nan)
    for n, (_, idx, _) in enumerate(trajs):
        x[n, : len(idx)] = vals[idx, 1:]
    return Trajectories(x, dt, tuple(header[j] for j in var), {"source": src})


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
        raise DataError(f"{src}: cannot write ({one_line(exc)})") from None
