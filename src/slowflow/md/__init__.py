"""Molecular dynamics: alanine dipeptide's backbone dihedrals, and a Markov state model.

Optional: ``pip install slowflow[md]`` (OpenMM, openmmtools for the force field and the
system, deeptime for the MSM). Modules:

* :mod:`slowflow.md.alanine`: Langevin dynamics of alanine dipeptide in implicit solvent
  with OpenMM; bursts from restrained starts spread over the Ramachandran plane, long
  unbiased runs, ensembles from a fixed start; (phi, psi) in radians on [-pi, pi).
* :mod:`slowflow.md.msm`: a Markov state model of (phi, psi) on a grid of the torus with
  deeptime (implied timescales, Chapman-Kolmogorov test, propagation from a start).
* :mod:`slowflow.md.study`: ``slowflow reproduce alanine``: MD, slowflow, its baselines and
  the MSM side by side against the reference MD.
"""

from __future__ import annotations


def require(module: str, extra: str = "md"):
    """Import an optional dependency, or raise a one-line error naming the extra."""
    import importlib

    from ..errors import ConfigError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"this needs the optional package {module.split('.')[0]!r}: "
            f"pip install 'slowflow[{extra}]'"
        ) from None


__all__ = ["require"]
