"""The ``.npy`` format in one place: its header read and written, and
:class:`NpyArray`, a 3-D array in a ``.npy`` file read in slices of paths.

Every reader of slowflow (whole files, memory-mapped stores, chunk-wise evaluation) parses
headers with :func:`read_header`, and every streaming writer writes them with
:func:`write_header`; numpy's :mod:`numpy.lib.format` does the actual parsing.
"""

from __future__ import annotations

import operator
import os
from pathlib import Path
from typing import IO

import numpy as np

from ..errors import DataError, one_line

#: What :func:`read_header` raises for a file that is not a readable ``.npy`` header.
HEADER_ERRORS = (ValueError, OSError, EOFError)


def read_header(fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The header of the ``.npy`` array at the position of ``fh``: shape, Fortran order,
    dtype, and the offset of the data (``fh`` is left there). Raises one of
    :data:`HEADER_ERRORS` (the caller names the file in its own message)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(v) for v in shape), bool(fortran), np.dtype(dtype), fh.tell()


def write_header(fh: IO[bytes], shape: tuple, dtype, version: tuple[int, int] = (1, 0)) -> None:
    """Write the header of a C-ordered array ``shape`` of ``dtype`` (the data follows)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
        "fortran_order": False,
        "shape": tuple(int(v) for v in shape),
    }
    if tuple(version) == (1, 0):
        np.lib.format.write_array_header_1_0(fh, header)
    else:
        np.lib.format.write_array_header_2_0(fh, header)


class NpyArray:
    """A 3-D array ``(n_paths, T, d)`` in a ``.npy`` file, read in slices of paths.

    ``x[i:j]`` reads paths ``i..j-1`` with ordinary file reads into a new array, so only
    the slices being used are in memory (unlike a :class:`numpy.memmap`, whose pages count
    towards the process's resident memory until unmapped). Has ``shape``, ``dtype``,
    ``ndim``, ``nbytes`` and ``path``; ``numpy.asarray(x)`` reads everything.

    Raises :class:`DataError` (one line naming the file) for a missing or truncated file, a
    file without a NumPy header, Fortran order, a non-numeric dtype or a shape that is not
    3-D.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        src = str(path)
        if not self.path.is_file():
            raise DataError(f"{src}: no such file")
        try:
            with open(self.path, "rb") as fh:
                shape, fortran, dtype, self.offset = read_header(fh)
        except HEADER_ERRORS as exc:
            raise DataError(f"{src}: not a readable .npy file ({one_line(exc)})") from None
        if dtype.kind not in "iuf" or dtype.hasobject:
            raise DataError(f"{src}: the array has dtype {dtype}; expected a numeric array")
        if len(shape) != 3 or 0 in shape:
            raise DataError(
                f"{src}: the array has shape {tuple(shape)}; expected (n_paths, n_steps + 1, d)"
            )
        if fortran:
            raise DataError(f"{src}: the array is in Fortran order; expected C order")
        self.shape, self.dtype = tuple(int(v) for v in shape), dtype
        self.ndim = 3
        self._row = self.shape[1] * self.shape[2]
        self.nbytes = self.shape[0] * self._row * dtype.itemsize
        size = self.path.stat().st_size
        if size < self.offset + self.nbytes:
            raise DataError(
                f"{src}: truncated .npy file ({size} bytes, the header announces shape "
                f"{self.shape} = {self.offset + self.nbytes} bytes)"
            )

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"NpyArray({str(self.path)!r}, shape={self.shape}, dtype={self.dtype})"

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __getitem__(self, key):
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            i = operator.index(key)
            i = i + self.shape[0] if i < 0 else i
            if not 0 <= i < self.shape[0]:
                raise IndexError(f"path {key} out of range for {self.shape[0]} paths")
            return self[i : i + 1][(0, *rest)]
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("NpyArray supports x[i:j] (and x[i:j, ...]) and x[i] only")
        start, stop, _ = key.indices(self.shape[0])
        stop = max(start, stop)
        count = (stop - start) * self._row
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + start * self._row * self.dtype.itemsize)
            out = np.fromfile(fh, dtype=self.dtype, count=count)
        if out.size != count:
            raise DataError(f"{self.path}: file shrank while reading (truncated .npy)")
        out = out.reshape(stop - start, *self.shape[1:])
        return out[(slice(None), *rest)] if rest else out
