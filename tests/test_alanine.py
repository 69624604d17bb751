"""The molecular example: dihedral geometry, the MSM tools, and the whole pipeline at a tiny
size (skipped cleanly without the ``md`` extra: OpenMM, openmmtools, deeptime)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from slowflow.md.alanine import dihedrals
from slowflow.md.msm import basin_of, histogram, states


def test_dihedral_angles_have_the_iupac_sign_and_range():
    """A quadruple rotated about the b1 axis by theta has dihedral theta (to 1e-12), in
    [-pi, pi), with IUPAC's sign (clockwise looking along b1 is positive)."""
    idx = np.array([[0, 1, 2, 3]])
    for theta in np.linspace(-math.pi, math.pi, 13)[:-1]:
        pos = np.array(
            [
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
                [math.cos(theta), math.sin(theta), 1.0],
            ]
        )
        got = dihedrals(pos, idx)[0]
        assert -math.pi <= got < math.pi
        assert abs((got - theta + math.pi) % (2 * math.pi) - math.pi) < 1e-12, (theta, got)


def test_grid_states_and_basins_cover_the_torus():
    rng = np.random.default_rng(0)
    x = rng.uniform(-math.pi, math.pi, size=(10_000, 2))
    s = states(x, 12)
    assert s.min() >= 0 and s.max() < 144
    np.testing.assert_allclose(histogram(x, 12).sum(), 1.0)
    b = basin_of(np.array([[-1.4, 2.6], [-1.3, -0.7], [1.0, 0.6], [-1.4, -2.9]]))
    assert b.tolist() == [0, 1, 2, 0]  # beta, alpha_R, alpha_L, beta (psi wraps)


def test_msm_recovers_a_known_two_state_timescale():
    """Trajectories of a two-state chain on the torus (two cells, switching with
    probability 0.05 per step): the MSM's slowest implied timescale is -1/log(0.9) = 9.49
    steps, within 10 %."""
    pytest.importorskip("deeptime")
    from slowflow.md.msm import fit_msm

    rng = np.random.default_rng(1)
    runs = []
    for _ in range(200):
        s = np.empty(200, dtype=int)
        s[0] = rng.integers(2)
        flips = rng.random(199) < 0.05
        for k in range(199):
            s[k + 1] = 1 - s[k] if flips[k] else s[k]
        phi = np.where(s == 0, -1.5, 1.5) + 0.1 * rng.standard_normal(200)
        runs.append(np.stack([phi, np.full(200, 0.5)], 1))
    msm = fit_msm(runs, 1, 6)
    assert msm.n_states == 2
    assert abs(msm.timescales(k=1)[0] / (-1 / math.log(0.9)) - 1) < 0.1


def test_observation_step_is_the_smallest_calibrated_or_the_least_flagged():
    """The sweep's choice: the smallest calibrated Delta; when every Delta is flagged, the
    one least beyond check's thresholds (not the coarsest, which the full run once chose:
    2 ps with 6 observations per burst, where 0.1 ps was least miscalibrated)."""
    from slowflow.md.study import choose_delta

    def row(delta, calibrated, disp, bias=0.01):
        return {"delta_ps": delta, "calibrated": calibrated, "dispersion": [disp], "bias": [bias]}

    assert choose_delta([row(0.1, False, 0.3), row(0.5, True, 0.05), row(1, True, 0.04)]) == 0.5
    flagged = [row(0.1, False, 0.37), row(0.5, False, 0.53), row(2, False, 0.69)]
    assert choose_delta(flagged) == 0.1
    assert choose_delta([row(0.1, False, 0.2, bias=0.2), row(0.5, False, 0.3)]) == 0.5


def test_indicator_autocorrelation_by_fft_equals_the_direct_sums():
    """The pooled autocorrelation of 1[label == basin] (here: phi > 0) from FFT lag sums equals the
    direct mean over pairs at every lag (to 1e-12), also for a bootstrap resample of
    rows, and is NaN at lags the trajectories do not reach."""
    from slowflow.md.study import _acf_of_sums, _basin_acf, _lag_sums

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((6, 400, 2)) * 0.3, axis=1)

    def direct(x, max_lag):
        f = (x[..., 0] >= 0).astype(float)
        g = f - f.mean()
        return np.array(
            [np.mean(g[:, : f.shape[1] - k] * g[:, k:]) / f.var() for k in range(max_lag + 1)]
        )

    phi_positive = (x[..., 0] >= 0).astype(int)
    np.testing.assert_allclose(_basin_acf(phi_positive, 1, 150), direct(x, 150), atol=1e-12)
    pick = np.array([0, 0, 3, 5, 2, 2])
    f = (x[..., 0] >= 0).astype(float)
    sums, a, b = _lag_sums(f, 150)
    boot = _acf_of_sums(sums[pick], a[pick], b[pick], f.sum(1)[pick], 400, 150)
    np.testing.assert_allclose(boot, direct(x[pick], 150), atol=1e-12)
    assert np.isnan(_basin_acf(phi_positive[:, :20], 1, 30)[20:]).all()


def test_alanine_pipeline_at_a_tiny_size(tmp_path):
    """reproduce alanine --quick: a few ps of real MD, the Delta sweep, slowflow, the MSM and
    the comparison; every number the report promises is there and the figures exist."""
    for module in ("openmm", "openmmtools", "deeptime"):
        pytest.importorskip(module)
    from slowflow.cli import main

    assert main(["reproduce", "alanine", "--quick", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "alanine"
    m = json.loads((folder / "metrics.json").read_text())
    assert m["md"]["ns"] > 0 and m["md"]["ns_per_day"] > 0
    assert [r["delta_ps"] for r in m["delta_sweep"]] == [0.1, 0.2]
    assert {"slowflow", "MSM"} <= set(m["comparison"])
    for row in m["comparison"].values():
        assert math.isfinite(row["fes_rms_kT"]) and abs(sum(row["populations"].values()) - 1) < 1e-9
    for name in m["figures"]:
        assert (folder / name).stat().st_size > 1000
    assert "| slowflow |" in (folder / "report.md").read_text()
