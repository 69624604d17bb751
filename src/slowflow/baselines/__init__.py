"""Classical baselines to compare the learned flow map with.

The Gaussian neural SDE is the ``gaussian`` preset of the flow map (same training, rollout
and files); the averaged equations live with the systems. This package holds the
Kramers-Moyal estimator.
"""

from .kramers_moyal import KramersMoyal, fit_kramers_moyal

__all__ = ["KramersMoyal", "fit_kramers_moyal"]
