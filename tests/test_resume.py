"""Interrupted `slowflow fit` processes: SIGINT keeps the best model, SIGKILL leaves the
checkpoint intact, and --resume finishes as well as an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slowflow.data import save_trajectories
from slowflow.model.io import load_model
from slowflow.simulate import simulate_bursts

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _fit_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "slowflow",
        "fit",
        str(data),
        "--out",
        str(out),
        "--preset",
        "gaussian-net",
        "--epochs",
        "40",
        "--patience",
        "40",
        "--seed",
        "3",
        *extra,
    ]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    start = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"fit exited early: {proc.communicate()}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def ou_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "ou.npz"
    save_trajectories(simulate_bursts("ou", n_traj=300, t_end=1.0, seed=0), path)
    return path


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_fit_resumes(ou_file, tmp_path, sig):
    """Kill a real fit process after its first checkpoint, then --resume. The resumed run
    completes all 40 epochs with a history that continues where the checkpoint stopped, and
    its best validation NLL is within 0.05 nats of an uninterrupted run's (the per-pair
    NLL of this OU data is about -2.2; 0.05 is well above seed-to-seed optimisation noise
    for a 40-epoch Gaussian fit yet far below the gap to an untrained model)."""
    out = tmp_path / "m.pt"
    ckpt = Path(str(out) + ".ckpt")
    proc = subprocess.Popen(
        _fit_cmd(ou_file, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True
    )
    _wait_for(ckpt, proc)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert ckpt.exists(), err
    if sig == signal.SIGKILL:
        assert not out.exists()
    else:  # SIGINT / SIGTERM: a clean stop that writes the best model so far
        assert proc.returncode == 130, err
        assert load_model(out).history["stop_reason"].startswith("interrupted")
    done = subprocess.run(
        _fit_cmd(ou_file, out, "--resume"), capture_output=True, text=True, env=ENV, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert not ckpt.exists()
    resumed = load_model(out).history
    assert resumed["epoch"] == list(range(len(resumed["epoch"])))
    assert len(resumed["epoch"]) == 40
    ref_out = tmp_path / "ref.pt"
    ref = subprocess.run(
        _fit_cmd(ou_file, ref_out), capture_output=True, text=True, env=ENV, timeout=300
    )
    assert ref.returncode == 0, ref.stderr
    assert abs(resumed["best_val_nll"] - load_model(ref_out).history["best_val_nll"]) < 0.05


def test_resume_without_checkpoint_is_an_error(ou_file, tmp_path):
    run = subprocess.run(
        _fit_cmd(ou_file, tmp_path / "m.pt", "--resume"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert run.returncode == 2
    assert "no checkpoint" in run.stderr and "Traceback" not in run.stderr
