"""The Stochastic Force Inference baseline (SFI package) recovers known drifts and
diffusions from many short bursts, never pairs across bursts or padding, and its rollouts
follow the shape conventions of the Kramers-Moyal baseline."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # what the fit does itself, before JAX loads
pytest.importorskip("SFI")

from slowflow.baselines.force_inference import (  # noqa: E402
    ForceInference,
    _exponents,
    _features,
    fit_force_inference,
)
from slowflow.data import Trajectories, make_pairs  # noqa: E402
from slowflow.errors import ConfigError  # noqa: E402

THETA, MU, SIG, DT = 1.5, 0.3, 0.6, 0.01
SIGMA_OU = SIG**2  # slowflow's Sigma = Cov[increment]/dt = sigma^2 (SFI's D = sigma^2/2)
POINTS = np.array([[-1.0], [-0.5], [0.0], [0.3], [1.0], [1.5]])


def _ou_bursts(n_traj=2000, n_steps=100, seed=0):
    """Exact OU transitions: x' = mu + (x - mu) e^{-theta dt} + s N(0, 1)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_steps + 1, 1))
    x[:, 0, 0] = rng.uniform(-2.0, 2.0, n_traj)
    a = np.exp(-THETA * DT)
    s = SIG * np.sqrt((1 - a * a) / (2 * THETA))
    for k in range(n_steps):
        x[:, k + 1] = MU + (x[:, k] - MU) * a + s * rng.standard_normal((n_traj, 1))
    return Trajectories(x, DT)


def _drift_standard_error(data, x, sigma_diag, order=3):
    """Pointwise standard error of a least-squares drift on monomials of degree <= order:
    Cov[coef] = (Sigma/dt) (B^T B)^-1 over the data's pairs, se(x)^2 = b(x)^T Cov b(x)
    (per component, for a diagonal Sigma)."""
    x0, _ = make_pairs(data)
    exps = _exponents(data.dim, order)
    B = _features(x0, exps)
    b = _features(np.asarray(x, dtype=float), exps)
    q = np.einsum("nf,fg,ng->n", b, np.linalg.inv(B.T @ B), b)
    return np.sqrt(np.outer(q, np.asarray(sigma_diag)) / data.dt)


@pytest.fixture(scope="module")
def ou():
    data = _ou_bursts()
    return data, fit_force_inference(data, order=3, diffusion_order=2)


def test_fi_recovers_ou_drift_and_diffusion(ou):
    """Exact OU bursts (2,000 x 100 steps). Drift tolerance at each point: 4 standard
    errors of the least-squares drift on the cubic basis (computed from these data's pairs,
    ~0.005 at the centre to ~0.03 at the edges) plus the O(dt) discretization gap between
    the Ito regression slope (1 - e^{-theta dt})/dt and theta, times |x - mu| (the bias
    of plain least squares; SFI's trapeze Gram only reduces it). Sigma = 2 D within 5 %:
    the weak-noise estimator's relative standard error here is ~0.3 % (2e5 increments)
    and its O(dt) bias ~theta dt = 1.5 %."""
    data, fi = ou
    assert fi.dim == 1 and fi.dt == DT
    a, s = fi.coefficients(POINTS)
    assert a.shape == (len(POINTS), 1) and s.shape == (len(POINTS), 1, 1)
    truth = -THETA * (POINTS - MU)
    se = _drift_standard_error(data, POINTS, [SIGMA_OU])
    gap = abs(THETA - (1 - np.exp(-THETA * DT)) / DT) * np.abs(POINTS - MU)
    err = np.abs(a - truth)
    assert np.all(err <= 4 * se + gap), (err, 4 * se + gap)
    np.testing.assert_allclose(s[:, 0, 0], SIGMA_OU, rtol=0.05)
    assert fi.info["force_preset"] == "clean" and fi.info["diffusion_M_mode"] == "WeakNoise"


def test_fi_simulate_shapes_and_stationary_law(ou):
    """Shapes and seeding as the Kramers-Moyal baseline; a long rollout (1,000 paths x
    1,500 steps from mu, the first 300 steps = 4.5 relaxation times dropped) has the OU's
    stationary mean mu within 0.03 (the drift's intercept error over theta, ~0.005, plus
    Monte Carlo error ~0.004) and its std sigma/sqrt(2 theta) within 5 % (theta and
    Sigma errors ~1-2 %, Euler's stationary-variance bias theta dt/2 = 0.75 %)."""
    _, fi = ou
    a = fi.simulate([1.5], 20, 50, seed=1)
    assert a.shape == (50, 21, 1) and np.all(a[:, 0] == 1.5) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, fi.simulate([1.5], 20, 50, seed=1))
    starts = np.linspace(-1, 1, 7).reshape(-1, 1)
    assert fi.sampler()(starts, 3, 0).shape == (7, 4, 1)
    assert fi.simulate(starts, 4, substeps=3).shape == (7, 5, 1)
    with pytest.raises(ConfigError):
        fi.simulate([0.0], 3)
    long = fi.simulate([MU], 1500, n_paths=1000, seed=2)[:, 300:, 0]
    assert np.isfinite(long).all()
    assert abs(long.mean() - MU) < 0.03
    np.testing.assert_allclose(long.std(), SIG / np.sqrt(2 * THETA), rtol=0.05)


def test_fi_ragged_bursts_do_not_pair_across_padding(ou):
    """Half of the bursts cut to 40 observations (trailing NaN padding, which the fit fills
    with 0 under a mask): an increment into the padding would be O(1)/dt ~ 100, so any
    leak would wreck the drift; the same 4-standard-error + discretization-gap tolerance
    as the full data, with the standard error from the ragged data's own pairs."""
    data, _ = ou
    x = data.x.copy()
    x[::2, 40:] = np.nan
    ragged = Trajectories(x, DT)
    assert ragged.is_ragged
    fi = fit_force_inference(ragged, order=3, diffusion_order=0)
    a, s = fi.coefficients(POINTS)
    se = _drift_standard_error(ragged, POINTS, [SIGMA_OU])
    gap = abs(THETA - (1 - np.exp(-THETA * DT)) / DT) * np.abs(POINTS - MU)
    err = np.abs(a + THETA * (POINTS - MU))
    assert np.all(err <= 4 * se + gap), (err, 4 * se + gap)
    np.testing.assert_allclose(s[:, 0, 0], SIGMA_OU, rtol=0.05)
    np.testing.assert_allclose(s, np.broadcast_to(s[:1], s.shape), rtol=1e-9)  # constant


def _cubic_drift(x):
    return np.stack([x[:, 0] - x[:, 0] ** 3 + 0.5 * x[:, 1], -x[:, 1] - 0.5 * x[:, 0]], axis=1)


def test_fi_two_dimensional_cubic_drift():
    """2-D, a(x) = (x1 - x1^3 + x2/2, -x2 - x1/2), Sigma = I/2, bursts of 50 steps from
    uniform starts in (-1.5, 1.5)^2, simulated by Euler with 10 substeps. Drift at interior
    points within 4 standard errors of the cubic least squares (computed from these data)
    plus 0.02 for the O(dt) discretization bias (dt |grad a . a|/2 <~ 0.02 here); Sigma
    within 5 % elementwise of I/2 (off-diagonal within 0.025)."""
    rng = np.random.default_rng(3)
    n, steps, sub = 2000, 50, 10
    x = np.empty((n, steps + 1, 2))
    x[:, 0] = rng.uniform(-1.5, 1.5, (n, 2))
    h = DT / sub
    for k in range(steps):
        y = x[:, k]
        for _ in range(sub):
            y = y + _cubic_drift(y) * h + np.sqrt(0.5 * h) * rng.standard_normal(y.shape)
        x[:, k + 1] = y
    data = Trajectories(x, DT)
    fi = fit_force_inference(data, order=3, diffusion_order=2)
    assert fi.dim == 2
    pts = np.array([[0.0, 0.0], [0.8, -0.4], [-0.6, 0.7], [0.5, 0.5], [-0.9, -0.3]])
    a, s = fi.coefficients(pts)
    assert a.shape == (5, 2) and s.shape == (5, 2, 2)
    se = _drift_standard_error(data, pts, [0.5, 0.5])
    err = np.abs(a - _cubic_drift(pts))
    assert np.all(err <= 4 * se + 0.02), (err, 4 * se + 0.02)
    np.testing.assert_allclose(np.diagonal(s, axis1=1, axis2=2), 0.5, rtol=0.05)
    assert np.all(np.abs(s[:, 0, 1]) < 0.025)
    np.testing.assert_allclose(s, np.swapaxes(s, 1, 2))
    r = fi.simulate(pts, 30, seed=0)
    assert r.shape == (5, 31, 2) and np.isfinite(r).all()


def test_fi_simulate_survives_non_psd_diffusion():
    """A hand-made model with Sigma(x) = [[1, 0], [0, -x1]], indefinite for x1 > 0:
    rollouts clip it to its PSD part instead of failing."""
    exps = _exponents(2, 1)  # 1, x2, x1 (degree order; the order does not matter here)
    d_coef = np.zeros((len(exps), 2, 2))
    d_coef[0, 0, 0] = 1.0
    d_coef[[i for i, e in enumerate(exps) if tuple(e) == (1, 0)][0], 1, 1] = -1.0
    fi = ForceInference(
        center=np.zeros(2),
        scale=np.ones(2),
        drift_exponents=exps,
        drift_coef=np.zeros((len(exps), 2)),
        diffusion_exponents=exps,
        diffusion_coef=d_coef,
        dt=0.01,
    )
    assert fi.diffusion([[1.0, 0.0]])[0, 1, 1] == -1.0
    r = fi.simulate(np.array([[1.0, 0.0], [-1.0, 0.0]]), 10)
    assert r.shape == (2, 11, 2) and np.isfinite(r).all()


def test_fi_missing_package_is_a_config_error(monkeypatch, ou):
    monkeypatch.setitem(sys.modules, "SFI", None)  # `import SFI` now raises ImportError
    with pytest.raises(ConfigError) as err:
        fit_force_inference(ou[0])
    assert str(err.value) == (
        "force inference needs the optional package stochasticforceinference: "
        "pip install 'slowflow[baselines]'"
    )


def test_fi_bad_arguments(ou):
    data, _ = ou
    for kw in ({"order": 0}, {"order": 2.5}, {"diffusion_order": -1}, {"preset": "fast"}):
        with pytest.raises(ConfigError):
            fit_force_inference(data, **kw)


def test_importing_the_module_does_not_import_jax():
    code = (
        "import sys, slowflow.baselines.force_inference; "
        "assert 'jax' not in sys.modules and 'SFI' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
