"""Small file-system helpers shared by the readers and writers of slowflow.

Every file slowflow writes goes through :func:`atomic_write` (or :func:`atomic_open`): a
temporary file next to the target, moved into place only when the writer finished. Every
command checks its outputs with :func:`check_output` before it starts working, so that an
output that is also an input, a directory or an unwritable location is refused up front.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ConfigError

#: Marker in the names of temporary files (``.<name>.tmp-<hex><suffix>``).
TEMP_MARK = ".tmp-"

#: Set when the user asked to stop (Ctrl-C, SIGTERM): see :func:`request_stop`.
_STOP = {"requested": False}


def request_stop(requested: bool = True) -> None:
    """Record that the user asked to stop (the CLI's signal handlers call this before they
    raise KeyboardInterrupt), or clear it (``False``). A KeyboardInterrupt raised while
    Python runs a callback (numba's compiler, a finalizer) is printed and dropped by the
    interpreter; the request stays, and no atomic write or folder is committed after it."""
    _STOP["requested"] = bool(requested)


def stop_requested() -> bool:
    """Whether a stop was requested (and not cleared) since :func:`request_stop`."""
    return _STOP["requested"]


def _commit_allowed() -> None:
    if _STOP["requested"]:
        raise KeyboardInterrupt


def _reserve_temp(target: Path) -> Path:
    """Create an empty, uniquely named temporary file next to ``target`` and return its path.

    The name is ``.<target name>.tmp-<random hex><target suffix>``: hidden, in the same
    directory (so :func:`os.replace` is atomic) and with the same suffix as the target (so
    savers such as :func:`numpy.save` do not append an extension).
    """
    # a name of up to 255 bytes must still get a temporary name of at most 255 bytes
    room = 255 - len(f".{TEMP_MARK}12345678{target.suffix}".encode())
    head = target.name.encode()[: max(1, room)].decode(errors="ignore")
    for _ in range(100):
        tmp = target.with_name(f".{head}{TEMP_MARK}{secrets.token_hex(4)}{target.suffix}")
        try:
            # 0o666 & ~umask: the final file gets the same permissions as a plain open().
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"{target}: could not create a unique temporary file next to it")


def _strays(tmp: Path) -> list[Path]:
    """Files a saver created instead of ``tmp`` by appending to its name (``x.tmp.npz``)."""
    try:
        return [p for p in tmp.parent.iterdir() if p.name.startswith(tmp.name + ".")]
    except OSError:
        return []


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, then move it onto ``path``.

    The temporary file is created (empty) in the directory of ``path`` with the same suffix,
    e.g. ``out/.train.npz.tmp-1a2b3c4d.npz`` for ``out/train.npz``; parent directories are
    created. If the ``with`` block exits normally, the temporary file is flushed to disk and
    :func:`os.replace`-d onto ``path`` (readers never see a partial file). If the block raises,
    the temporary file is removed, ``path`` is left untouched and the exception propagates.

    A saver that does not write the path it was given (``numpy.savez`` appends ``.npz`` to
    names without it) is caught: its stray file is removed and a ``RuntimeError`` raised,
    never an empty file moved onto ``path``. Prefer :func:`atomic_open`, which hands out an
    open file, so that no saver can choose the name.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination. A symbolic link there is replaced by the new file (the file
        it points to is left alone).

    Yields
    ------
    pathlib.Path
        The temporary path to write to.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _reserve_temp(target)
    try:
        yield tmp
        strays = _strays(tmp)
        if strays:
            for s in strays:
                s.unlink(missing_ok=True)
            raise RuntimeError(
                f"{target}: the writer created {strays[0].name} instead of the temporary "
                f"file {tmp.name}; nothing was written"
            )
        with contextlib.suppress(OSError), open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _commit_allowed()
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs) -> Iterator:
    """:func:`atomic_write` with the temporary file already open (``mode`` ``"wb"`` or
    ``"w"``; ``kwargs`` go to :func:`open`): the writer cannot pick another name."""
    with atomic_write(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a set of files into the folder ``path`` all or nothing.

    Yields a hidden staging folder inside ``path`` (``.slowflow.tmp-<hex>``); when the block
    ends normally each file written there is moved into ``path`` (one atomic rename each,
    replacing older files of the same names), and the staging folder is removed. If the
    block raises, the staging folder is removed and ``path`` keeps its previous files.
    """
    import shutil

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    stage = folder / f".slowflow{TEMP_MARK}{secrets.token_hex(4)}"
    stage.mkdir()
    try:
        yield stage
        _commit_allowed()
        for item in sorted(stage.iterdir()):
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name the same file (symbolic and hard links included)."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _nearest_existing(p: Path) -> Path:
    q = p.absolute()
    while not q.exists() and q != q.parent:
        q = q.parent
    return q


def check_output(
    path: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    option: str = "--out",
    folder_files: Iterable[str] | None = None,
) -> None:
    """Refuse an output location before any work is done.

    A file output (``folder_files`` None) must not be an existing directory; a folder
    output must not be an existing file. The nearest existing parent must be a writable
    directory. No file written (``path`` itself, or ``path/<name>`` for each of
    ``folder_files``) may be one of ``inputs``: same resolved path, symbolic or hard link.

    Raises
    ------
    ConfigError
        One line naming ``option`` and the problem.
    """
    try:
        _check_output(Path(path), inputs, option, folder_files)
    except OSError as exc:  # a name too long, a loop of links, ...
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None


def _check_output(out: Path, inputs, option: str, folder_files) -> None:
    if folder_files is None:
        if out.is_dir():
            raise ConfigError(f"{option} {out}: is a directory; expected a file name")
        written = [out]
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{option} {out}: is a file; expected a folder")
        written = [out / name for name in folder_files]
    base = _nearest_existing(out.parent if folder_files is None else out)
    if not base.is_dir():
        raise ConfigError(f"{option} {out}: {base} is not a directory")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {out}: cannot write in {base} (permission denied)")
    probe_dir = out.parent if folder_files is None else out
    if probe_dir.is_dir():  # try what the writer will do: create a temporary file there
        try:
            _reserve_temp(written[0]).unlink()
        except OSError as exc:
            raise ConfigError(f"{option} {out}: cannot write there ({exc.strerror})") from None
    for src in inputs:
        if src is None:
            continue
        for w in written:
            if _same(w, Path(src)):
                raise ConfigError(
                    f"{option} {out}: would overwrite the input {src}; choose another output"
                )
