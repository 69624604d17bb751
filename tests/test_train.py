"""Training on Ornstein-Uhlenbeck bursts, whose one-step law is exactly Gaussian.

OU (theta = 1, mu = 1.2, sigma = 0.3, Delta = 0.01): x_{n+1} | x_n is normal with mean
mu + (x_n - mu) e^{-theta Delta} and std sigma sqrt((1 - e^{-2 theta Delta}) / (2 theta))
= 0.0299. A learned kernel can therefore be tested against the exact conditional law.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from slowflow.data import Trajectories
from slowflow.errors import ConfigError
from slowflow.model.io import load_model, save_model
from slowflow.rollout import drift_diffusion, predict
from slowflow.simulate import simulate_bursts
from slowflow.systems import get_system
from slowflow.train import TrainConfig, fit

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:only .* training pairs:RuntimeWarning"),
]

OU = get_system("ou")
THETA, MU = OU.params["theta"], OU.params["mu"]
DT = 0.01
XS = (0.5, 1.2, 2.0)
KS_ALPHA = 1e-3
# Kernel tolerance of a correct fit, in drift units (1/time): 0.15 is a mean error of
# 0.0015 per step = 0.05 kernel std. Five seeds of the fit below gave at most 0.054 (gaussian)
# and 0.12 (default); a model that ignores the drift is off by 0.7-0.8 at x = 0.5 and 2.0.
DRIFT_TOL = 0.15
# Relative tolerance on the one-step variance: fits gave at most 4 % (gaussian), 5 % (default);
# the Monte-Carlo standard error of the variance from 20,000 draws is sqrt(2/20000) = 1 %.
VAR_TOL = 0.10


def _fit(data, preset, **kw):
    """fit() on one torch thread and without a progress bar. ``threads=1`` is applied inside
    fit, i.e. after the numba simulator has run: numba's OpenMP runtime resets torch's
    thread count to the core count, and two spinning threads on the 2 shared cores made a
    4 s fit take up to 2 minutes."""
    return fit(data, preset, threads=1, progress=False, **kw)


def _exact_law(x: float):
    mean, cov = OU.exact_transition(np.array([x]), DT, **OU.params)
    return float(mean[0, 0]), math.sqrt(float(cov[0, 0, 0]))


@pytest.fixture(scope="module")
def ou_train():
    """4,000 OU bursts of T = 1 (400k pairs): enough that the fitted kernel's error is well
    below the KS resolution at 2,000 samples (about 0.04 in cdf, i.e. ~0.1 kernel std)."""
    return simulate_bursts("ou", n_traj=4000, t_end=1.0, seed=1)


@pytest.fixture(scope="module")
def small_ou():
    """A tiny data set for determinism/checkpoint tests (40 bursts, 20 pairs each)."""
    return simulate_bursts("ou", n_traj=40, t_end=0.2, seed=2)


def _fit_ou(data, preset):
    return _fit(data, preset, epochs=12, batch_size=4096, lr=3e-3, patience=30, seed=0)


@pytest.fixture(scope="module")
def gaussian_ou(ou_train, torch_one_thread):
    """The default 'gaussian' preset: drift and covariance in closed form (about 2 s)."""
    return _fit_ou(ou_train, "gaussian")


@pytest.fixture(scope="module")
def gaussian_net_ou(ou_train, torch_one_thread):
    """The 'gaussian-net' preset (network scale) fitted for 12 epochs (about 4 s on one
    core)."""
    return _fit_ou(ou_train, "gaussian-net")


def _check_kernel(model, label: str) -> None:
    for i, x in enumerate(XS):
        mean, sd = _exact_law(x)
        # One step from x, 2,000 paths; a different seed per x so the noise is independent.
        s = predict(model, np.array([x]), 1, n_paths=2000, seed=100 + i)[:, 1, 0]
        p = stats.kstest(s, stats.norm(mean, sd).cdf).pvalue
        assert p > KS_ALPHA, f"{label}: KS p={p:.2g} at x={x}"

        dd = drift_diffusion(model, [x], n_samples=20_000, seed=200 + i)
        a_true = THETA * (MU - x)
        err = abs(dd.drift[0, 0] - a_true)
        # 4 standard errors (~0.085) + model tolerance; theta (mu - x) differs from the exact
        # mean increment / Delta by 0.5 % (<= 0.004), which the tolerance absorbs.
        assert err < 4 * dd.drift_se[0, 0] + DRIFT_TOL, (label, x, dd.drift[0, 0], a_true)
        ratio = dd.diffusion[0, 0, 0] * DT / sd**2
        assert abs(ratio - 1) < VAR_TOL, (label, x, ratio)


def test_gaussian_preset_learns_exact_ou_kernel(gaussian_ou):
    """The closed-form default: KS test (alpha = 0.001) of 2,000 one-step samples at
    x = 0.5, 1.2, 2.0 against the exact normal cdf, plus the drift and variance read-outs
    against theta (mu - x) and the exact variance (tolerances above); no epochs ran."""
    assert gaussian_ou.dim == 1 and float(gaussian_ou.dt) == pytest.approx(DT)
    assert not gaussian_ou.training and gaussian_ou.n_parameters() == 0
    h = gaussian_ou.history
    assert h["epoch"] == [] and h["stop_reason"].startswith("closed form")
    assert h["drift_basis"]["degree"] == 1 and h["covariance_basis"]["degree"] == 0
    # The exact kernel's NLL is log(sd sqrt(2 pi e)) = -2.09 nats; the fit must get close.
    floor = math.log(_exact_law(1.2)[1] * math.sqrt(2 * math.pi * math.e))
    assert h["best_val_nll"] < floor + 0.02
    _check_kernel(gaussian_ou, "gaussian")


def test_gaussian_net_preset_learns_exact_ou_kernel(gaussian_net_ou):
    """The same checks for the network scale trained for 12 epochs."""
    h = gaussian_net_ou.history
    assert h["epoch"] == list(range(12))
    assert all(math.isfinite(v) for v in h["val_nll"])
    floor = math.log(_exact_law(1.2)[1] * math.sqrt(2 * math.pi * math.e))
    assert h["best_val_nll"] < floor + 0.02
    _check_kernel(gaussian_net_ou, "gaussian-net")


def test_kernel_checks_have_power(gaussian_ou):
    """Negative control: the same 2,000 samples are rejected (KS p < alpha) against laws that
    are wrong by a 30 % larger std or a mean shifted by 0.3 kernel std, so passing the KS
    test above is informative at these sizes."""
    x = 2.0
    mean, sd = _exact_law(x)
    s = predict(gaussian_ou, np.array([x]), 1, n_paths=2000, seed=102)[:, 1, 0]
    assert stats.kstest(s, stats.norm(mean, 1.3 * sd).cdf).pvalue < KS_ALPHA
    assert stats.kstest(s, stats.norm(mean + 0.3 * sd, sd).cdf).pvalue < KS_ALPHA


@pytest.mark.slow
def test_default_preset_learns_exact_ou_kernel(ou_train):
    """The default (spline flow) preset passes the same checks (about 20 s on one core)."""
    _check_kernel(_fit_ou(ou_train, "default"), "default")


def test_fitted_model_refuses_wrong_dimension(gaussian_ou):
    """A model trained on d=1 data rejects a 2-component start (and 2-D read-out points)
    with a ConfigError that names the model's d."""
    with pytest.raises(ConfigError, match=r"d=1"):
        predict(gaussian_ou, np.array([1.0, 2.0]), 3, n_paths=5)
    with pytest.raises(ConfigError, match=r"d=1"):
        predict(gaussian_ou, np.ones((5, 2)), 3)
    with pytest.raises(ConfigError, match=r"d=1"):
        drift_diffusion(gaussian_ou, np.ones((1, 2)), n_samples=10)


# --------------------------------------------------------------------------- determinism


def _small_fit(data, seed, **kw):
    # warmup_epochs=1: the first epoch trains the affine stage alone, the rest the flow too,
    # so both code paths are covered.
    kw = {"epochs": 3, "batch_size": 128, "warmup_epochs": 1, "seed": seed, **kw}
    return _fit(data, "default", **kw)


def _same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fit_is_deterministic_by_seed(small_ou):
    """Same data and seed: bit-identical weights and validation history. Another seed:
    different weights (exact comparisons)."""
    a = _small_fit(small_ou, seed=0)
    b = _small_fit(small_ou, seed=0)
    assert _same_state(a, b)
    assert a.history["val_nll"] == b.history["val_nll"]
    c = _small_fit(small_ou, seed=1)
    assert not _same_state(a, c)


# ----------------------------------------------------------------------- checkpoint/resume


def test_resume_continues_from_checkpoint(small_ou, tmp_path):
    """Fit 2 epochs with a checkpoint, then resume to 4: the history has epochs 0..3, its
    first two entries are those of the first run, and the validation NLL stays finite."""
    ckpt = tmp_path / "run.ckpt"
    first = _fit(small_ou, "gaussian-net", epochs=2, batch_size=128, seed=0, checkpoint=ckpt)
    assert ckpt.exists()
    assert first.history["epoch"] == [0, 1]
    resumed = _fit(
        small_ou,
        "gaussian-net",
        epochs=4,
        batch_size=128,
        seed=0,
        checkpoint=ckpt,
        resume=ckpt,
    )
    h = resumed.history
    assert h["epoch"] == [0, 1, 2, 3]
    assert h["val_nll"][:2] == first.history["val_nll"]
    assert all(math.isfinite(v) for v in h["val_nll"])
    assert math.isfinite(h["best_val_nll"])
    assert h["stop_reason"] == "completed all epochs"


def test_resume_reproduces_an_uninterrupted_run(small_ou, tmp_path):
    """With a constant learning rate (so the schedule does not depend on the planned number
    of epochs), 2 epochs + resume to 4 equals 4 epochs in one go, bit for bit: weights,
    optimizer state, data order and step counter all come back from the checkpoint."""
    kw = {"batch_size": 128, "seed": 0, "schedule": "constant", "patience": 50}
    whole = _fit(small_ou, "gaussian-net", epochs=4, **kw)
    ckpt = tmp_path / "run.ckpt"
    _fit(small_ou, "gaussian-net", epochs=2, checkpoint=ckpt, **kw)
    resumed = _fit(small_ou, "gaussian-net", epochs=4, checkpoint=ckpt, resume=True, **kw)
    assert resumed.history["val_nll"] == whole.history["val_nll"]
    assert _same_state(resumed, whole)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"device": "tpu"}, "device"),
        ({"epochs": 2.5}, "epochs"),
    ],
)
def test_bad_train_config_is_a_config_error(small_ou, overrides, field):
    """Invalid settings raise ConfigError with a one-line message naming the field, both
    through fit(**overrides) and TrainConfig(...)."""
    with pytest.raises(ConfigError, match=field) as info:
        _fit(small_ou, "gaussian", **overrides)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**overrides)


def test_unknown_preset_is_a_config_error(small_ou):
    """An unknown preset name raises ConfigError naming it and listing the presets."""
    with pytest.raises(ConfigError, match="bogus") as info:
        _fit(small_ou, "bogus", epochs=1)
    assert "gaussian" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------- fitted model files


def test_fitted_model_save_load_round_trip(small_ou, tmp_path):
    """A model returned by fit (which carries the data range used by rollout warnings)
    saves and loads; rollouts with the same seed are bit-identical."""
    model = _fit(small_ou, "gaussian-net", epochs=1, batch_size=128)
    path = save_model(model, tmp_path / "fitted.pt")
    loaded = load_model(path)
    assert loaded.history["epoch"] == [0]
    assert loaded.meta["preset"] == "gaussian-net"
    assert _same_state(model, loaded)
    # the data range (float32) comes back with the weights
    assert float(loaded.x_lo[0]) == pytest.approx(np.nanmin(small_ou.x), rel=1e-6)
    assert float(loaded.x_hi[0]) == pytest.approx(np.nanmax(small_ou.x), rel=1e-6)
    a = predict(model, [1.0], 4, n_paths=16, seed=9)
    b = predict(loaded, [1.0], 4, n_paths=16, seed=9)
    np.testing.assert_array_equal(a, b)


def test_fitted_model_with_numpy_metadata_round_trips(small_ou, tmp_path):
    """Trajectories.meta may hold numpy scalars/arrays (it is free-form); fit copies it into
    the model's meta, and the saved file must still load (weights-only loading refuses
    numpy objects, so they have to be stored as plain numbers/lists)."""
    data = Trajectories(
        small_ou.x, small_ou.dt, meta={"noise": np.float64(0.3), "box": np.array([0.0, 2.5])}
    )
    model = _fit(data, "gaussian-net", epochs=1, batch_size=128)
    loaded = load_model(save_model(model, tmp_path / "meta.pt"))
    assert loaded.meta["data_meta"]["noise"] == pytest.approx(0.3)


def test_fit_leaves_the_callers_torch_state_alone(small_ou):
    """fit seeds torch and may set its thread count, inside a forked RNG and a restored
    thread count: the caller's next random draw and thread count are unchanged (exact)."""
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    threads = torch.get_num_threads()
    fit(small_ou, "gaussian-net", epochs=1, batch_size=128, threads=1, progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_train_fine_tunes_an_existing_model(small_ou):
    """train(model, data) trains the weights of a fitted model further (its closed-form
    drift untouched) and records a fresh history; a model without weights is refused."""
    from slowflow.train import train

    model = _fit(small_ou, "gaussian-net", epochs=1, batch_size=128)
    coef = model.basis_coef.clone()
    tuned = train(model, small_ou, epochs=2, batch_size=128, threads=1, progress=False)
    assert tuned is model and tuned.history["epoch"] == [0, 1]
    assert torch.equal(tuned.basis_coef, coef)
    with pytest.raises(ConfigError, match="no weights to train"):
        train(_fit(small_ou, "gaussian"), small_ou)
