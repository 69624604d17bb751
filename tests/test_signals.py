"""Ctrl-C (SIGINT) and SIGTERM on real `slowflow` processes, for every command that writes
a file: the command stops with exit code 130 and no traceback, every existing output is
left byte for byte as it was, and no temporary file is left behind.

Each child imports its heavy modules first and prints ``ready``; the signal comes 1 s
later, while the command works (each workload below takes several seconds, so a command
that finished before the signal fails the test rather than passing it unexamined)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slowflow.data import Trajectories, save_trajectories
from slowflow.io.atomic import TEMP_MARK
from slowflow.simulate import simulate_bursts

CHILD = """
import sys
import matplotlib
matplotlib.use("Agg")
import numba, numpy, scipy.io, torch
import slowflow.cli, slowflow.evaluate.files, slowflow.evaluate.plots, slowflow.reproduce
import slowflow.rollout, slowflow.simulate, slowflow.train
torch.set_num_threads(1)
print("ready", flush=True)
sys.exit(slowflow.cli.main(sys.argv[1:]))
"""

# command line ({w}: shared inputs, {t}: this test's folder) and the outputs that exist
# before it runs (a folder output is given by the file in it)
COMMANDS = {
    "fit": (
        "fit {w}/f.npz --out {t}/o.pt --batch-size 1 --epochs 5 --preset gaussian-net",
        ["o.pt"],
    ),
    "predict npz": (
        "predict {w}/m.pt --x0 0.5 --steps 50 --n-paths 1000000 --chunk-paths 20000 "
        "--out {t}/o.npz",
        ["o.npz"],
    ),
    "predict npy": (
        "predict {w}/m.pt --x0 0.5 --steps 50 --n-paths 1000000 --chunk-paths 20000 "
        "--out {t}/o.npy",
        ["o.npy", "o.npy.json"],
    ),
    "simulate": ("simulate ou --n-traj 1000000 --t-end 1 --out {t}/o.npz", ["o.npz"]),
    "evaluate": ("evaluate {w}/p.npz {w}/r.npz --ref-b {w}/r.npz --out {t}/ev", ["ev/metrics.json"]),
    "check": (
        "check {w}/m.pt {w}/f.npz --n-starts 100000 --n-members 100 --out {t}/chk",
        ["chk/calibration.json"],
    ),
    "drift": ("drift {w}/m.pt --n-points 500 --n-samples 500000 --out {t}/d.npz", ["d.npz"]),
    "reproduce": ("reproduce ou --quick --out {t}/rep", ["rep/report.md"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """OU bursts f.npz (300 x 101 x 1), a 1-epoch Gaussian model m.pt, and two ensembles
    p.npz, r.npz (20,000 x 201 x 1) to evaluate."""
    d = tmp_path_factory.mktemp("signals")
    save_trajectories(simulate_bursts("ou", n_traj=300, t_end=1.0, seed=0), d / "f.npz")
    run = subprocess.run(
        [sys.executable, "-m", "slowflow", "fit", str(d / "f.npz"), "--out", str(d / "m.pt")]
        + ["--epochs", "1", "--preset", "gaussian-net"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rng = np.random.default_rng(0)
    for name in ("p", "r"):
        x = np.cumsum(rng.normal(scale=0.1, size=(20_000, 201, 1)), axis=1)
        save_trajectories(Trajectories(x=x, dt=0.01), d / f"{name}.npz")
    return d


# SIGTERM (handled by slowflow since this test exists) for every command, and SIGINT for two
# of them in the default run; SIGINT for the others, ~7 s each, in the slow suite.
CASES = [pytest.param(c, signal.SIGTERM, id=f"{c}-SIGTERM") for c in COMMANDS] + [
    pytest.param(
        c,
        signal.SIGINT,
        id=f"{c}-SIGINT",
        marks=() if c in ("fit", "predict npz") else pytest.mark.slow,
    )
    for c in COMMANDS
]


@pytest.mark.parametrize(("command", "sig"), CASES)
def test_interrupted_command_leaves_files_as_they_were(work, tmp_path, command, sig):
    line, outputs = COMMANDS[command]
    before = {}
    for name in outputs:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"old {name}\n".encode())
        before[path] = path.read_bytes()
    argv = line.format(w=work, t=tmp_path).split()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Traceback" not in err and "interrupted" in err, err
    for path, content in before.items():
        assert path.read_bytes() == content, f"{path.name} was changed"
    assert not [p for p in tmp_path.rglob("*") if TEMP_MARK in p.name]
    assert not [p for p in work.rglob("*") if TEMP_MARK in p.name]
    if command == "fit":  # stopped while loading or in the first epoch: no model, no checkpoint
        assert "nothing was written" in err or "discarded" in err, err
        assert not (tmp_path / "o.pt.ckpt").exists()


def test_an_interrupt_the_interpreter_drops_still_stops_the_command(tmp_path, monkeypatch, capsys):
    """SIGTERM arriving while Python runs a ctypes callback (numba's compiler calls back
    into Python that way) raises a KeyboardInterrupt that the interpreter prints and drops,
    so the command would run on and replace its output. The stop request is recorded
    first: the output is not replaced, the exit code is 130, and no traceback is shown."""
    import ctypes
    import signal

    import slowflow.simulate as sim
    from slowflow.cli import main

    original = sim.simulate_bursts

    def interrupted_inside_a_callback(*args, **kwargs):
        callback = ctypes.CFUNCTYPE(None)(lambda: signal.raise_signal(signal.SIGTERM))
        callback()  # the KeyboardInterrupt raised in here is dropped by ctypes
        return original(*args, **kwargs)

    monkeypatch.setattr(sim, "simulate_bursts", interrupted_inside_a_callback)
    out = tmp_path / "o.npz"
    out.write_bytes(b"old")
    capsys.readouterr()
    rc = main(["simulate", "ou", "--n-traj", "20", "--t-end", "0.1", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 130 and out.read_bytes() == b"old"
    assert "Traceback" not in err and "interrupted" in err
    assert not [p for p in tmp_path.iterdir() if TEMP_MARK in p.name]
