"""Failures of the learning itself are reported, not hidden: non-finite losses, rollouts
that blow up or leave the training range, and data too small for the model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from slowflow.data import Trajectories
from slowflow.model.config import get_preset
from slowflow.model.flowmap import FlowMap, build_model
from slowflow.rollout import predict
from slowflow.simulate import simulate_bursts
from slowflow.train import fit

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def ou():
    return simulate_bursts("ou", n_traj=200, t_end=0.5, seed=2)


def test_nan_guard_restores_best_lowers_lr_then_stops(ou, monkeypatch):
    """From the 100th training call on (the second epoch), the loss is NaN: the first time, fit restores the best
    weights and lowers the learning rate (with a warning); the second time it stops, says
    why, and returns the best weights, which are finite."""
    original = FlowMap.forward
    calls = {"n": 0}

    def poisoned(self, x):
        if self.training:
            calls["n"] += 1
            if calls["n"] > 100:
                x = x * math.nan
        return original(self, x)

    monkeypatch.setattr(FlowMap, "forward", poisoned)
    with pytest.warns(RuntimeWarning, match="lowered the learning rate"):
        model = fit(ou, "gaussian-net", epochs=20, batch_size=128, progress=False, threads=1)
    assert "non-finite loss" in model.history["stop_reason"]
    assert model.history["best_epoch"] >= 0
    monkeypatch.setattr(FlowMap, "forward", original)
    for p in model.parameters():
        assert torch.isfinite(p).all()
    out = predict(model, [1.0], 5, 10, seed=0)
    assert np.isfinite(out).all()


def test_too_little_data_warns(ou):
    tiny = Trajectories(x=ou.x[:3, :4], dt=ou.dt)
    with pytest.warns(RuntimeWarning, match=r"only \d+ training pairs"):
        fit(tiny, "gaussian-net", epochs=1, progress=False, threads=1)


def test_rollout_reports_nonfinite_paths():
    model = build_model(get_preset("gaussian-net"), 1, 0.01)
    model.d_std.fill_(math.inf)  # every step is non-finite
    with pytest.warns(RuntimeWarning, match="3 of 3 paths became non-finite"):
        out, summary = predict(model, [0.5], 4, 3, return_summary=True)
    assert summary.nonfinite_paths == 3 and summary.first_nonfinite_step == 1
    assert np.isnan(out[:, 1:]).all() or not np.isfinite(out[:, 1:]).all()


def test_rollout_reports_leaving_the_training_range(ou):
    """A model whose kernel drifts away (drift +1 per step) leaves the data's range, and
    the summary reports the fraction of paths and the first step where it happens (the
    network-drift preset, whose location is shifted by the increments' mean d_mean)."""
    model = fit(ou, "network", epochs=1, progress=False, threads=1)
    with torch.no_grad():
        model.d_mean.fill_(1.0)
    with pytest.warns(RuntimeWarning, match="left the training data's range"):
        _, summary = predict(model, [1.0], 10, 20, return_summary=True)
    assert summary.outside_fraction == 1.0
    assert summary.first_outside_step is not None and summary.first_outside_step <= 3
