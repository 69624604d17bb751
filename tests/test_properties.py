"""Property-based tests (hypothesis) of the metrics, a bounded fuzz run of the readers,
and reproducibility by seed."""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from slowflow.data import Trajectories, load_trajectories, save_trajectories
from slowflow.errors import SlowflowError
from slowflow.evaluate import metrics

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(2, 40), elements=finite),
    arrays(np.float64, st.integers(2, 40), elements=finite),
)
def test_w1_matches_scipy_and_is_a_metric(a, b):
    """Exact W1 equals scipy's, is symmetric and non-negative, and W1(a, a) = 0."""
    w = metrics.wasserstein1(a, b)
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-9)
    assert w == pytest.approx(metrics.wasserstein1(b, a), rel=1e-12, abs=1e-12)
    assert w >= 0 and metrics.wasserstein1(a, a) == 0


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 30), elements=finite), finite)
def test_w1_of_a_shift_is_the_shift(a, c):
    """Shifting every sample by c moves the law by exactly |c| in W1."""
    assert metrics.wasserstein1(a, a + c) == pytest.approx(abs(c), rel=1e-9, abs=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 20), st.integers(1, 8)), elements=finite), finite
)
def test_crps_properties(samples, y):
    """Fair CRPS of an ensemble is finite, and a point-mass ensemble gives |x - y|."""
    obs = np.full(samples.shape[1], y)
    crps = metrics.crps_ensemble(samples, obs)
    assert crps.shape == (samples.shape[1],) and np.isfinite(crps).all()
    point = np.repeat(samples[:1], 3, axis=0)
    np.testing.assert_allclose(
        metrics.crps_ensemble(point, obs), np.abs(samples[0] - y), rtol=1e-9, atol=1e-9
    )


@settings(max_examples=30, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(3, 15), st.integers(2, 6), st.integers(1, 2)),
        elements=st.floats(-10, 10, width=64),
    )
)
def test_moment_errors_of_identical_ensembles_vanish(x):
    out = metrics.moment_errors(x, x)
    assert np.all(out["mean_error"] == 0) and np.all(out["std_error"] == 0)


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 1.0), st.integers(1, 5))
def test_pit_values_in_unit_interval(q, m):
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(m, 50))
    pit = metrics.pit_values(samples, np.full(50, q), rng)
    assert np.all((pit >= 0) & (pit <= 1))


# ---------------------------------------------------------------------------- fuzzing


def _mutations(blob: bytes, rng: np.random.Generator):
    """Byte flips, truncations, insertions and deletions of a valid file."""
    n = len(blob)
    for _ in range(8):
        b = bytearray(blob)
        kind = rng.integers(4)
        if kind == 0:
            for i in rng.integers(0, n, size=rng.integers(1, 20)):
                b[i] = rng.integers(256)
        elif kind == 1:
            b = b[: rng.integers(0, n)]
        elif kind == 2:
            i = rng.integers(0, n)
            b[i:i] = rng.bytes(rng.integers(1, 64))
        else:
            i = rng.integers(0, n)
            del b[i : i + rng.integers(1, 64)]
        yield bytes(b)


@pytest.mark.slow
def test_fuzz_readers_never_crash_obscurely(tmp_path):
    """For 60 s, mutate valid npz, csv and mat files and read them: every outcome is either
    valid data or a SlowflowError with a one-line message; any other exception is a defect
    (the ones found so far are regression-tested in test_data.py)."""
    import scipy.io

    rng = np.random.default_rng(1)
    data = Trajectories.from_list([rng.normal(size=(5, 2)), rng.normal(size=(3, 2))], dt=0.1)
    save_trajectories(data, tmp_path / "ok.npz")
    save_trajectories(data, tmp_path / "ok.csv")
    scipy.io.savemat(tmp_path / "ok.mat", {"data": rng.normal(size=(2, 6, 3))})
    seeds = {ext: (tmp_path / f"ok{ext}").read_bytes() for ext in (".npz", ".csv", ".mat")}
    deadline = time.time() + 60
    tried = 0
    while time.time() < deadline:
        for ext, blob in seeds.items():
            for j, mutated in enumerate(_mutations(blob, rng)):
                path = tmp_path / f"m{j}{ext}"
                path.write_bytes(mutated)
                try:
                    got = load_trajectories(path, dt=0.1)
                    assert np.isfinite(got.x[~np.isnan(got.x)]).all()
                except SlowflowError as exc:
                    assert "\n" not in str(exc) and str(path.name) in str(exc)
                tried += 1
    assert tried > 100


# ---------------------------------------------------------------------- reproducibility


def test_same_seed_same_model_and_rollout(tmp_path):
    """Same data, same seed, same machine: identical weights, identical model-file weights
    and identical rollouts. (The files also record wall-clock timings, which differ.)"""
    import torch

    from slowflow.model.io import load_model, save_model
    from slowflow.rollout import predict
    from slowflow.simulate import simulate_bursts
    from slowflow.train import fit

    data = simulate_bursts("ou", n_traj=200, t_end=0.5, seed=4)
    models = [
        fit(data, "nsf", epochs=2, batch_size=256, seed=7, progress=False, threads=1)
        for _ in range(2)
    ]
    for k, v in models[0].state_dict().items():
        assert torch.equal(v, models[1].state_dict()[k]), k
    paths = [save_model(m, tmp_path / f"m{i}.pt") for i, m in enumerate(models)]
    loaded = [load_model(p) for p in paths]
    a = predict(loaded[0], [1.0], 20, 100, seed=3)
    b = predict(loaded[1], [1.0], 20, 100, seed=3)
    np.testing.assert_array_equal(a, b)
    with zipfile.ZipFile(paths[0]) as za, zipfile.ZipFile(paths[1]) as zb:
        tensors = sorted(n for n in za.namelist() if "/data/" in n)
        assert tensors == sorted(n for n in zb.namelist() if "/data/" in n)
        for name in tensors:
            assert za.read(name) == zb.read(name), name
    c = predict(loaded[0], [1.0], 20, 100, seed=4)
    assert not np.array_equal(a, c)
