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

from ..io.sidecar import read_sidecar as npy_sidecar
from .files import READ_FORMATS, WRITE_FORMATS, load_trajectories, save_trajectories
from .periodic import PERIODIC, check_periodic, declare_periodic, periodic_ranges, wrap, wrap_delta
from .trajectories import NAN_HINT, Trajectories, check_dt, check_names, one_line
from .windows import (
    check_dim,
    make_pairs,
    make_windows,
    split_by_trajectory,
    split_indices,
    time_split,
    window_positions,
)

__all__ = [
    "NAN_HINT",
    "PERIODIC",
    "READ_FORMATS",
    "WRITE_FORMATS",
    "Trajectories",
    "check_dim",
    "check_dt",
    "check_names",
    "check_periodic",
    "declare_periodic",
    "load_trajectories",
    "make_pairs",
    "make_windows",
    "npy_sidecar",
    "one_line",
    "periodic_ranges",
    "save_trajectories",
    "split_by_trajectory",
    "split_indices",
    "time_split",
    "window_positions",
    "wrap",
    "wrap_delta",
]
