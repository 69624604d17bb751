"""Classical baselines to compare the learned flow map with.

The Gaussian neural SDE is the ``gaussian`` preset of the flow map (same training, rollout
and files); the averaged equations live with the systems. This package holds the
Kramers-Moyal estimator and Stochastic Force Inference (the latter needs the optional
extra ``pip install 'slowflow[baselines]'``; importing this package never imports it).
"""

from .force_inference import ForceInference, fit_force_inference
from .kramers_moyal import KramersMoyal, fit_kramers_moyal

__all__ = ["ForceInference", "KramersMoyal", "fit_force_inference", "fit_kramers_moyal"]
