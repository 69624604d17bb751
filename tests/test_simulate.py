"""Ground-truth simulator: exact laws, the paper's reference statistics, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from slowflow.errors import ConfigError
from slowflow.simulate import simulate_bursts, simulate_ensemble, simulate_paths
from slowflow.systems import get_system


def _ou_exact_cdf(x0, h):
    ou = get_system("ou")
    mean, cov = ou.exact_transition(np.array([x0]), h, **ou.params)
    return stats.norm(mean[0, 0], math.sqrt(cov[0, 0, 0])).cdf


def test_ou_transition_matches_exact_law_ks():
    """KS test of 20,000 EM paths (dt = 1e-4) against the exact Gaussian transition.

    alpha = 0.001 with a fixed seed. The EM bias of the mean and variance at dt = 1e-4 is
    O(1e-4) relative, far below the KS resolution (~1/sqrt(n) = 0.007)."""
    h = 0.5
    out = simulate_paths("ou", np.full((20_000, 1), 0.3), 50, 0.01, 100, seed=11)
    assert out.shape == (20_000, 51, 1)
    assert np.all(out[:, 0, 0] == 0.3)
    p = stats.kstest(out[:, -1, 0], _ou_exact_cdf(0.3, h)).pvalue
    assert p > 1e-3
    # the same test has power: a law shifted by 2 % of a std is rejected
    shifted = stats.kstest(out[:, -1, 0], _ou_exact_cdf(0.3, h * 1.1)).pvalue
    assert shifted < 1e-3


def test_triad_matches_digest_section7_and_averaged_law():
    """Slow statistics at t = 1, 3, 5 from x0 = 1 (4,000 paths) against the digest's
    10,000-path reference (section 7). Tolerance: 4 combined standard errors of the two
    Monte-Carlo estimates (mean: s/sqrt(n); std: s/sqrt(2n))."""
    digest = {1: (0.614, 0.482), 3: (0.219, 0.582), 5: (0.075, 0.599)}
    data = simulate_ensemble("triad", x0=[1.0], n_paths=4000, t_end=5.0, seed=3)
    assert data.x.shape == (4000, 501, 1)
    for t, (m_ref, s_ref) in digest.items():
        v = data.x[:, round(t / 0.01), 0]
        se_m = s_ref * math.sqrt(1 / 4000 + 1 / 10_000)
        se_s = s_ref * math.sqrt(1 / 8000 + 1 / 20_000)
        assert abs(v.mean() - m_ref) < 4 * se_m, (t, v.mean(), m_ref)
        assert abs(v.std(ddof=1) - s_ref) < 4 * se_s, (t, v.std(), s_ref)
        # averaged OU law: mean e^{-t/2}, std sqrt((1 - e^{-t})/3); EM at dt = 1e-4 inflates
        # the slow std by about 4 % (digest section 7), so allow 4 SE + 6 % on the std.
        assert abs(v.mean() - math.exp(-t / 2)) < 4 * v.std() / math.sqrt(4000)
        s_avg = math.sqrt((1 - math.exp(-t)) / 3)
        assert abs(v.std() - s_avg) < 4 * s_avg / math.sqrt(8000) + 0.06 * s_avg


def test_exp_ou_plateau():
    """The mean settles at x* = 1 + W(1/e) = 1.2785 (digest 3.2). At t = 4 the averaged
    ODE is within 1e-3 of x*; the standard error of 2,000 paths is about 6e-4."""
    from scipy.special import lambertw

    x_star = 1 + float(np.real(lambertw(1 / math.e)))
    data = simulate_ensemble("exp_ou", n_paths=2000, t_end=4.0, seed=5)
    assert data.x[:, 0, 0] == pytest.approx(1.1)
    assert abs(data.x[:, -1, 0].mean() - x_star) < 0.005
    assert 0.01 < data.x[:, -1, 0].std() < 0.05  # the CLT band of width ~0.028


def test_seed_determinism_and_batch_independence():
    s0 = np.random.default_rng(0).uniform(-1, 1, size=(300, 3))
    a = simulate_paths("triad", s0, 3, 0.01, 20, seed=7)
    b = simulate_paths("triad", s0, 3, 0.01, 20, seed=7)
    c = simulate_paths("triad", s0, 3, 0.01, 20, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # a path's noise depends only on the seed and its index, not on how many paths run
    d = simulate_paths("triad", s0[:100], 3, 0.01, 20, seed=7)
    np.testing.assert_array_equal(a[:100], d)


def test_bursts_shape_box_and_meta():
    data = simulate_bursts("ex4.4", n_traj=50, t_end=0.1, seed=1, keep_fast=True)
    assert data.x.shape == (50, 11, 3)
    assert data.dt == pytest.approx(0.01)
    box = np.asarray(get_system("ex4.4").train_box)
    assert np.all((data.x[:, 0] >= box[:, 0]) & (data.x[:, 0] <= box[:, 1]))
    assert data.meta["system"] == "nonlinear3d" and data.meta["seed"] == 1
    slow = simulate_bursts("ex4.4", n_traj=50, t_end=0.1, seed=1)
    np.testing.assert_array_equal(slow.x, data.x[:, :, :2])


def test_bad_arguments():
    with pytest.raises(ConfigError, match="x0 has 1 components"):
        simulate_ensemble("oscillator", x0=[1.0], n_paths=5, t_end=0.1)
    with pytest.raises(ConfigError, match="not a whole number"):
        simulate_bursts("ou", n_traj=5, t_end=0.015)
    with pytest.raises(ConfigError, match="n_traj must be >= 1"):
        simulate_bursts("ou", n_traj=0, t_end=0.1)
    with pytest.raises(ConfigError, match="substeps must be >= 1"):
        simulate_bursts("ou", n_traj=2, t_end=0.1, substeps=0)
