"""The scalable ring benchmark: registry, generated code at every size, the averaged
equation against the simulator, and the fast variables' conditional law."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from slowflow.simulate import initial_states, simulate_paths
from slowflow.systems import get_system, list_systems
from slowflow.systems.ring import block_sizes, fast_owner, make_ring

SIZES = [(1, 1), (1, 100), (2, 2), (2, 100), (10, 10), (10, 100)]


def _reference_drift(system, s):
    """The ring's drift written independently of the generated code (numpy, (n, d))."""
    p = system.params
    ell = system.slow_dim
    x, y = s[:, :ell], s[:, ell:]
    owner = fast_owner(ell, system.fast_dim)
    ybar = np.stack([y[:, owner == i].mean(axis=1) for i in range(ell)], axis=1)
    lap = np.roll(x, 1, axis=1) - 2 * x + np.roll(x, -1, axis=1)
    fx = p["alpha"] * x - x * ybar + p["c"] * lap
    fy = -(y - x[:, owner] ** 2) / p["eps"]
    return np.concatenate([fx, fy], axis=1)


def test_registry_finds_ring():
    ring = get_system("ring")
    assert ring in list_systems()
    assert (ring.slow_dim, ring.fast_dim) == (4, 40)
    assert ring.averaged is not None and ring.averaged.slow_dim == 4
    assert ring.extra["blocks"] == (10, 10, 10, 10)
    assert ring.eps == 0.001 and ring.pairs_per_traj is not None


@pytest.mark.parametrize(("ell", "n_fast"), SIZES, ids=lambda v: str(v))
def test_factory_sizes_shapes_and_drift(ell, n_fast):
    """Every declared field has the right length, and the generated drift equals an
    independent numpy implementation (to rounding) at random states in the training box."""
    system = make_ring(ell, n_fast)
    d = ell + n_fast
    assert (system.slow_dim, system.fast_dim, system.dim) == (ell, n_fast, d)
    assert len(system.noise) == len(system.train_box) == d
    assert len(system.x0) == ell
    assert sum(block_sizes(ell, n_fast)) == n_fast
    assert max(block_sizes(ell, n_fast)) - min(block_sizes(ell, n_fast)) <= 1
    rng = np.random.default_rng(ell * 1000 + n_fast)
    box = np.asarray(system.train_box)
    s = rng.uniform(box[:, 0], box[:, 1], size=(9, d))
    f, g = system.evaluate(s)
    assert f.shape == g.shape == (9, d)
    np.testing.assert_allclose(f, _reference_drift(system, s), rtol=1e-12, atol=1e-9)
    sy = system.params["sigma_y"] * math.sqrt(2 / system.params["eps"])
    np.testing.assert_allclose(g[:, :ell], system.params["sigma"])
    np.testing.assert_allclose(g[:, ell:], sy)
    y = system.sample_fast(s[:, :ell], rng)
    assert y.shape == (9, n_fast)
    fa, ga = system.averaged.evaluate(s[:, :ell])
    assert fa.shape == ga.shape == (9, ell)


@pytest.mark.parametrize(("ell", "n_fast"), [(1, 3), (3, 5), (10, 100)], ids=lambda v: str(v))
def test_averaged_drift_is_drift_at_fast_mean(ell, n_fast):
    """The averaged drift F(x) is the slow drift with each fast variable at its conditional
    mean x_i^2 (f is affine in y), and there the fast drift vanishes."""
    system = make_ring(ell, n_fast)
    x = np.random.default_rng(5).uniform(-2, 2, size=(11, ell))
    s = np.concatenate([x, x[:, fast_owner(ell, n_fast)] ** 2], axis=1)
    f, _ = system.evaluate(s)
    fa, ga = system.averaged.evaluate(x)
    np.testing.assert_allclose(f[:, :ell], fa, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(f[:, ell:], 0.0, atol=1e-9)
    np.testing.assert_allclose(ga, system.params["sigma"])


def test_fast_sampler_is_the_conditional_stationary_law():
    """y_ij - x_i^2 ~ N(0, sigma_y^2), independent. 4,000 draws per fast variable: mean
    within 5 standard errors (sigma_y / sqrt(n)), std within 5 s.e. (sigma_y / sqrt(2n)),
    KS test against the normal law at alpha = 1e-3, and every pairwise correlation below
    5 / sqrt(n) (with 10 variables: 45 pairs, so 5 s.e. keeps false alarms negligible)."""
    system = make_ring(3, 10)  # blocks of 4, 3, 3
    n = 4000
    x = np.random.default_rng(7).uniform(-2, 2, size=(n, 3))
    y = system.sample_fast(x, np.random.default_rng(8))
    r = y - x[:, fast_owner(3, 10)] ** 2
    sy = system.params["sigma_y"]
    assert np.all(np.abs(r.mean(axis=0)) < 5 * sy / math.sqrt(n))
    assert np.all(np.abs(r.std(axis=0) - sy) < 5 * sy / math.sqrt(2 * n))
    assert stats.kstest(r.ravel() / sy, "norm").pvalue > 1e-3
    corr = np.corrcoef(r.T)[np.triu_indices(10, 1)]
    assert np.all(np.abs(corr) < 5 / math.sqrt(n))


@pytest.fixture(scope="module")
def ring_runs():
    """The ring with ell = 3 (a real ring: two distinct neighbours) and 5 fast variables
    (uneven blocks 2, 2, 1), 3,000 paths to t = 0.5 at dt = 1e-4 from the system's start
    with fast variables from the sampler, full state kept; and its averaged equation from
    the same slow start."""
    system = make_ring(3, 5)
    n = 3000
    s0 = initial_states(system, system.x0, n, np.random.default_rng(0))
    full = simulate_paths(system, s0, 50, 0.01, 100, seed=1, keep="all")
    avg = simulate_paths(system.averaged, s0[:, :3], 50, 0.01, 100, seed=2)
    return system, full, avg


def _std_se(v):
    """Standard error of the sample std (delta method with the sample fourth moment)."""
    c = v - v.mean(axis=0)
    m2, m4 = (c**2).mean(axis=0), (c**4).mean(axis=0)
    return np.sqrt(np.maximum(m4 - m2**2, 0) / (4 * len(v) * m2))


def test_slow_statistics_follow_the_averaged_equation(ring_runs):
    """Mean and std of each slow component at t = 0.25 and 0.5: the full system against
    the averaged equation, two independent 3,000-path ensembles.

    Tolerance: 4 standard errors of the difference (12 checks; a false alarm has
    probability about 1e-3 for a new seed) plus 0.005 for the O(eps) averaging error
    (eps = 0.001; its largest terms, the lag of y behind x^2 and the central-limit
    diffusion 2 eps sigma_y^2 x^2 / m, change the drift and the diffusion by a few times
    1e-3 over |x| <= 2; a 40,000-path run showed differences below 0.002). Both ensembles
    use the same Euler-Maruyama step, so the discretisation error largely cancels. Scale of
    what this resolves: at t = 0.5 the tolerances come to 0.03-0.04 (means) and
    0.02-0.03 (stds); changing c from 0.5 to 0.6 moves the means by 0.03-0.04 and sigma
    from 0.5 to 0.55 the stds by 0.02-0.03, so coefficient errors of 10-20 % are at the
    edge of resolution, while a wrong sign or a missing cubic damping is off by far more."""
    system, full, avg = ring_runs
    ell = system.slow_dim
    assert full.shape == (3000, 51, 3 + 5) and avg.shape == (3000, 51, 3)
    for k in (25, 50):
        a, b = full[:, k, :ell], avg[:, k]
        se_mean = np.sqrt(a.var(axis=0) / len(a) + b.var(axis=0) / len(b))
        np.testing.assert_array_less(np.abs(a.mean(axis=0) - b.mean(axis=0)), 4 * se_mean + 0.005)
        se_std = np.hypot(_std_se(a), _std_se(b))
        np.testing.assert_array_less(np.abs(a.std(axis=0) - b.std(axis=0)), 4 * se_std + 0.005)
    # the ensembles have moved away from the start: the comparison is not trivially met
    assert np.all(np.abs(full[:, 50, :ell].mean(axis=0) - np.asarray(system.x0)) > 0.2)


def test_simulated_fast_variables_follow_the_sampler_law(ring_runs):
    """At t = 0.5 (500 eps after the start) the simulated fast variables, given the
    simulated slow ones, have the sampler's law y_ij - x_i^2 ~ N(0, v).

    v is the stationary variance of the Euler-Maruyama recursion at r = dt/eps = 0.1,
    sigma_y^2 * 2 / (2 - r), i.e. 2.6 % above the continuous sigma_y^2 in the std (4 s.e.
    here, so the check resolves it). Tolerance per fast variable (3,000 paths): mean
    within 4 s.e. + 0.01 and std within 4 s.e. + 0.005, the additions bounding the lag of
    y behind the moving x_i^2 (eps |d(x^2)/dt| <= a few 1e-3). A sampler attached to the
    wrong slow variable would be off by O(1)."""
    system, full, _ = ring_runs
    ell, n_fast = system.slow_dim, system.fast_dim
    x, y = full[:, 50, :ell], full[:, 50, ell:]
    r = y - x[:, fast_owner(ell, n_fast)] ** 2
    p = system.params
    ratio = (0.01 / 100) / p["eps"]
    sd = p["sigma_y"] * math.sqrt(2 / (2 - ratio))
    n = len(r)
    np.testing.assert_array_less(np.abs(r.mean(axis=0)), 4 * sd / math.sqrt(n) + 0.01)
    np.testing.assert_array_less(np.abs(r.std(axis=0) - sd), 4 * sd / math.sqrt(2 * n) + 0.005)
    # the sampler draws from the same law (up to the EM variance factor)
    y_s = system.sample_fast(x, np.random.default_rng(3))
    r_s = (y_s - x[:, fast_owner(ell, n_fast)] ** 2) * math.sqrt(2 / (2 - ratio))
    assert stats.ks_2samp(r.ravel(), r_s.ravel()).pvalue > 1e-3


def test_with_params_and_bad_sizes():
    ring = make_ring(3, 7).with_params(alpha=2.0, eps=0.01)
    assert ring.averaged.params["alpha"] == 2.0 and ring.eps == 0.01
    assert ring.averaged.slow_dim == 3 and ring.name == "ring_l3_n7"
    with pytest.raises(ValueError, match="n_fast"):
        make_ring(3, 2)
    with pytest.raises(ValueError, match="ell"):
        make_ring(0, 5)
    with pytest.raises(KeyError):
        make_ring(2, 2, gamma=1.0)


@pytest.mark.slow
def test_compiled_kernel_at_largest_size_equals_numpy_drift():
    """ell = 10, N = 100 (d = 110): the numba kernel compiles, and one deterministic
    Euler step (sigma = sigma_y = 0) equals s0 + dt f(s0) from the numpy evaluation."""
    system = make_ring(10, 100, sigma=0.0, sigma_y=0.0)
    box = np.asarray(system.train_box)
    s0 = np.random.default_rng(0).uniform(box[:, 0], box[:, 1], size=(64, system.dim))
    out = simulate_paths(system, s0, 1, 1e-4, 1, keep="all")
    assert out.shape == (64, 2, 110)
    f, _ = system.evaluate(s0)
    np.testing.assert_allclose(out[:, 1], s0 + 1e-4 * f, rtol=1e-12, atol=1e-12)
