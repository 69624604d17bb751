"""Small file-system helpers shared by the readers and writers of slowflow."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _reserve_temp(target: Path) -> Path:
    """Create an empty, uniquely named temporary file next to ``target`` and return its path.

    The name is ``.<target name>.tmp-<random hex><target suffix>``: hidden, in the same
    directory (so :func:`os.replace` is atomic) and with the same suffix as the target (so
    savers such as :func:`numpy.save` do not append an extension).
    """
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.tmp-{secrets.token_hex(4)}{target.suffix}")
        try:
            # 0o666 & ~umask: the final file gets the same permissions as a plain open().
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{target}: could not create a unique temporary file next to it")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, then move it onto ``path``.

    The temporary file is created (empty) in the directory of ``path`` with the same suffix,
    e.g. ``out/.train.npz.tmp-1a2b3c4d.npz`` for ``out/train.npz``; parent directories are
    created. If the ``with`` block exits normally, the temporary file is flushed to disk and
    :func:`os.replace`-d onto ``path`` (readers never see a partial file). If the block raises,
    the temporary file is removed, ``path`` is left untouched and the exception propagates.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination.

    Yields
    ------
    pathlib.Path
        The temporary path to write to (it may be overwritten or re-created by the block).

    Examples
    --------
    >>> with atomic_write("out/result.npz") as tmp:  # doctest: +SKIP
    ...     with open(tmp, "wb") as fh:
    ...         np.savez(fh, x=x)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve_temp(target)
    try:
        yield tmp
        with contextlib.suppress(OSError), open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
