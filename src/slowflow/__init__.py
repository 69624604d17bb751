"""slowflow: learn the slow dynamics of multiscale stochastic systems from data."""

from __future__ import annotations

__version__ = "0.1.0"
