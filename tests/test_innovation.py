"""The empirical innovation law of the Gaussian presets (slowflow.model.innovation).

A discrete process whose noise is a centred exponential with the sign of x_n (skewness +2
for x > 0, -2 for x < 0) has innovations that N(0, I) gets wrong in shape but not in mean
or variance: fit must choose the empirical law there, with cells that separate the two
signs, and keep N(0, I) on OU data; the law must never move the step's mean or variance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from slowflow.data import Trajectories
from slowflow.errors import ConfigError
from slowflow.model.config import ModelConfig, get_preset
from slowflow.model.innovation import choose_law, fit_law
from slowflow.model.io import load_model, save_model
from slowflow.rollout import predict
from slowflow.train import fit

DT, THETA, SIGMA = 0.01, 1.0, 0.5


def _bursts(n_traj, n_obs, seed, skewed):
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_obs, 1))
    x[:, 0, 0] = rng.uniform(-1.5, 1.5, n_traj)
    for k in range(n_obs - 1):
        xk = x[:, k, 0]
        if skewed:
            eps = np.where(xk >= 0, 1.0, -1.0) * (rng.exponential(1.0, n_traj) - 1.0)
        else:
            eps = rng.standard_normal(n_traj)
        x[:, k + 1, 0] = xk - THETA * xk * DT + SIGMA * np.sqrt(DT) * eps
    return Trajectories(x=x, dt=DT)


@pytest.fixture(scope="module")
def skewed_model():
    return fit(_bursts(2000, 51, 0, skewed=True), None, memory=0, seed=0)


def test_every_cell_has_mean_zero_and_covariance_identity():
    rng = np.random.default_rng(1)
    c = rng.standard_normal((20_000, 2))
    u = np.stack([rng.exponential(1.0, 20_000) * 3 + c[:, 0], rng.standard_normal(20_000)], 1)
    law = fit_law(c, u, 4, seed=0)
    assert law.n_cells == 4
    for j in range(law.n_cells):
        w = law.bank[j, : law.count[j]]
        np.testing.assert_allclose(w.mean(0), 0.0, atol=1e-10)
        np.testing.assert_allclose(np.cov(w.T, bias=True), np.eye(2), atol=1e-6)


def test_the_density_integrates_to_one():
    """Trapezoid rule on a fine grid (step 0.005, far beyond the kernels' reach): the
    mixture of Gaussian kernels integrates to 1 up to the rule's error (< 1e-6)."""
    from slowflow.model.innovation import EmpiricalInnovation

    rng = np.random.default_rng(2)
    law = fit_law(rng.standard_normal((3000, 1)), rng.exponential(1.0, (3000, 1)), 1, seed=0)
    t = {k: torch.as_tensor(v) for k, v in vars(law).items()}
    grid = torch.linspace(-15, 25, 8001, dtype=torch.float64)[:, None]
    base = EmpiricalInnovation(
        t["centers"].double(), t["bank"].double(), t["count"], t["bandwidth"].double(),
        torch.zeros(grid.shape[0], 1, dtype=torch.float64),
    )  # fmt: skip
    dens = base.log_prob(grid).exp().numpy()
    assert abs(np.trapezoid(dens, grid[:, 0].numpy()) - 1.0) < 1e-6


def test_gaussian_innovations_keep_the_gaussian():
    rng = np.random.default_rng(3)
    c, u = rng.standard_normal((60_000, 1)), rng.standard_normal((60_000, 1))
    law, record = choose_law(c[:50_000], u[:50_000], c[50_000:], u[50_000:], seed=0)
    assert law is None and record["chosen"] == "gaussian", record
    forced, _ = choose_law(c[:50_000], u[:50_000], c[50_000:], u[50_000:], seed=0, force=True)
    assert forced is not None


def test_fit_keeps_the_gaussian_on_ou_data():
    model = fit(_bursts(1000, 51, 4, skewed=False), None, memory=0, seed=0)
    assert model.history["innovation"]["chosen"] == "gaussian"
    assert not model.empirical_innovation


def test_fit_learns_the_skew_on_each_side(skewed_model):
    """One-step draws from x = +-0.5: the empirical law has cells on both sides of 0, so
    the draws' skewness has the sign of x (the truth: +-2; the kernel smoothing lowers it
    a little, so > 1 is asked). The law cannot move the step's mean and variance: over
    100,000 draws their standard errors are 0.0016 and 0.01 of the noise's; 5 of them
    are allowed (the drift and variance estimates also err by about 1 %)."""
    model = skewed_model
    rec = model.history["innovation"]
    assert model.empirical_innovation and rec["law"]["cells"] >= 2, rec
    assert rec["candidates"][0]["gain"] > 0.1  # nats per pair, over N(0, I)
    scale = SIGMA * np.sqrt(DT)
    for x0 in (0.5, -0.5):
        step = predict(model, [x0], 1, 100_000, seed=5)[:, 1, 0]
        eps = (step - (x0 - THETA * x0 * DT)) / scale
        assert np.sign(stats.skew(eps)) == np.sign(x0) and abs(stats.skew(eps)) > 1.0
        assert abs(eps.mean()) < 0.05 and abs(eps.var() - 1.0) < 0.05


def test_the_law_survives_a_model_file(skewed_model, tmp_path):
    save_model(skewed_model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.innov_bank.shape == skewed_model.innov_bank.shape
    np.testing.assert_array_equal(
        predict(loaded, [0.3], 10, 50, seed=1), predict(skewed_model, [0.3], 10, 50, seed=1)
    )


def test_files_without_the_law_load_as_gaussian(skewed_model, tmp_path):
    """A model file written before the empirical law (no innov_* weights) loads with
    N(0, I) innovations."""
    state = {k: v for k, v in skewed_model.state_dict().items() if not k.startswith("innov_")}
    from slowflow.model.flowmap import FlowMap

    model = FlowMap(1, skewed_model.config, DT)
    model.load_state_dict(state)
    assert not model.empirical_innovation


def test_blocked_rollout_of_the_empirical_law_gives_the_unblocked_paths(skewed_model, monkeypatch):
    import slowflow.rollout.engine as engine

    monkeypatch.setattr(engine, "_CPU_EVAL_ROWS", 10**6)
    whole = predict(skewed_model, [0.2], 5, 40, seed=2)
    monkeypatch.setattr(engine, "_CPU_EVAL_ROWS", 7)
    np.testing.assert_array_equal(predict(skewed_model, [0.2], 5, 40, seed=2), whole)


def test_the_gaussian_can_be_asked_for_and_flows_refuse_the_empirical_law():
    model = fit(_bursts(500, 51, 0, skewed=True), get_preset(None, innovation="gaussian"),
                memory=0, seed=0)  # fmt: skip
    assert not model.empirical_innovation and "innovation" not in model.history
    with pytest.raises(ConfigError, match="innovation 'empirical'"):
        ModelConfig(flow="coupling", innovation="empirical")
    with pytest.raises(ConfigError, match="innovation must be one of"):
        ModelConfig(innovation="kde")


def test_an_innovation_beyond_the_stored_ones_costs_at_most_the_gaussian_share():
    """The law keeps a 2 % share of N(0, I): at u = 8, far beyond 1,000 stored standard
    normal draws, its log-density is within log(1 / 0.02) of the Gaussian's (a kernel
    mixture alone would be ~(8 - 3.5)^2 / (2 h^2), hundreds of nats, below)."""
    from slowflow.model.innovation import DEFENSIVE, _gain

    rng = np.random.default_rng(5)
    law = fit_law(rng.standard_normal((1000, 1)), rng.standard_normal((1000, 1)), 1, seed=0)
    gain = _gain(law, np.zeros((1, 1)), np.array([[8.0]]))[0]
    assert np.log(DEFENSIVE) - 1e-9 <= gain < 0
