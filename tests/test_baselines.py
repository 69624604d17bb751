"""The Kramers-Moyal baseline recovers a known drift and diffusion; its rollouts and
sampler follow the shape conventions."""

from __future__ import annotations

import numpy as np
import pytest

from slowflow.baselines import fit_kramers_moyal
from slowflow.errors import ConfigError
from slowflow.simulate import simulate_bursts


@pytest.fixture(scope="module")
def ou():
    return simulate_bursts("ou", n_traj=2000, t_end=1.0, seed=6)


def test_km_recovers_ou_drift_and_diffusion(ou):
    """OU: a(x) = 1.2 - x, Sigma = 0.09. With 2e5 pairs and Silverman's bandwidth (~0.05)
    the drift's standard error at the grid points is about 0.03 (increment std 0.03 over
    ~1e4 local pairs, divided by Delta = 0.01); the tolerance 0.12 is 4 of them. The
    diffusion's relative standard error is ~1.5 %, plus the O(Delta) bias of the one-step
    estimator (theta Delta = 1 %): tolerance 6 %."""
    km = fit_kramers_moyal(ou)
    x = np.array([[0.3], [0.8], [1.2], [1.7], [2.2]])
    a, s = km.coefficients(x)
    np.testing.assert_allclose(a[:, 0], 1.2 - x[:, 0], atol=0.12)
    np.testing.assert_allclose(s[:, 0, 0], 0.09, rtol=0.06)


def test_km_rollout_shapes_and_seed(ou):
    km = fit_kramers_moyal(ou)
    a = km.simulate([1.5], 20, 50, seed=1)
    assert a.shape == (50, 21, 1) and np.all(a[:, 0] == 1.5)
    np.testing.assert_array_equal(a, km.simulate([1.5], 20, 50, seed=1))
    starts = np.linspace(0, 2, 7).reshape(-1, 1)
    assert km.sampler()(starts, 3, 0).shape == (7, 4, 1)


def test_km_refuses_three_dimensions():
    data = simulate_bursts("ou", n_traj=5, t_end=0.1, seed=0)
    from slowflow.data import Trajectories

    with pytest.raises(ConfigError, match="d <= 2"):
        fit_kramers_moyal(Trajectories(x=np.repeat(data.x, 3, axis=2), dt=data.dt))
