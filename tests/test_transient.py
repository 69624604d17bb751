"""The transient test behind the automatic skip-first (slowflow.train.transient).

OU bursts are exactly Markov, so every position's increments follow the reference law:
the test's p-values are uniform there, and a first increment with a shifted mean or a
wider noise is caught and skipped, and the test stops at the first position that passes.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from slowflow.data import Trajectories
from slowflow.train.transient import transient_length

DT = 0.01
A, S = np.exp(-DT), 0.3 * np.sqrt((1 - np.exp(-2 * DT)) / 2)


def _ou(n_traj, n_obs, seed, shift=0.0, widen=1.0, d=1):
    """OU bursts (independent components) whose first increment has its mean moved by
    ``shift`` noise standard deviations and its noise scaled by ``widen``."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_traj, n_obs, d))
    x[:, 0] = rng.uniform(-1, 1, (n_traj, d))
    for k in range(n_obs - 1):
        noise = S * rng.standard_normal((n_traj, d))
        if k == 0:
            noise = widen * noise + shift * S
        x[:, k + 1] = A * x[:, k] + noise
    return Trajectories(x=x, dt=DT)


def test_no_transient_on_markov_bursts():
    for d in (1, 2):
        out = transient_length(_ou(2000, 51, seed=3, d=d), max_skip=2, seed=0)
        assert out["skip"] == 0, out
        assert len(out["positions"]) == 1 and out["positions"][0]["position"] == 0


def test_null_p_values_are_uniform():
    """Under no transient the position-0 p-values are uniform: of 200 independent data
    sets, the number below 0.05 is Binomial(200, 0.05), mean 10, sd 3.1; accepted 2-22
    (about 4 sd, so a calibrated test fails this about once in 10^4 runs) and a
    Kolmogorov-Smirnov test against the uniform law at level 1e-3."""
    p = [
        transient_length(_ou(400, 11, seed=100 + i), max_skip=1, seed=0)["positions"][0]["p_value"]
        for i in range(200)
    ]
    assert 2 <= sum(v < 0.05 for v in p) <= 22, sorted(p)[:25]
    assert stats.kstest(p, "uniform").pvalue > 1e-3


def test_a_biased_first_increment_is_skipped():
    """A mean shift of 0.3 noise sd on 2,000 first increments is a 13-sigma effect; the
    test skips position 0 and stops at position 1, which passes."""
    out = transient_length(_ou(2000, 51, seed=4, shift=0.3), max_skip=3, seed=0)
    assert out["skip"] == 1, out
    first, second = out["positions"]
    assert first["p_value"] < 1e-10 and second["p_value"] > out["alpha"]


def test_a_wider_first_increment_is_skipped():
    """Noise 20 % wider at the first step: variance ratio about 1.44 there."""
    out = transient_length(_ou(2000, 51, seed=5, widen=1.2), max_skip=3, seed=0)
    assert out["skip"] == 1, out
    assert 1.3 < out["positions"][0]["variance_ratio"][0] < 1.6


def test_too_little_data_or_no_room_skips_nothing():
    assert transient_length(_ou(2000, 51, seed=6, shift=0.3), max_skip=0)["skip"] == 0
    few = transient_length(_ou(3, 21, seed=6, shift=0.3), max_skip=2)
    assert few["skip"] == 0 and few["positions"] == []
