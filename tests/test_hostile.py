"""A hostile user: code planted next to the data, savers that pick their own file names,
outputs that stream, schedules and fits that must not report failure as success, and a
property-based run of the command line over option values (see SECURITY.md)."""

from __future__ import annotations

import io
import os
import tempfile
import tracemalloc
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slowflow.cli import main
from slowflow.data import Trajectories, load_trajectories, save_trajectories
from slowflow.errors import TrainingError
from slowflow.io.atomic import TEMP_MARK, atomic_write
from slowflow.model.config import get_preset
from slowflow.model.flowmap import FlowMap
from slowflow.rollout import predict, predict_to_trajectories_file
from slowflow.simulate import simulate_bursts
from slowflow.train import Schedule, TrainConfig, fit

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:only .* training pairs:RuntimeWarning"),
]


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if TEMP_MARK in p.name]


@pytest.fixture(scope="module")
def work(tmp_path_factory, torch_one_thread) -> Path:
    """OU bursts f.npz (50 x 21 x 1) and a 1-epoch Gaussian model m.pt."""
    d = tmp_path_factory.mktemp("hostile")
    save_trajectories(simulate_bursts("ou", n_traj=50, t_end=0.2, seed=3), d / "f.npz")
    torch.set_num_threads(1)
    argv = ["fit", str(d / "f.npz"), "--out", str(d / "m.pt"), "--epochs", "1"]
    with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
        assert main([*argv, "--preset", "gaussian-net"]) == 0
    x = np.random.default_rng(1).normal(size=(200, 11, 1))
    save_trajectories(Trajectories(x=x, dt=0.01), d / "e.npz")
    return d


# ------------------------------------------------------------------------- no code runs
def test_mat_reader_runs_no_code_from_the_working_directory(tmp_path, monkeypatch):
    """The MATLAB reader's child Python must not import a numpy.py or sitecustomize.py lying
    in the working directory (or on PYTHONPATH) next to the data."""
    from scipy.io import savemat

    x = np.random.default_rng(0).normal(size=(1, 11, 4))  # [d, n_obs, n_traj]
    savemat(tmp_path / "d.mat", {"data": x})
    sentinel = tmp_path / "RAN"
    for name in ("numpy.py", "sitecustomize.py", "scipy.py"):
        (tmp_path / name).write_text(f"open({str(sentinel)!r}, 'a').write('{name}')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    data = load_trajectories("d.mat", dt=0.01)
    assert not sentinel.exists(), sentinel.read_text()
    np.testing.assert_array_equal(data.x, x.T)


# ---------------------------------------------------------------------- outputs
def test_atomic_write_refuses_a_saver_that_appends_a_suffix(tmp_path):
    """numpy.savez appends .npz to a name without it: the empty reserved file must never be
    moved onto the target (this destroyed models: drift m.pt --out m.pt)."""
    target = tmp_path / "m.pt"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="instead of the temporary"):
        with atomic_write(target) as tmp:
            np.savez(tmp, x=np.zeros(3))
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_output_locations_are_refused_before_work(tmp_path):
    """A name too long for a temporary file next to it used to fail only after the whole
    computation; a name longer than the file system allows, or a folder without write
    permission (not testable as root), is refused up front."""
    from slowflow.errors import ConfigError
    from slowflow.io.atomic import check_output

    check_output(tmp_path / ("a" * 250 + ".npz"))  # fits: the temporary name is shortened
    with atomic_write(tmp_path / ("b" * 250 + ".npz")) as tmp:
        tmp.write_bytes(b"ok")
    assert (tmp_path / ("b" * 250 + ".npz")).read_bytes() == b"ok"
    with pytest.raises(ConfigError, match="too long"):
        check_output(tmp_path / ("a" * 300 + ".npz"))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match="cannot write"):
            check_output(locked / "o.npz")
    assert not _temps(tmp_path)


@pytest.mark.parametrize("ext", [".npz", ".csv"])
def test_streamed_prediction_equals_the_in_memory_one(tmp_path, ext):
    """predict's streamed .npz/.csv holds predict()'s paths at the kept steps, value for
    value, with Delta x every, across several chunks."""
    model = FlowMap(1, get_preset("gaussian"), 0.01)
    path = tmp_path / f"p{ext}"
    predict_to_trajectories_file(model, [0.5], 6, path, n_paths=10, seed=4, chunk_paths=4, every=2)
    data = load_trajectories(path)
    ref = predict(model, [0.5], 6, 10, seed=4, batch_size=4)[:, ::2]
    np.testing.assert_array_equal(data.x, ref)
    assert data.dt == pytest.approx(0.02, rel=1e-12)


def test_streamed_npz_memory_is_one_chunk(tmp_path):
    """Writing a 20,000 x 51 x 1 float64 ensemble (8.2 MB) as .npz allocates (numpy, traced)
    far less than the ensemble: the pieces of one 1,000-path chunk, about 0.4 MB. The bound,
    a quarter of the result, leaves room for tracing noise; an in-memory write needs the
    whole result at least once."""
    model = FlowMap(1, get_preset("gaussian"), 0.01)
    path = tmp_path / "big.npz"
    tracemalloc.start()
    try:
        predict_to_trajectories_file(model, [0.0], 50, path, n_paths=20_000, chunk_paths=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = 20_000 * 51 * 8
    assert load_trajectories(path).x.shape == (20_000, 51, 1)
    assert peak < result / 4, (peak, result)


def test_model_archive_is_sized_before_unpacking(work, monkeypatch):
    """A torch file is a zip whose members may unpack to far more than the file (a 32 MB
    file can declare 32 GB of compressed zeros): their declared sizes are checked against
    the available memory before torch reads them (here made smaller than the model)."""
    import slowflow.io.limits as limits
    from slowflow.errors import ModelFileError
    from slowflow.model.io import load_model

    monkeypatch.setattr(limits, "available_memory", lambda: 1000)
    with pytest.raises(ModelFileError, match="the unpacked model file would need"):
        load_model(work / "m.pt")


def test_text_and_matlab_files_are_sized_before_reading(tmp_path, monkeypatch):
    """A CSV becomes Python strings (about 12 bytes of memory per byte of file) before it
    becomes numbers, and a MATLAB file is read whole: both are refused when that would not
    fit (available memory made 1 kB here; the files are ~0.2-1 kB)."""
    from scipy.io import savemat

    import slowflow.io.limits as limits
    from slowflow.errors import DataError

    (tmp_path / "d.csv").write_text("traj,t,x\n" + "".join(f"0,{k / 100},{k}\n" for k in range(20)))
    savemat(tmp_path / "d.mat", {"data": np.zeros((1, 20, 3))})
    assert load_trajectories(tmp_path / "d.csv").n_obs == 20
    monkeypatch.setattr(limits, "available_memory", lambda: 1000)
    for name in ("d.csv", "d.mat"):
        with pytest.raises(DataError, match="reading this file would need"):
            load_trajectories(tmp_path / name, dt=0.01)


# ------------------------------------------------------------------ success means success
def test_budget_governs_the_warmup():
    """--epochs 1e9 --max-minutes 0.1: the warm-up is 2 % of the 6 s budget (0.12 s), not
    of 10^9 epochs; without a budget the step-based schedule is unchanged."""
    sched = Schedule(TrainConfig(epochs=10**9, max_minutes=0.1), steps_per_epoch=10)
    assert sched(5, elapsed=0.0) < 1e-6
    assert sched(5, elapsed=0.06) == pytest.approx(0.5)
    assert sched(50, elapsed=0.12) == pytest.approx(1.0, abs=1e-6)
    assert sched(60, elapsed=6.0) == pytest.approx(0.01)
    assert sched.warmed_up(60, 0.12) and not sched.warmed_up(60, 0.1)
    plain = Schedule(TrainConfig(epochs=10), steps_per_epoch=10)  # warm-up: 2 steps
    assert [plain(0), plain(1)] == [0.5, 1.0]


def test_fit_without_a_finite_validation_nll_is_an_error():
    """A learning rate of 1e30 sends a network mean to infinity (the network-drift preset:
    a basis drift is fitted in closed form and stays finite)."""
    data = simulate_bursts("ou", n_traj=40, t_end=0.2, seed=2)
    with pytest.raises(TrainingError, match="no usable model"):
        fit(data, "network", epochs=3, lr=1e30, threads=1, progress=False)


def test_a_basis_fit_made_worse_by_training_says_so():
    """The same learning rate with the default basis drift: the scale network saturates,
    the validation NLL ends worse than before training, and a warning says so."""
    data = simulate_bursts("ou", n_traj=40, t_end=0.2, seed=2)
    with pytest.warns(RuntimeWarning, match="did not improve on the initial model"):
        fit(data, "gaussian-net", epochs=3, lr=1e30, threads=1, progress=False)


def test_fit_that_learns_nothing_warns_loudly():
    """A learning rate of 1e-12 changes nothing, and early stopping ends the run inside the
    warm-up: both are said, not hidden behind a normal return."""
    data = simulate_bursts("ou", n_traj=40, t_end=0.2, seed=2)
    with pytest.warns(RuntimeWarning) as seen:
        fit(data, "gaussian-net", epochs=1000, lr=1e-12, patience=1, threads=1, progress=False)
    text = " ".join(str(w.message) for w in seen)
    assert "did not improve on the initial model" in text
    assert "never reached its peak" in text


def test_fit_interrupted_before_its_first_epoch_writes_nothing(work, tmp_path, monkeypatch, capsys):
    """SIGTERM while the data load (simulated: the handler fires as soon as it is set): no
    epoch completed, so the existing model stays as it was and no checkpoint is claimed."""
    import slowflow.cli as cli

    out = tmp_path / "m.pt"
    out.write_bytes(b"previous model")
    real = cli.signal.signal

    def fire_at_once(sig, handler):
        old = real(sig, handler)
        if getattr(handler, "__name__", "") == "on_term":
            handler(sig, None)
        return old

    monkeypatch.setattr(cli.signal, "signal", fire_at_once)
    rc = main(["fit", str(work / "f.npz"), "--out", str(out), "--preset", "gaussian-net"])
    err = capsys.readouterr().err
    assert rc == 130
    assert "before the first epoch completed; nothing was written" in err
    assert "checkpoint kept" not in err
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# --------------------------------------------------------------- property-based CLI run
EDGE = [
    "0",
    "-1",
    "1",
    "2",
    "0.5",
    "-0.0",
    "1e-300",
    "1e12",
    "1e999",
    "-1e999",
    "nan",
    "inf",
    "-inf",
    "1 2",
    "1,2",
    "1,,2",
    ",",
    "",
    " ",
    "0x10",
    "1_000",
    "١",
    "1e",
    "e1",
    "--",
    "9" * 30,
    "2.5",
]  # fmt: skip (no 1e6: drift --n-points 1e6 is valid and takes 20 minutes)
OPTIONS = {
    "predict": (
        "predict {m} --x0 0.5 --steps 2 --n-paths 3 --out {o}.npz",
        ["--x0", "--steps", "--n-paths", "--every", "--chunk-paths", "--seed"],
    ),
    "drift": ("drift {m} --n-points 2 --n-samples 10 --out {o}.npz", ["--x", "--n-points", "--n-samples", "--seed"]),
    "simulate": (
        "simulate ou --n-traj 3 --t-end 0.05 --out {o}.npz",
        ["--n-traj", "--t-end", "--dt-obs", "--substeps", "--seed", "--x0"],
    ),
    "evaluate": ("evaluate {e} {e} --out {o}", ["--times", "--dt", "--w1-steps", "--ref-b"]),
    "check": (
        "check {m} {f} --n-starts 10 --n-members 2 --max-lead 2 --out {o}",
        ["--max-lead", "--n-starts", "--n-members", "--dt", "--seed", "--system"],
    ),
    "fit": (
        "fit {f} --epochs 1 --batch-size 64 --preset gaussian --out {o}.pt",
        ["--epochs", "--batch-size", "--lr", "--patience", "--pairs-per-traj", "--max-minutes", "--dt"],
    ),
}  # fmt: skip


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    command=st.sampled_from(sorted(OPTIONS)),
    choice=st.data(),
)
def test_cli_over_option_values(work, tmp_path, command, choice):
    """Any value of any option: exit 0 with the output written, or exit 2 with exactly one
    ``slowflow: error:`` line; never a traceback, never a temporary file left behind."""
    line, options = OPTIONS[command]
    option = choice.draw(st.sampled_from(options), label="option")
    value = choice.draw(
        st.one_of(st.sampled_from(EDGE), st.integers(-3, 5).map(str)), label="value"
    )
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    out = folder / "o"
    argv = line.format(m=work / "m.pt", f=work / "f.npz", e=work / "e.npz", o=out).split()
    argv = [*argv, option, value]
    err, stdout = io.StringIO(), io.StringIO()
    torch.set_num_threads(1)
    with redirect_stderr(err), redirect_stdout(stdout):
        rc = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text
    assert not _temps(tmp_path) and not _temps(work)
    written = [p for p in folder.rglob("*") if p.is_file()]
    if rc == 0 or (command == "check" and rc == 1):  # check: 1 = ran, kernel flagged
        assert written, text
    else:
        errors = [s for s in text.splitlines() if s.startswith("slowflow: error:")]
        assert rc == 2 and len(errors) == 1, (argv, rc, text)
        assert not written


def test_evaluate_failing_midway_keeps_the_previous_folder(work, tmp_path, monkeypatch, capsys):
    """evaluate writes metrics.json and several figures: a failure while drawing the third
    leaves the previous files of the folder as they were (all files or none)."""
    from slowflow.evaluate import plots

    out = tmp_path / "ev"
    out.mkdir()
    (out / "metrics.json").write_text("previous")

    def broken(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(plots, "histograms", broken)
    e = str(work / "e.npz")
    assert main(["evaluate", e, e, "--out", str(out)]) == 2
    assert "disk full" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "previous"
