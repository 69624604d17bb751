"""Memory in the noise: the autoregression of standardized residuals of closed-form maps.

Two processes whose laws are known exactly:

* a 2-D linear SDE step whose noise is a VAR(1) (non-diagonal A): the K = 1 map must give
  the exact one-step law given a window (mean and covariance);
* multiplicative noise with AR(1) log-increments (the shape of ex4.1, where the memory is a
  relative one): the K = 1 map must give the long-horizon spread of log x, which a one-step
  map gets wrong by the factor sqrt((1 - phi) / (1 + phi)).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slowflow.data import Trajectories
from slowflow.errors import ModelFileError
from slowflow.model.io import load_model, model_payload, save_model
from slowflow.model.residual_ar import MAX_RADIUS, MAX_RESIDUAL_SCALE, fit_ar
from slowflow.rollout import predict
from slowflow.train import fit

pytestmark = pytest.mark.usefixtures("torch_one_thread")

DT = 0.01
B = np.array([[-1.0, 0.5], [-0.5, -1.0]])  # drift B x
SIGMA = np.array([[0.5, 0.1], [0.1, 0.3]])  # per unit time
A = np.array([[0.4, 0.2], [-0.1, 0.3]])  # the noise's VAR(1) coefficient


def _var_noise(n_traj: int, n_obs: int, seed: int) -> Trajectories:
    """x_{n+1} = x_n + Delta B x_n + L xi_{n+1}, xi_{n+1} = A xi_n + e (e ~ N(0, I))."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(SIGMA * DT)
    x = np.empty((n_traj, n_obs, 2))
    x[:, 0] = rng.uniform(-1, 1, (n_traj, 2))
    xi = rng.standard_normal((n_traj, 2))
    for k in range(n_obs - 1):
        xi = xi @ A.T + rng.standard_normal((n_traj, 2))
        x[:, k + 1] = x[:, k] + DT * x[:, k] @ B.T + xi @ chol.T
    return Trajectories(x=x, dt=DT)


def test_memory_one_gives_the_exact_law_of_a_linear_step_with_var_noise():
    """Given a window (x_{n-1}, x_n) the exact law is N(m, L L^T) with
    m = x_n + Delta B x_n + L A L^-1 (x_n - x_{n-1} - Delta B x_{n-1}). From 4,000 bursts
    of 41 observations the K = 1 map's 40,000 one-step samples have that mean within 5
    Monte-Carlo standard errors plus 20 % of the memory term's size (the fit's own error:
    A is estimated in the basis of the fitted one-step covariance), and that covariance
    within 5 %; the one-step map (K = 0) misses the mean by more than 20 standard errors."""
    data = _var_noise(4000, 41, seed=0)
    k1 = fit(data, None, memory=1, progress=False, seed=0)
    k0 = fit(data, None, progress=False, seed=0)
    chol = np.linalg.cholesky(SIGMA * DT)
    prev, now = np.array([0.3, -0.2]), np.array([0.42, -0.1])
    xi = np.linalg.solve(chol, now - prev - DT * B @ prev)
    memory_term = chol @ A @ xi
    mean = now + DT * B @ now + memory_term
    n = 40_000
    s1 = predict(k1, np.stack([prev, now]), 1, n_paths=n, seed=1)[:, 1].astype(float)
    s0 = predict(k0, now, 1, n_paths=n, seed=1)[:, 1].astype(float)
    se = np.sqrt(np.diag(chol @ chol.T) / n)
    tol = 5 * se + 0.2 * np.abs(memory_term)
    assert np.all(np.abs(s1.mean(0) - mean) < tol), (s1.mean(0), mean, tol)
    assert np.any(np.abs(s0.mean(0) - mean) > 20 * se), (s0.mean(0), mean)
    np.testing.assert_allclose(np.cov(s1.T), chol @ chol.T, rtol=0.05)


def _relative_memory(n_traj: int, n_obs: int, seed: int, phi: float, s: float, mu: float):
    """x_{n+1} = x_n exp(mu + u_{n+1}), u_{n+1} = phi u_n + s sqrt(1 - phi^2) e (u stationary
    with std s): positive x over two decades, a memory relative to x."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_obs, 1))
    x[:, 0, 0] = np.exp(rng.uniform(np.log(0.05), np.log(5.0), n_traj))
    u = s * rng.standard_normal(n_traj)
    for k in range(n_obs - 1):
        u = phi * u + s * np.sqrt(1 - phi**2) * rng.standard_normal(n_traj)
        x[:, k + 1, 0] = x[:, k, 0] * np.exp(mu + u)
    return Trajectories(x=x, dt=DT)


def test_relative_memory_gets_the_long_horizon_spread_right():
    """phi = 0.3: over 50 steps Var(log x_50 / x_0) = 50 s^2 (1 + phi) / (1 - phi) minus a
    finite-horizon correction (computed exactly below); the K = 1 map's std of log(x_50)
    from a start at 1 is within 4 % of it (the std's sampling error with 4,000 paths is
    1.1 %, the fitted phi's about 1 %), the one-step map's is more than 20 % below."""
    phi, s, mu = 0.3, 0.02, -0.005
    data = _relative_memory(3000, 41, seed=2, phi=phi, s=s, mu=mu)
    k1 = fit(data, None, memory=1, progress=False, seed=0)
    k0 = fit(data, None, progress=False, seed=0)
    n_steps = 50
    lags = np.arange(1, n_steps)
    exact = s**2 * (n_steps + 2 * np.sum((n_steps - lags) * phi**lags))
    start = np.array([[1.0 / np.exp(mu)], [1.0]])  # a past step with u = 0
    p1 = predict(k1, start, n_steps, n_paths=4000, seed=3)[:, -1, 0].astype(float)
    p0 = predict(k0, [1.0], n_steps, n_paths=4000, seed=3)[:, -1, 0].astype(float)
    assert (p1 > 0).all()
    std1, std0 = np.log(p1).std(), np.log(p0[p0 > 0]).std()
    assert abs(std1 / np.sqrt(exact) - 1) < 0.04, (std1, np.sqrt(exact))
    assert std0 / np.sqrt(exact) < 0.8, (std0, np.sqrt(exact))
    coef = k1.history["memory_ar"]["coef"][0][0][0]
    assert abs(coef - phi) < 0.03, coef


def test_an_explosive_autoregression_is_shrunk_to_a_stable_one():
    """Residuals of a random walk (coefficient 1) and of an explosive AR(2) (roots 1.1 and
    0.5), fitted as such: the stored fits have companion radius MAX_RADIUS (1e-9), so
    rollouts of any length stay bounded in law; a stable fit is left as it is."""
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal((500, 2, 1)), axis=1)
    ar1 = fit_ar(walk)
    assert ar1.radius == pytest.approx(MAX_RADIUS, abs=1e-9)
    assert abs(ar1.coef[0, 0, 0]) == pytest.approx(MAX_RADIUS, abs=1e-9)
    x = np.zeros((2000, 3, 1))
    x[:, :2, 0] = rng.standard_normal((2000, 2))
    x[:, 2, 0] = 1.6 * x[:, 1, 0] - 0.55 * x[:, 0, 0] + 0.01 * rng.standard_normal(2000)
    ar2 = fit_ar(x)
    assert ar2.radius == pytest.approx(MAX_RADIUS, abs=1e-9)
    stable = fit_ar(rng.standard_normal((2000, 3, 2)))
    assert stable.radius < 0.2


def test_a_format_1_closed_form_memory_file_is_refused_in_one_line(tmp_path):
    """Format 1 carried a closed-form map's memory in its drift's inputs: such a file is
    refused with a line that says to fit again, not read with the wrong meaning."""
    model = fit(_var_noise(300, 11, seed=4), None, memory=1, progress=False, seed=0)
    save_model(model, tmp_path / "new.pt")
    assert load_model(tmp_path / "new.pt").memory == 1
    payload = model_payload(model)
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(ModelFileError, match=r"old\.pt: .*format 1.*fit it again") as exc:
        load_model(tmp_path / "old.pt")
    assert "\n" not in str(exc.value)


def test_cochrane_orcutt_is_kept_only_where_its_residuals_are_standardized():
    """The skew product with a fast time of 50 Delta (eps = 0.5): its residuals are close
    to a unit root, where the Cochrane-Orcutt rounds hardly identify the drift. Unchecked,
    they settled where the drift's error dominated the residuals (innovation variance
    2,388 times the one-step one with these 3,000 bursts; rollouts reached |x| ~ 500
    within 10 steps from data in [0, 3]). The fit keeps the one-step drift there: the
    innovation variance stays below the one-step variance (it is what the autoregression
    leaves of it, so a value above 1.5 means the residuals are not those of the kept
    drift), and from the data's start 99.9 % of the paths stay within 3 times the data's
    largest |x| over 100 steps."""
    from slowflow.simulate import simulate_bursts
    from slowflow.systems import get_system

    system = get_system("skew_product").with_params(eps=0.5)
    data = simulate_bursts(system, 3000, 1.0, DT, 100, seed=1, progress=False)
    model = fit(data, None, memory=3, skip_first=2, progress=False, seed=1)
    ar = model.history["memory_ar"]
    assert ar["drift"] == "one-step" and ar["residual_scale"] > MAX_RESIDUAL_SCALE, ar
    assert np.asarray(ar["innovation_cov"]).max() < 1.5, ar
    x = predict(model, [1.5], 100, n_paths=2000, seed=5).astype(float)
    bound = 3 * np.nanmax(np.abs(data.x))
    assert np.quantile(np.abs(x), 0.999) < bound, (np.quantile(np.abs(x), 0.999), bound)
