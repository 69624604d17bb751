"""Metrics comparing a predicted ensemble of slow-variable trajectories with reference ensembles.

The functions live in one module per concept (:mod:`.marginal`, :mod:`.joint`,
:mod:`.temporal`, :mod:`.scoring`, :mod:`.streaming`); this module gathers them. Every
function is pure: it reads arrays and returns arrays, floats or plain dictionaries,
and never changes its inputs.

Conventions
-----------
An *ensemble* is a float array of shape ``(n_paths, n_steps + 1, d)``: ``n_paths`` sample paths
of a ``d``-dimensional process observed at the times ``0, dt, ..., n_steps * dt``. Two ensembles
that are compared may hold different numbers of paths, but their number of time points and their
dimension ``d`` must agree; otherwise a :class:`ValueError` (a :class:`slowflow.errors.DataError`)
naming both shapes is raised. Non-finite values (NaN, inf) are rejected in the same way.

Distances between the *marginal* laws (one time step, one component) are computed exactly from
the empirical distributions and vectorized over time steps and components; memory use is bounded
by processing columns in chunks, so ensembles of 10,000 paths x 2,001 steps x 2 components are
handled in a few seconds.

The *Monte-Carlo noise floor* of a distance is its value between two independent reference
ensembles ``B`` and ``A`` of the same law (``B`` ideally with as many paths as the prediction): a
perfect model cannot be expected to do better than ``W1(B, A)``, so ``W1(pred, A) / W1(B, A)``
near 1 means "indistinguishable from the reference at this sample size".

Ensembles larger than memory (e.g. 10^6 paths written by ``slowflow predict --out X.npy``) are
read chunk-wise by the ``scan_*`` functions: :func:`scan_ensemble` makes one pass over the
paths (means, standard deviations, every path's values at chosen steps), from which
:func:`scan_moment_errors`, :func:`scan_w1`, :func:`scan_histograms` and
:meth:`EnsembleScan.quantiles` give the in-memory functions' results; :func:`scan_w1_steps`
and :func:`scan_autocorrelation` make further passes. They accept arrays, memory maps, or
:class:`NpyArray` (a ``.npy`` file read in slices with plain reads).

Dictionaries returned by the ``*_report`` functions hold numpy arrays; pass them through
:func:`to_jsonable` before ``json.dump`` (it turns arrays into lists and NaN/inf into ``None``).
"""

from __future__ import annotations

from ..io.jsonable import to_jsonable
from .joint import energy_distance, joint_report, sliced_w1
from .marginal import (
    histograms,
    moment_errors,
    w1_marginals,
    w1_report,
    wasserstein1,
    wasserstein1_circle,
)
from .scoring import crps_ensemble, energy_score, gaussian_crps, pit_histogram, pit_values
from .streaming import (
    EnsembleScan,
    NpyArray,
    scan_autocorrelation,
    scan_ensemble,
    scan_histograms,
    scan_moment_errors,
    scan_w1,
    scan_w1_steps,
)
from .temporal import autocorrelation, autocorrelation_error

__all__ = [
    "EnsembleScan",
    "NpyArray",
    "autocorrelation",
    "autocorrelation_error",
    "crps_ensemble",
    "energy_distance",
    "energy_score",
    "gaussian_crps",
    "histograms",
    "joint_report",
    "moment_errors",
    "pit_histogram",
    "pit_values",
    "scan_autocorrelation",
    "scan_ensemble",
    "scan_histograms",
    "scan_moment_errors",
    "scan_w1",
    "scan_w1_steps",
    "sliced_w1",
    "to_jsonable",
    "w1_marginals",
    "w1_report",
    "wasserstein1",
    "wasserstein1_circle",
]
