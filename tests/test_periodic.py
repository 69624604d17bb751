"""Periodic slow variables (angles): declaration, windows, the circle's W1, models, errors.

Test process: a diffusion on the circle, d theta = (1 - 0.8 sin theta) dt + 0.4 dW, wrapped
into [-pi, pi); it crosses the cut at +-pi all the time (the drift is positive everywhere).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import slowflow as sf
from slowflow.cli import main
from slowflow.data import (
    Trajectories,
    declare_periodic,
    load_trajectories,
    make_windows,
    periodic_ranges,
    save_trajectories,
    wrap,
)
from slowflow.errors import ConfigError, DataError
from slowflow.evaluate.calibration import check_calibration
from slowflow.evaluate.metrics import wasserstein1, wasserstein1_circle
from slowflow.model.periods import with_model_periods

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DT = 0.01


def _circle(n: int, n_obs: int, seed: int) -> Trajectories:
    rng = np.random.default_rng(seed)
    th = np.empty((n, n_obs, 1))
    th[:, 0, 0] = rng.uniform(-np.pi, np.pi, n)
    for k in range(n_obs - 1):
        a = 1.0 - 0.8 * np.sin(th[:, k, 0])
        th[:, k + 1, 0] = th[:, k, 0] + DT * a + 0.4 * np.sqrt(DT) * rng.standard_normal(n)
    data = Trajectories(x=wrap(th, -np.pi, np.pi), dt=DT, names=("phi",))
    return declare_periodic(data, ["phi"])


@pytest.fixture(scope="module")
def circle():
    return _circle(2000, 51, seed=0)


@pytest.fixture(scope="module")
def circle_model(circle, torch_one_thread):
    return sf.fit(circle, progress=False)


def test_declaration_is_checked_and_kept_in_the_file(tmp_path):
    x = np.array([[[0.0, 1.0], [3.0, 2.0], [-3.1, 2.5]]])
    data = Trajectories(x=x, dt=DT, names=("phi", "r"))
    with pytest.raises(DataError, match=r"'theta' is neither a variable name") as e:
        declare_periodic(data, ["theta"], "f.npz")
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match=r"f\.npz: variable 'r' is declared periodic .* 2\.5"):
        declare_periodic(data, ["r"], "f.npz", (0.0, 2.0))
    both = declare_periodic(data, ["0"], "f.npz")
    assert periodic_ranges(both) == [(-math.pi, math.pi), None]
    save_trajectories(both, tmp_path / "p.npz")
    assert periodic_ranges(load_trajectories(tmp_path / "p.npz")) == [(-math.pi, math.pi), None]


def test_windows_take_periodic_increments_on_the_circle():
    """A step from 3.1 to -3.1 is +0.083 on the circle: the target is x_n + 0.083."""
    x = np.array([[[3.0], [3.1], [-3.1], [-3.0]]])
    data = declare_periodic(Trajectories(x=x, dt=DT), ["x1"])
    h, t, _ = make_windows(data)
    np.testing.assert_allclose((t - h[:, 0])[:, 0], [0.1, 2 * np.pi - 6.2, 0.1], atol=1e-12)


def test_circle_w1_is_exact_and_sees_the_cut():
    """Against a brute-force integral (grid of 200,000 points, 401 shifts: agreement to
    1e-3), invariant under a rotation, equal to the line's W1 for narrow laws far from the
    cut, and small for two laws on either side of the cut."""
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 2 * np.pi, 200_001)[:-1]
    for _ in range(3):
        a, b = rng.uniform(-np.pi, np.pi, 7), rng.uniform(-np.pi, np.pi, 5)
        fa = (np.mod(a, 2 * np.pi)[None] <= grid[:, None]).mean(1)
        fb = (np.mod(b, 2 * np.pi)[None] <= grid[:, None]).mean(1)
        dd = fa - fb
        brute = min(
            np.abs(dd - s).sum() * 2 * np.pi / grid.size
            for s in np.linspace(dd.min(), dd.max(), 401)
        )
        assert abs(wasserstein1_circle(a, b) - brute) < 1e-3
        shifted = wasserstein1_circle(wrap(a + 1.0, -np.pi, np.pi), wrap(b + 1.0, -np.pi, np.pi))
        assert abs(shifted - wasserstein1_circle(a, b)) < 1e-9
    a, b = rng.normal(0, 0.2, 1000), rng.normal(0.1, 0.2, 900)
    assert abs(wasserstein1_circle(a, b) - wasserstein1(a, b)) < 1e-9
    near = wasserstein1_circle(np.full(10, 3.1), np.full(10, -3.1))
    assert abs(near - (2 * np.pi - 6.2)) < 1e-9


def test_map_on_the_circle_recovers_the_drift_and_stays_in_range(circle_model):
    """The drift 1 - 0.8 sin(theta) within 4 reported standard errors plus 0.05 (the exact
    one-step rate differs from the SDE's drift by O(Delta)) at 5 angles, the cut included;
    the diffusion 0.16 within 5 %; 500-step rollouts stay in [-pi, pi)."""
    m = circle_model
    assert m.periodic == (0,)
    pts = np.array([[-3.1], [-2.0], [0.0], [1.5], [3.1]])
    dd = sf.drift_diffusion(m, pts, n_samples=20_000, seed=0)
    true = 1.0 - 0.8 * np.sin(pts)
    assert np.all(np.abs(dd.drift - true) < 4 * dd.drift_se + 0.05), (dd.drift, true)
    assert np.all(np.abs(dd.diffusion[:, 0, 0] / 0.16 - 1) < 0.05), dd.diffusion
    p = sf.predict(m, x0=[3.0], n_steps=500, n_paths=500, seed=1)
    assert p.min() >= -np.pi and p.max() < np.pi
    with pytest.raises(ConfigError, match="periodic on"):
        sf.predict(m, x0=[4.0], n_steps=2, n_paths=2)


def test_kramers_moyal_on_the_circle(circle):
    from slowflow.baselines import fit_kramers_moyal

    km = fit_kramers_moyal(circle)
    a, s = km.coefficients(np.array([[-3.1], [0.0], [3.1]]))
    assert np.all(np.abs(a[:, 0] - (1 - 0.8 * np.sin([-3.1, 0.0, 3.1]))) < 0.15), a
    assert np.allclose(s[:, 0, 0], 0.16, rtol=0.1), s
    p = km.simulate([3.0], 300, 200, seed=0)
    assert p.min() >= -np.pi and p.max() < np.pi


def test_check_scores_angles_on_the_circle_and_refuses_other_ranges(circle, circle_model):
    """The right model is calibrated on held-out circle data (whose paths cross the cut);
    held-out data with no declaration take the model's; another range is refused."""
    held = _circle(1000, 51, seed=5)  # starts from many bursts: the verdict's SEs hold
    res = check_calibration(circle_model, held, max_lead=10, n_starts=2000, n_members=50)
    assert res.calibrated, res.summary()
    plain = Trajectories(x=held.x, dt=DT, names=("phi",))
    assert periodic_ranges(with_model_periods(plain, circle_model, "h.npz")) == [
        (-math.pi, math.pi)
    ]
    shifted = declare_periodic(plain, ["phi"], "h.npz", (-4.0, 4.0))
    with pytest.raises(DataError, match=r"h\.npz: variable 0 is periodic on \[-4, 4\]"):
        with_model_periods(shifted, circle_model, "h.npz")


def test_cli_fit_periodic(tmp_path, capsys):
    data = _circle(300, 21, seed=2)
    save_trajectories(Trajectories(x=data.x, dt=DT, names=("phi",)), tmp_path / "f.npz")
    out = str(tmp_path / "m.pt")
    assert main(["fit", str(tmp_path / "f.npz"), "--periodic", "phi", "--out", out]) == 0
    assert sf.load_model(out).periodic == (0,)
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "f.npz"), "--periodic", "psi", "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert "'psi' is neither a variable name" in err and "\n" not in err
    big = Trajectories(x=data.x * 2.0, dt=DT, names=("phi",))
    save_trajectories(big, tmp_path / "g.npz")
    assert main(["fit", str(tmp_path / "g.npz"), "--periodic", "0", "--out", out]) == 2
    assert "declared periodic on [-3.14159, 3.14159]" in capsys.readouterr().err
