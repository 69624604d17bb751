"""Resource limits checked before allocating: memory for arrays, disk space for outputs.

Sizes come from option values and file headers, which slowflow never trusts: an ensemble of
10^12 paths or a 200-byte ``.npy`` whose header declares 10^12 values must be refused with
one line naming the option or file, not answered with a MemoryError or an exhausted disk.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import ConfigError

#: Fraction of the available memory one array may take.
MEMORY_FRACTION = 0.8


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 62


def gb(n_bytes: float) -> str:
    """Human-readable size: ``8.01 GB`` or ``12.3 MB``."""
    return f"{n_bytes / 1e9:.3g} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.3g} MB"


def check_memory(n_bytes: float, what: str) -> None:
    """Raise :class:`ConfigError` if ``n_bytes`` exceed the memory that is available.

    ``what`` names the option or file and the quantity, e.g. ``"n_paths=10^12 (CLI:
    --n-paths)"``; the message reads ``<what> would need 8e+03 GB of memory, more than ...``.
    """
    avail = available_memory()
    if n_bytes > MEMORY_FRACTION * avail:
        raise ConfigError(
            f"{what} would need {gb(n_bytes)} of memory, more than the {gb(avail)} "
            "available; ask for less"
        )


def check_disk(path: str | os.PathLike, n_bytes: float, what: str) -> None:
    """Raise :class:`ConfigError` if the file system of ``path`` has less than ``n_bytes``
    (plus 1 %) free."""
    q = Path(path).absolute().parent
    while not q.exists() and q != q.parent:
        q = q.parent
    try:
        free = shutil.disk_usage(q).free
    except OSError:
        return
    if n_bytes * 1.01 > free:
        raise ConfigError(
            f"{what}: {Path(path).name} would take {gb(n_bytes)} but {q} has only {gb(free)} free"
        )


def check_archive(path: str | os.PathLike, what: str) -> None:
    """Refuse a zip archive (a torch file) whose members would unpack to more than the
    available memory (a small file can declare gigabytes of compressed zeros)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            total = sum(info.file_size for info in z.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        return  # not a readable zip: the reader reports it
    check_memory(total, what)
