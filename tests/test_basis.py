"""The closed-form basis drift: features, degree choice, error bars, and the model around it."""

from __future__ import annotations

import numpy as np
import torch

from slowflow.model.basis import exponents, features_np, features_torch, fit_drift, n_features
from slowflow.model.config import get_preset
from slowflow.model.flowmap import build_model
from slowflow.rollout import drift_diffusion

DT = 0.01


def _ou_bursts(n_traj: int, n_steps: int, seed: int, theta=1.5, mu=0.3, sigma=0.6):
    """Exact OU bursts from uniform starts in (-2, 2): pairs, groups and the exact one-step
    drift rate (E[x_{n+1} | x_n] - x_n) / DT, which is what a one-step estimator targets."""
    rng = np.random.default_rng(seed)
    a = np.exp(-theta * DT)
    s = sigma * np.sqrt((1 - a * a) / (2 * theta))
    x = np.empty((n_traj, n_steps + 1))
    x[:, 0] = rng.uniform(-2, 2, n_traj)
    for k in range(n_steps):
        x[:, k + 1] = mu + (x[:, k] - mu) * a + s * rng.standard_normal(n_traj)
    x0, x1 = x[:, :-1].reshape(-1, 1), x[:, 1:].reshape(-1, 1)
    groups = np.repeat(np.arange(n_traj), n_steps)

    def rate(p):
        return (mu + (p - mu) * a - p) / DT

    return x0, x1, groups, rate


def test_exponents_are_ordered_by_degree_and_complete():
    for d, p in [(1, 5), (2, 4), (3, 3)]:
        e = exponents(d, p)
        assert e.shape == (n_features(d, p), d)
        deg = e.sum(1)
        assert np.all(np.diff(deg) >= 0) and deg.max() == p
        assert len({tuple(r) for r in e}) == e.shape[0]


def test_torch_features_equal_numpy_features_and_clip_outside_the_box():
    rng = np.random.default_rng(0)
    x = rng.uniform(-3, 3, size=(50, 2))
    lo, hi = np.array([-1.0, -2.0]), np.array([2.0, 1.0])
    e = exponents(2, 4)
    f_np = features_np(x, lo, hi, e)
    f_t = features_torch(
        torch.as_tensor(x), torch.as_tensor(lo), torch.as_tensor(hi), torch.as_tensor(e)
    ).numpy()
    np.testing.assert_allclose(f_t, f_np, rtol=1e-12, atol=1e-12)
    # outside the box the features are those of the nearest box point
    np.testing.assert_allclose(f_np, features_np(np.clip(x, lo, hi), lo, hi, e), atol=1e-12)


def test_recovers_a_cubic_drift_and_chooses_at_least_its_degree():
    """Pairs from y = a(x) + noise with a cubic a: the fit lies within 4 standard errors of
    a on a grid (a 4-SE miss at any of 9 points has probability < 1e-3 if the SEs are right),
    and cross-validation does not choose a degree below 3 (the cubic term is large)."""
    rng = np.random.default_rng(1)
    n = 200_000
    x0 = rng.uniform(-2, 2, size=(n, 1))

    def a(x):
        return 1.0 - 2.0 * x + 0.5 * x**3

    x1 = x0 + DT * a(x0) + np.sqrt(DT) * 0.5 * rng.standard_normal((n, 1))
    fit = fit_drift(x0, x1, DT, groups=np.arange(n) // 100)
    assert fit.degree >= 3
    grid = np.linspace(-1.8, 1.8, 9)[:, None]
    err = np.abs(fit.drift(grid) - a(grid)) / fit.drift_se(grid)
    assert err.max() < 4.0, err.ravel()


def test_one_standard_error_rule_keeps_a_linear_drift_linear():
    """OU data: degree 1 is the truth; the one-SE rule returns it (fixed seed), while the
    bare minimum of the cross-validated loss may pick a needlessly high degree."""
    x0, x1, g, _ = _ou_bursts(2000, 100, seed=3)
    fit = fit_drift(x0, x1, DT, groups=g)
    assert fit.degree == 1
    assert fit.cv_loss[0] > fit.cv_loss[1] + 10 * fit.cv_se[0]  # a constant is clearly worse


def test_ou_drift_error_bars_cover_the_truth_and_shrink_like_one_over_sqrt_time():
    """The issue's check of honest error bars. 100 independent OU data sets, 9 grid points
    each: the exact one-step drift lies within 2 reported standard errors at >= 90 % of the
    900 points. Nominal coverage is 95.4 %; the points of one data set share two fitted
    coefficients, so the count varies like ~200 independent trials (standard deviation
    ~1.5 %), and 90 % is 3.6 of them below nominal, while error bars 30 % too small would
    cover only ~84 %. Four times the observed time halves the error bars (ratio 2 within
    15 %)."""
    grid = np.linspace(-1.5, 1.5, 9)[:, None]
    inside, total = 0, 0
    for seed in range(100):
        x0, x1, g, rate = _ou_bursts(300, 100, seed=100 + seed)
        fit = fit_drift(x0, x1, DT, groups=g, degree=1)
        inside += int((np.abs(fit.drift(grid) - rate(grid)) <= 2 * fit.drift_se(grid)).sum())
        total += grid.shape[0]
    assert inside / total >= 0.90, inside / total
    x0, x1, g, _ = _ou_bursts(500, 100, seed=7)
    small = fit_drift(x0, x1, DT, groups=g, degree=1)
    x0, x1, g, _ = _ou_bursts(2000, 100, seed=8)
    big = fit_drift(x0, x1, DT, groups=g, degree=1)
    ratio = small.drift_se(grid) / big.drift_se(grid)
    assert np.all(np.abs(ratio - 2.0) < 0.3), ratio.ravel()


def test_model_with_basis_drift_uses_it_as_its_mean_and_reports_its_error_bars():
    x0, x1, g, rate = _ou_bursts(500, 100, seed=11)
    fit = fit_drift(x0, x1, DT, groups=g)
    model = build_model(get_preset("gaussian"), 1, DT, fit)
    assert model.config.basis_degree == fit.degree
    pts = np.array([[-1.0], [0.0], [1.0]])
    with torch.no_grad():
        loc = model(torch.as_tensor(pts, dtype=torch.float32)).transform.inv(torch.zeros(3, 1))
    np.testing.assert_allclose(loc.numpy(), pts + DT * fit.drift(pts), rtol=0, atol=1e-5)
    dd = drift_diffusion(model, pts, n_samples=4000, seed=0)
    np.testing.assert_allclose(dd.drift_se_fit, fit.drift_se(pts), rtol=1e-5)
    assert np.all(dd.drift_se >= dd.drift_se_fit)


def test_flow_presets_train_on_top_of_the_basis_drift():
    """A spline flow over the basis drift: the fitted model keeps the drift's coefficients
    (they are buffers, not trained) and improves the validation NLL over its start."""
    import slowflow as sf
    from slowflow.data import Trajectories

    rng = np.random.default_rng(5)
    x = np.empty((300, 41, 1))
    x[:, 0, 0] = rng.uniform(-2, 2, 300)
    for k in range(40):
        x[:, k + 1] = x[:, k] - DT * x[:, k] + 0.5 * np.sqrt(DT) * rng.standard_normal((300, 1))
    model = sf.fit(Trajectories(x=x, dt=DT), "coupling", epochs=3, progress=False, kstep_every=0)
    assert model.config.drift == "basis" and model.config.basis_degree is not None
    assert "drift_basis" in model.history
    h = model.history["val_nll"]
    assert min(h) < h[0] or model.history["best_epoch"] >= 0


def _exact_ou_model(rate_scale: float):
    """A Gaussian-preset model holding the OU's exact one-step law, its drift scaled."""
    from slowflow.model.basis import DriftFit
    from slowflow.model.covariance import CovarianceFit

    a = np.exp(-1.5 * DT)
    slope, icpt = (a - 1) / DT, 0.3 * (1 - a) / DT  # exact one-step rate: icpt + slope x
    # degree-1 Legendre basis on the box [-3, 3] (wider than the data): phi = (1, x / 3)
    coef = rate_scale * np.array([[icpt], [3.0 * slope]])
    fit = DriftFit(np.array([-3.0]), np.array([3.0]), 1, coef, np.zeros((1, 2, 2)))
    var = 0.36 * (1 - a * a) / 3.0 / DT  # the exact one-step variance, per unit time
    cov = CovarianceFit(np.array([-3.0]), np.array([3.0]), 0, np.array([[var]]), np.ones(1))
    return build_model(get_preset("gaussian"), 1, DT, fit, cov).eval()


def test_kstep_score_ranks_wrong_drifts_below_the_exact_law():
    """OU data (theta = 1.5, sigma = 0.6), 1,000 windows of 100 steps: drifts 0.5x and 1.5x
    the truth score worse than the exact law start by start (same windows and random
    numbers), by more than 4 standard errors of the paired difference (measured: 14 and
    7.5). The score is proper, so the exact law is its expected minimizer; how small a
    drift error it resolves is set by the observed time (a 10 % error is not resolved
    from these 1,000 time units, by this score or by the paired one-step NLL)."""
    from slowflow.model.score import kstep_score

    x0, x1, _, _ = _ou_bursts(1000, 100, seed=21)
    x = np.concatenate([x0.reshape(1000, 100, 1), x1.reshape(1000, 100, 1)[:, -1:]], 1)
    lengths = np.full(1000, 101)
    right = kstep_score(_exact_ou_model(1.0), x, lengths, n_starts=1000, members=16, seed=0)
    assert right["leads"][-1] == 100 and len(right["crps"]) == len(right["leads"])
    for scale in (0.5, 1.5):
        wrong = kstep_score(_exact_ou_model(scale), x, lengths, n_starts=1000, members=16, seed=0)
        diff = wrong["per_start"] - right["per_start"]
        z = diff.mean() / (diff.std(ddof=1) / np.sqrt(diff.size))
        assert z > 4.0, (scale, z)


def test_cholesky_of_extrapolated_covariances_never_raises():
    """The closed-form covariance, evaluated far from the data (a rollout that wanders),
    can be indefinite, ill-conditioned beyond float32's precision or non-finite. Its factor
    must still exist: a positive-definite matrix factorizes as it is (L L^T equals it to
    float32 rounding), an ill-conditioned or indefinite one is projected (eigenvalues >=
    1e-7 of the largest), and a non-finite one gives a NaN factor that the rollout reports
    as a non-finite path. (A fit with memory 2 on the alanine bursts raised a LinAlgError
    here.)"""
    import torch

    from slowflow.model.covariance import cholesky_torch

    q = torch.tensor(
        [[4.0, 1.0, 3.0], [1e6, 999.9, 1.0], [1.0, 2.0, 1.0], [1e8, 1e4 + 1, 1.0],
         [float("nan"), 0.0, 1.0]],
        dtype=torch.float32,
    )  # fmt: skip
    chol = cholesky_torch(q, torch.ones(2), 2)
    s0 = chol[0] @ chol[0].T
    assert torch.allclose(s0, torch.tensor([[4.0, 1.0], [1.0, 3.0]]), rtol=1e-6)
    for k in (1, 2, 3):  # finite, lower triangular, positive diagonal
        assert torch.isfinite(chol[k]).all() and chol[k][0, 1] == 0
        assert (torch.diagonal(chol[k]) > 0).all()
    for k in (2, 3):  # indefinite: projected with the relative floor (float32 rounding)
        w = torch.linalg.eigvalsh((chol[k] @ chol[k].T).double())
        assert w.min() >= 0.5e-7 * w.max()
    assert torch.isnan(chol[4]).all()


def test_covariance_vanishing_like_x_squared_is_fitted_to_relative_precision():
    """Noise that vanishes at x = 0 (Sigma = 0.04 x^2, like a multiplicative noise): an
    unweighted regression of r^2 / Delta is accurate in absolute terms only, so near x = 0
    it can be off by a factor of 4 or fall on the positivity floor (held-out pairs there
    then cost ~1e5 nats each). The reweighted fit must be within 15 % at every point down
    to x = 0.02. Tolerance: over 5 seeds of these 100,000 pairs the worst ratio seen was
    3.5 % from 1; the unweighted fit's ratios at x = 0.02 were 0.001 to 5."""
    from slowflow.model.covariance import fit_covariance

    rng = np.random.default_rng(3)
    z = rng.uniform(-1, 1, size=(100_000, 1))
    resid = 0.2 * z * 0.1 * rng.standard_normal(z.shape)  # Delta = 0.01
    fit = fit_covariance(resid, 0.01, z)
    g = np.array([[-0.3], [0.02], [0.05], [0.1], [0.5]])
    ratio = fit.sigma(g)[:, 0, 0] / (0.04 * g[:, 0] ** 2)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


def test_covariance_degree_is_chosen_before_reweighting(monkeypatch):
    """Weighted by 1 / Sigma^2, a few pairs where Sigma nearly vanishes dominate the held-out
    loss and its standard error; choosing the degree on those losses fell back to a constant
    Sigma on ex4.1 with memory (seed 1 of the accuracy benchmark; a rollout then diffused
    through x = 0, W1/floor 47). So the degree is chosen once, by the unweighted
    cross-validation, and the reweighted rounds keep it. Sigma = 0.04 x^2 with a second,
    irrelevant coordinate must come out right within 10 % where the data are (seen: 3 %)."""
    import slowflow.model.covariance as cov

    calls = []
    choose = cov.choose_degree
    monkeypatch.setattr(cov, "choose_degree", lambda per: calls.append(per) or choose(per))
    rng = np.random.default_rng(5)
    z = np.c_[rng.uniform(-1.5, 2, 200_000), rng.normal(0, 0.1, 200_000)]
    resid = 0.2 * z[:, :1] * 0.1 * rng.standard_normal((200_000, 1))
    fit = cov.fit_covariance(resid, 0.01, z, np.repeat(np.arange(2000), 100))
    assert len(calls) == 1 and cov.IRLS_ROUNDS >= 1 and fit.degree >= 2
    g = np.array([[-1.0, 0.0], [0.5, 0.1], [1.5, -0.1]])
    ratio = fit.sigma(g)[:, 0, 0] / (0.04 * g[:, 0] ** 2)
    assert np.all(np.abs(ratio - 1) < 0.1), ratio
