"""The built-in systems: registry, declared structure, and the samplers they provide."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slowflow.errors import ConfigError
from slowflow.systems import get_system, list_systems

PAPER = {
    "ex4.1": "skew_product",
    "ex4.2": "exp_ou",
    "ex4.3": "triad",
    "ex4.4": "nonlinear3d",
    "ex4.5": "oscillator",
}


def test_registered_systems_with_aliases():
    names = {s.name for s in list_systems()}
    assert names == set(PAPER.values()) | {"ou", "double_well", "ring"}
    for alias, name in PAPER.items():
        assert get_system(alias).name == name
        assert get_system(alias.upper()).name == name


def test_unknown_system_error_lists_available():
    with pytest.raises(ConfigError, match="unknown system 'nope'; available: skew_product"):
        get_system("nope")


@pytest.mark.parametrize("system", list_systems(), ids=lambda s: s.name)
def test_structure_and_vectorized_evaluation(system):
    rng = np.random.default_rng(0)
    box = np.asarray(system.train_box)
    s = rng.uniform(box[:, 0], box[:, 1], size=(7, system.dim))
    f, g = system.evaluate(s)
    assert f.shape == g.shape == (7, system.dim)
    assert np.isfinite(f).all() and np.isfinite(g).all()
    # components declared noiseless have zero diffusion
    for c, noisy in enumerate(system.noise):
        if not noisy:
            assert np.all(g[:, c] == 0)
    if system.averaged is not None:
        fa, ga = system.averaged.evaluate(s[:, : system.slow_dim])
        assert fa.shape == (7, system.slow_dim)


def test_paper_parameters():
    assert dict(get_system("ex4.1").params) == {"alpha": 1.0, "lam": 2.4, "eps": 0.005}
    assert get_system("ex4.2").x0 == (1.1,)
    assert get_system("ex4.3").params["eps"] ** 2 == pytest.approx(0.001)
    assert dict(get_system("ex4.4").params) == {"s1": 0.3, "s2": 0.3, "s3": 0.1, "eps": 0.001}
    osc = get_system("ex4.5")
    assert osc.noise == (True, True, True) and osc.params["sigma"] == 0.1
    assert [get_system(k).pairs_per_traj for k in PAPER] == [4, 4, 6, 12, 12]
    assert [get_system(k).t_end for k in PAPER] == [4.0, 4.0, 5.0, 8.0, 20.0]


def test_triad_stationary_covariance_solves_lyapunov():
    from slowflow.systems.triad import stationary_cov

    eps, sigma = math.sqrt(0.001), 1.0
    for x in (0.0, 1.0, -2.5):
        cov = stationary_cov(np.array([x]), eps, sigma)[0]
        a = np.array([[-1 / eps**2, x / eps], [x / eps, -2 / eps**2]])
        q = np.eye(2) * (sigma / eps) ** 2
        np.testing.assert_allclose(a @ cov + cov @ a.T + q, 0, atol=1e-9 * np.abs(q).max())
    np.testing.assert_allclose(np.diag(stationary_cov(np.array([0.0]), eps, sigma)[0]), [0.5, 0.25])


@pytest.mark.parametrize("name", ["skew_product", "exp_ou", "nonlinear3d", "oscillator"])
def test_fast_sampler_moments(name):
    """Conditional stationary laws in closed form: mean within 5 standard errors."""
    system = get_system(name)
    x = np.tile(np.asarray(system.x0), (40_000, 1))
    y = system.sample_fast(x, np.random.default_rng(1))
    expected = {
        "skew_product": (0.0, math.sqrt(2.4)),
        "exp_ou": (math.exp(-1.1), 1.0),
        "nonlinear3d": (0.375, 0.1),
        "oscillator": (2.0, 0.1),
    }[name]
    se = expected[1] / math.sqrt(len(y))
    assert abs(y.mean() - expected[0]) < 5 * se
    assert abs(y.std() - expected[1]) < 5 * expected[1] / math.sqrt(2 * len(y))


def test_with_params_rebuilds_averaged():
    sk = get_system("skew_product").with_params(eps=0.05)
    assert sk.eps == 0.05
    b = sk.averaged.params["b"]
    assert b == pytest.approx(2.4 * math.sqrt(0.1))
    with pytest.raises(KeyError):
        get_system("triad").with_params(nope=1.0)


def test_ou_exact_transition():
    ou = get_system("ou")
    mean, cov = ou.exact_transition(np.array([0.0, 1.2]), 1.0, **ou.params)
    np.testing.assert_allclose(mean[:, 0], [1.2 * (1 - math.exp(-1)), 1.2])
    np.testing.assert_allclose(cov[:, 0, 0], 0.09 * (1 - math.exp(-2)) / 2)
