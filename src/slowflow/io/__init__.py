"""File input and output underneath every other layer of slowflow.

* :mod:`~slowflow.io.atomic`: atomic writes (a temporary name, moved into place when the
  writer finished) and the checks every command makes on its outputs before working;
* :mod:`~slowflow.io.limits`: memory, disk and archive sizes checked before allocating;
* :mod:`~slowflow.io.jsonable`: the one JSON encoder for results and metadata;
* :mod:`~slowflow.io.npy`: the ``.npy`` header read and written, arrays read in slices;
* :mod:`~slowflow.io.sidecar`: the JSON file next to an ``.npy`` ensemble.

The trajectory formats themselves (``.npz``, ``.npy``, ``.csv``, ``.mat``) are read and
written by :mod:`slowflow.data.files`, model files by :mod:`slowflow.model.io`.
"""

from __future__ import annotations

from .atomic import TEMP_MARK, atomic_folder, atomic_open, atomic_write, check_output
from .jsonable import json_default, to_jsonable
from .limits import available_memory, check_archive, check_disk, check_memory
from .npy import HEADER_ERRORS, NpyArray, read_header, write_header
from .sidecar import SIDECAR_SUFFIX, read_sidecar, sidecar_info, sidecar_path, write_sidecar

__all__ = [
    "HEADER_ERRORS",
    "SIDECAR_SUFFIX",
    "TEMP_MARK",
    "NpyArray",
    "atomic_folder",
    "atomic_open",
    "atomic_write",
    "available_memory",
    "check_archive",
    "check_disk",
    "check_memory",
    "check_output",
    "json_default",
    "read_header",
    "read_sidecar",
    "sidecar_info",
    "sidecar_path",
    "to_jsonable",
    "write_header",
    "write_sidecar",
]
