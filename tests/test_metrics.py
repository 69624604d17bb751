"""Tests of slowflow.evaluate.metrics against known answers.

Statistical tests are seeded (so they are deterministic); each tolerance is stated in units of
the relevant standard error (SE), chosen so that a correct implementation would fail for fewer
than about 1 in 10^4 seeds, while the errors the test guards against exceed it by far.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy import integrate, stats

from slowflow.evaluate.metrics import (
    autocorrelation,
    autocorrelation_error,
    crps_ensemble,
    energy_distance,
    energy_score,
    gaussian_crps,
    histograms,
    joint_report,
    moment_errors,
    pit_histogram,
    pit_values,
    sliced_w1,
    to_jsonable,
    w1_marginals,
    w1_report,
    wasserstein1,
)


def _scaled_ensemble(rng: np.random.Generator, n: int, n_time: int = 51, d: int = 2) -> np.ndarray:
    """Paths x[p, t] = sqrt(t) * z[p, t] (independent z): every path starts at 0."""
    return rng.standard_normal((n, n_time, d)) * np.sqrt(np.arange(n_time))[None, :, None]


def _ar1(rng: np.random.Generator, n: int, n_time: int, d: int, phi: float) -> np.ndarray:
    """Stationary AR(1) ensemble x_{t+1} = phi x_t + sqrt(1 - phi^2) eps_t, x_0 ~ N(0, 1)."""
    x = np.empty((n, n_time, d))
    x[:, 0] = rng.standard_normal((n, d))
    eps = rng.standard_normal((n, n_time - 1, d)) * math.sqrt(1.0 - phi**2)
    for t in range(n_time - 1):
        x[:, t + 1] = phi * x[:, t] + eps[:, t]
    return x


# ----------------------------------------------------------------------------- moments


def test_moment_errors_exact_on_constructed_arrays() -> None:
    # ref at step 1 holds 1, 2, 3, 4 (mean 2.5, std sqrt(5/3)); step 0 is constant 7.
    ref = np.zeros((4, 2, 2))
    ref[:, 0, :] = 7.0
    ref[:, 1, 0] = [1.0, 2.0, 3.0, 4.0]
    ref[:, 1, 1] = [4.0, 3.0, 2.0, 1.0]
    pred = np.concatenate([2.0 * ref + 1.0, 2.0 * ref + 1.0])  # 8 paths: mean 2m+1, std 2s
    out = moment_errors(pred, ref)
    s = math.sqrt(5.0 / 3.0)
    np.testing.assert_allclose(out["mean_error"], [[8.0, 8.0], [3.5, 3.5]], rtol=1e-14)
    # pred duplicates each value: ddof=1 std of the doubled sample is 2 s sqrt(6/7)
    std_pred = 2.0 * s * math.sqrt(6.0 / 7.0)
    np.testing.assert_allclose(out["std_error"], [[0, 0], [std_pred - s] * 2], atol=1e-14)
    np.testing.assert_allclose(out["std_ref"][1], [s, s], rtol=1e-14)
    # the relative error is undefined at the constant step 0 and defined at step 1
    assert np.isnan(out["rel_std_error"][0]).all()
    np.testing.assert_allclose(out["rel_std_error"][1], (std_pred - s) / s, rtol=1e-13)
    np.testing.assert_allclose(out["mean_abs_mean_error"], [5.75, 5.75], rtol=1e-14)
    np.testing.assert_allclose(out["mean_abs_std_error"], [(std_pred - s) / 2] * 2, rtol=1e-13)
    np.testing.assert_allclose(out["mean_abs_rel_std_error"], (std_pred - s) / s, rtol=1e-13)
    for key in ("mean_error", "std_error", "rel_std_error"):
        assert out[key].shape == (2, 2)


def test_moment_errors_zero_for_identical_ensembles() -> None:
    x = np.random.default_rng(0).standard_normal((30, 5, 3))
    out = moment_errors(x, x.astype(np.float32).astype(np.float64))
    assert np.abs(out["mean_error"]).max() < 1e-6
    assert out["mean_abs_std_error"].shape == (3,)


# ----------------------------------------------------------------------------- 1-D W1


@pytest.mark.parametrize(("na", "nb"), [(1, 1), (1, 9), (7, 11), (50, 50), (301, 17), (64, 48)])
def test_wasserstein1_matches_scipy(na: int, nb: int) -> None:
    rng = np.random.default_rng(na * 1000 + nb)
    a = rng.standard_normal((na, 4)) * 3.0
    b = rng.standard_normal((nb, 4)) + 0.5
    b[: nb // 2, 0] = np.round(b[: nb // 2, 0])  # ties within b ...
    a[: na // 2, 0] = np.round(a[: na // 2, 0])  # ... and between a and b
    got = wasserstein1(a, b)
    want = [stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(4)]
    # exact algorithms, so only rounding differs
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(wasserstein1(b, a), got, rtol=0, atol=1e-12)  # symmetric


def test_wasserstein1_scalar_and_multi_axis() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(13), rng.standard_normal(8)
    got = wasserstein1(a, b)
    assert isinstance(got, float)
    assert got == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-12)
    a3, b3 = rng.standard_normal((13, 3, 2)), rng.standard_normal((8, 3, 2))
    out = wasserstein1(a3, b3)
    assert out.shape == (3, 2)
    assert out[2, 1] == pytest.approx(stats.wasserstein_distance(a3[:, 2, 1], b3[:, 2, 1]))


def test_wasserstein1_gaussian_shift() -> None:
    # W1(N(0,1), N(mu,1)) = |mu|. With n = 20000 per sample the difference of the sample means
    # has SE sqrt(2/n) = 0.01, and the shape-mismatch part of the empirical W1 is of the same
    # order; tolerance 0.05 is 5 SE. W1 >= |mean(a) - mean(b)| holds exactly.
    rng = np.random.default_rng(42)
    n, mu = 20_000, 0.7
    a = rng.standard_normal(n)
    b = mu + rng.standard_normal(n)
    w = wasserstein1(a, b)
    assert abs(w - mu) < 0.05
    assert w >= abs(a.mean() - b.mean()) - 1e-12


def test_w1_marginals_shape_and_values() -> None:
    rng = np.random.default_rng(5)
    p, r = rng.standard_normal((20, 4, 3)), rng.standard_normal((9, 4, 3))
    out = w1_marginals(p, r)
    assert out.shape == (4, 3)
    assert out[3, 2] == pytest.approx(stats.wasserstein_distance(p[:, 3, 2], r[:, 3, 2]))


def test_w1_report_same_law_ratio_near_one() -> None:
    # pred, A and B are independent ensembles of one law. Over 200 seeded replicates of this
    # exact setting the ratio of time averages had mean 1.00 and SD 0.067; tolerance 0.3 is
    # about 4.5 SD. A biased model (shift 0.5 at every step) gives a ratio far above 1.
    rng = np.random.default_rng(7)
    pred, a, b = (_scaled_ensemble(rng, 1000) for _ in range(3))
    rep = w1_report(pred, a, b, dt=0.1, times=[0.0, 1.04, 5.0])
    assert rep["time_avg_start_index"] == 1  # step 0: all paths at 0, both distances 0
    assert rep["w1"].shape == rep["floor"].shape == rep["ratio_per_step"].shape == (51, 2)
    np.testing.assert_allclose(rep["ratio_time_avg"], 1.0, atol=0.3)
    np.testing.assert_allclose(
        rep["ratio_time_avg"], rep["w1"][1:].mean(0) / rep["floor"][1:].mean(0), rtol=1e-14
    )
    assert rep["step_indices"].tolist() == [0, 10, 50]
    np.testing.assert_allclose(rep["times_actual"], [0.0, 1.0, 5.0])
    np.testing.assert_array_equal(rep["w1_at_times"], rep["w1"][[0, 10, 50]])
    assert np.isnan(rep["ratio_at_times"][0]).all()  # 0 / 0 at t = 0
    biased = w1_report(pred + 0.5, a, b, dt=0.1)
    assert (biased["ratio_time_avg"] > 1.5).all()  # about 2 here, > 7 SD above 1
    text = json.dumps(to_jsonable(rep), allow_nan=False)
    assert json.loads(text)["ratio_per_step"][0] == [None, None]


def test_w1_report_bad_times_and_dt() -> None:
    x = np.zeros((3, 11, 1))
    with pytest.raises(ValueError, match="times"):
        w1_report(x, x, x, dt=0.1, times=[1.2])
    with pytest.raises(ValueError, match="dt"):
        w1_report(x, x, x, dt=0.0)


# ----------------------------------------------------------------------------- joint distances


def test_energy_distance_same_law_and_shift() -> None:
    # For n = 1000 points per sample in d = 2 the U-statistic has SD of order 1/n ~ 1e-3 under
    # equal laws, so |D^2| < 0.02 is a wide margin; a unit shift gives D^2 ~ 0.4 >> 0.1.
    rng = np.random.default_rng(11)
    a, b = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 2))
    assert abs(energy_distance(a, b)) < 0.02
    assert energy_distance(a, b + [1.0, 0.0]) > 0.1


def test_energy_distance_matches_scipy_v_statistic() -> None:
    # scipy returns sqrt of the V-statistic version; ours uses U-statistics for the within-sample
    # terms: D2_ours = D2_scipy + sum_w (V_w - U_w) with V_w = U_w (n - 1) / n. Exact identity.
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(40), 0.3 + rng.standard_normal(25)

    def u_within(x: np.ndarray) -> float:
        n = x.size
        return float(np.abs(x[:, None] - x[None, :]).sum() / (n * (n - 1)))

    ua, ub = u_within(a), u_within(b)
    want = stats.energy_distance(a, b) ** 2 - ua / a.size - ub / b.size
    assert energy_distance(a, b) == pytest.approx(want, abs=1e-12)


def test_energy_distance_subsampling_is_seeded() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((300, 3)), rng.standard_normal((300, 3))
    e1 = energy_distance(a, b, max_n=100, seed=5)
    assert e1 == energy_distance(a, b, max_n=100, seed=5)
    assert e1 != energy_distance(a, b, max_n=100, seed=6)


def test_sliced_w1_reduces_to_1d_w1() -> None:
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((37, 1)), 2.0 + rng.standard_normal((23, 1))
    # in d = 1 every direction is +-1 and W1 is invariant under x -> -x: exact up to rounding
    assert sliced_w1(a, b, n_projections=16) == pytest.approx(wasserstein1(a[:, 0], b[:, 0]))
    assert sliced_w1(a[:, 0], b[:, 0]) == pytest.approx(wasserstein1(a[:, 0], b[:, 0]))


def test_joint_report_keys_and_floor() -> None:
    rng = np.random.default_rng(9)
    pred, a, b = (_scaled_ensemble(rng, 300, n_time=6) for _ in range(3))
    rep = joint_report(pred + 1.0, a, b, [1, -1], max_n=300, n_projections=32)
    assert rep["step_indices"].tolist() == [1, 5]
    for key in ("energy", "energy_floor", "sliced_w1", "sliced_w1_floor"):
        assert rep[key].shape == (2,)
    # a unit shift in both components is far above the 300-sample noise floor
    assert (rep["sliced_w1_ratio"] > 2.0).all()
    assert (rep["energy"] > rep["energy_floor"]).all()
    json.dumps(to_jsonable(rep), allow_nan=False)


# ----------------------------------------------------------------------------- autocorrelation


def test_autocorrelation_ar1() -> None:
    # Pooled estimate over N = 1000 paths x ~200 start times of an AR(1) with phi = 0.8: the
    # SE of rho(lag) is about sqrt((1 + phi^2) / (1 - phi^2) / (N T)) ~ 0.005; tolerance 0.03
    # is 6 SE (the O(1/N) bias of per-step centring is negligible).
    phi = 0.8
    x = _ar1(np.random.default_rng(12), 1000, 201, 2, phi)
    acf = autocorrelation(x, 10)
    assert acf.shape == (11, 2)
    np.testing.assert_allclose(acf[0], 1.0, rtol=1e-12)
    np.testing.assert_allclose(acf, (phi ** np.arange(11))[:, None] * np.ones(2), atol=0.03)


def test_autocorrelation_matches_direct_formula() -> None:
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 9, 2)).cumsum(axis=1)
    y = x - x.mean(axis=0)
    want = np.empty((9, 2))
    for lag in range(9):
        u, v = y[:, : 9 - lag], y[:, lag:]
        want[lag] = (u * v).sum((0, 1)) / np.sqrt((u * u).sum((0, 1)) * (v * v).sum((0, 1)))
    np.testing.assert_allclose(autocorrelation(x, 8), want, rtol=0, atol=1e-12)  # FFT rounding


def test_autocorrelation_error() -> None:
    rng = np.random.default_rng(14)
    a = _ar1(rng, 400, 101, 1, 0.9)
    b = _ar1(rng, 300, 101, 1, 0.5)
    out = autocorrelation_error(a, b, 5)
    np.testing.assert_allclose(out["error"], out["acf_pred"] - out["acf_ref"])
    assert out["error"][0, 0] == pytest.approx(0.0, abs=1e-12)
    # phi^1 differs by 0.4; the estimation SE (~0.01) is far smaller
    assert out["max_abs_error"][0] > 0.3
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(a, 101)


# ----------------------------------------------------------------------------- histograms


def test_histograms_common_edges_and_densities() -> None:
    rng = np.random.default_rng(15)
    pred, ref = _scaled_ensemble(rng, 200, n_time=4), _scaled_ensemble(rng, 150, n_time=4)
    out = histograms(pred, ref, [0, 3], bins=20)
    assert [(h["step"], h["component"]) for h in out] == [(0, 0), (0, 1), (3, 0), (3, 1)]
    for h in out:
        width = np.diff(h["edges"])
        assert h["edges"].shape == (21,)
        assert (h["pred_density"] * width).sum() == pytest.approx(1.0)
        assert (h["ref_density"] * width).sum() == pytest.approx(1.0)
    h = out[3]
    both = np.concatenate([pred[:, 3, 1], ref[:, 3, 1]])
    assert h["edges"][0] == both.min() and h["edges"][-1] == both.max()


# ----------------------------------------------------------------------------- scoring rules


def test_gaussian_crps_matches_numerical_integral() -> None:
    # CRPS(F, y) = int (F(x) - 1{x >= y})^2 dx, evaluated by quadrature (accurate to ~1e-10)
    for mu, sigma, y in [(0.0, 1.0, 0.3), (1.5, 0.4, -0.2), (-2.0, 3.0, 4.0)]:
        left = integrate.quad(
            lambda x, mu=mu, sigma=sigma: stats.norm.cdf(x, mu, sigma) ** 2, -np.inf, y
        )[0]
        right = integrate.quad(
            lambda x, mu=mu, sigma=sigma: stats.norm.sf(x, mu, sigma) ** 2, y, np.inf
        )[0]
        assert gaussian_crps(mu, sigma, y) == pytest.approx(left + right, abs=1e-8)
    assert gaussian_crps(1.0, 0.0, 3.5) == pytest.approx(2.5)
    np.testing.assert_allclose(gaussian_crps(np.zeros(3), 1.0, [0.0, 0.0, 0.0]), 0.2336949, 1e-6)


def test_crps_ensemble_matches_brute_force() -> None:
    rng = np.random.default_rng(16)
    s, y = rng.standard_normal((7, 5)), rng.standard_normal(5)
    m = s.shape[0]
    term1 = np.abs(s - y).mean(0)
    term2 = np.abs(s[:, None] - s[None, :]).sum((0, 1)) / (2 * m * (m - 1))
    np.testing.assert_allclose(crps_ensemble(s, y), term1 - term2, rtol=0, atol=1e-13)


def test_fair_crps_unbiased_against_gaussian_closed_form() -> None:
    # Small ensembles (m = 4): the fair CRPS is unbiased for CRPS(N(mu, sigma^2), y), while the
    # plain ensemble CRPS is biased upwards by E|X - X'| / (2m) = sigma / (4 sqrt(pi)) ~ 0.07.
    # Tolerance: 5 SE of the mean difference (SE from the data itself).
    rng = np.random.default_rng(17)
    n, m = 40_000, 4
    mu = rng.uniform(-1, 1, n)
    sigma = rng.uniform(0.5, 1.5, n)
    y = mu + sigma * rng.standard_normal(n)
    s = mu + sigma * rng.standard_normal((m, n))
    diff = crps_ensemble(s, y) - gaussian_crps(mu, sigma, y)
    se = diff.std(ddof=1) / math.sqrt(n)
    assert abs(diff.mean()) < 5 * se
    assert 5 * se < 0.02  # the test can detect the ~0.07 bias of the non-fair estimator
    # large ensemble (m = 4000): every single score close to the closed form; the per-score SD
    # is about sigma / sqrt(m) ~ 0.02, tolerance 0.1 is 5 SD.
    s_big = rng.standard_normal((4000, 20))
    y_big = np.linspace(-2.0, 2.0, 20)
    np.testing.assert_allclose(
        crps_ensemble(s_big, y_big), gaussian_crps(0.0, 1.0, y_big), atol=0.1
    )


def test_energy_score_brute_force_and_1d_equals_crps() -> None:
    rng = np.random.default_rng(18)
    s, y = rng.standard_normal((6, 4, 3)), rng.standard_normal((4, 3))
    m = s.shape[0]
    term1 = np.linalg.norm(s - y, axis=-1).mean(0)
    term2 = np.linalg.norm(s[:, None] - s[None, :], axis=-1).sum((0, 1)) / (2 * m * (m - 1))
    np.testing.assert_allclose(energy_score(s, y), term1 - term2, rtol=0, atol=1e-13)
    s1, y1 = s[..., 0], y[:, 0]
    np.testing.assert_allclose(energy_score(s1[..., None], y1[:, None]), crps_ensemble(s1, y1))


def test_pit_calibrated_uniform_and_underdispersed_u_shaped() -> None:
    # Seeded; for a calibrated ensemble the chi-square p-value is Uniform(0, 1), so p > 1e-3
    # fails for 0.1 % of seeds. An ensemble with half the true spread piles PIT values into the
    # outer bins: p is astronomically small.
    rng = np.random.default_rng(19)
    n, m = 4000, 19
    y = rng.standard_normal(n)
    calibrated = pit_histogram(pit_values(rng.standard_normal((m, n)), y, rng), bins=10)
    assert calibrated["p_value"] > 1e-3
    assert calibrated["counts"].sum() == n
    narrow = pit_histogram(pit_values(0.5 * rng.standard_normal((m, n)), y, rng), bins=10)
    assert narrow["p_value"] < 1e-20
    counts = narrow["counts"]
    assert min(counts[0], counts[-1]) > 2 * counts[3:7].max()


def test_pit_ties_broken_uniformly() -> None:
    # every member equals the observation: the randomized PIT must be Uniform(0, 1)
    pit = pit_values(np.zeros((5, 3000)), np.zeros(3000), 123)
    assert pit.min() >= 0.0 and pit.max() <= 1.0
    assert pit_histogram(pit, bins=10)["p_value"] > 1e-3
    # observation above all members: PIT in the top rank cell (m/(m+1), 1]
    pit_top = pit_values(np.zeros((4, 50)), np.ones(50), np.random.default_rng(0))
    assert (pit_top >= 0.8).all()


# ----------------------------------------------------------------------------- errors and JSON


def test_shape_errors_name_both_shapes() -> None:
    a, b = np.zeros((5, 10, 2)), np.zeros((4, 11, 2))
    for func in (moment_errors, w1_marginals):
        with pytest.raises(ValueError, match=re.escape("(5, 10, 2)")) as info:
            func(a, b)
        assert "(4, 11, 2)" in str(info.value)
    with pytest.raises(ValueError, match=re.escape("(4, 10, 3)")):
        w1_report(a, a, np.zeros((4, 10, 3)), dt=0.1)
    with pytest.raises(ValueError, match=re.escape("(3, 2)")):
        wasserstein1(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match=re.escape("(2, 5)")):
        crps_ensemble(np.zeros((2, 5)), np.zeros(4))
    with pytest.raises(ValueError, match=re.escape("(2, 5, 3)")):
        energy_score(np.zeros((2, 5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=re.escape("(3, 4)")):
        moment_errors(np.zeros((3, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        w1_marginals(np.full((2, 3, 1), np.nan), np.zeros((2, 3, 1)))


def test_to_jsonable() -> None:
    obj = {
        "a": np.arange(3),
        "b": np.float32(1.5),
        1: (np.nan, np.inf, np.int64(2)),
        "c": [np.array([[1.0, np.nan]])],
    }
    assert to_jsonable(obj) == {
        "a": [0, 1, 2],
        "b": 1.5,
        "1": [None, None, 2],
        "c": [[[1.0, None]]],
    }
