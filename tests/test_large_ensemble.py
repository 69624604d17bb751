"""Large ensembles: rollouts streamed to an .npy file chunk by chunk, and metrics read
chunk-wise.

The streamed file must hold exactly what the in-memory rollout returns (same seed, chunk
size = batch size), the write must be atomic, memory must stay bounded by one chunk, and the
chunk-wise statistics must equal the in-memory metrics (exactly where the same values go
through the same arithmetic, else to float64 rounding, stated per test).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import slowflow.rollout.engine as rollout_module
import slowflow.rollout.files as rollout_files
from slowflow.cli import main
from slowflow.data import load_trajectories
from slowflow.errors import ConfigError, DataError
from slowflow.evaluate import metrics as M
from slowflow.model.config import get_preset
from slowflow.model.flowmap import build_model
from slowflow.rollout import predict, predict_to_file

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _model(preset: str = "gaussian-net", d: int = 1, box: float | None = None):
    """A fresh model with non-trivial random weights in every layer (the rollout is then a
    state-dependent random map, not a plain random walk); ``box`` sets the training range
    [-box, box] so that out-of-range excursions are tracked."""
    model = build_model(get_preset(preset), d, 0.01)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        if model.config.uses_basis_scale:  # a unit step std, as the network scale starts
            model.cov_coef.mul_(1.0 / float(model.dt))
    if box is not None:
        model.x_lo.fill_(-box)
        model.x_hi.fill_(box)
    return model


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if ".tmp-" in p.name]


# ------------------------------------------------------------------------- rollout to file


@pytest.mark.filterwarnings("ignore:rollout.*left the training:RuntimeWarning")
@pytest.mark.parametrize(
    ("preset", "d", "chunk", "every"),
    [
        ("gaussian-net", 1, 7, 1),  # chunks of 7 do not divide 50 paths: a short last chunk
        ("gaussian-net", 2, 64, 1),  # one chunk larger than the ensemble
        ("gaussian-net", 2, 16, 5),
        ("coupling", 1, 13, 2),  # a spline flow (another sampling path through zuko)
    ],
)
def test_file_equals_in_memory_rollout(tmp_path, preset, d, chunk, every):
    """The .npy file holds predict(..., batch_size=chunk) at steps 0, every, ..., value for
    value (exact: both run the same float32 rollout; float32 -> float64 is exact), and the
    summaries agree (every step is checked in both, also the ones not kept)."""
    model = _model(preset, d, box=1.0)
    x0 = [0.3] * d
    path = tmp_path / "p.npy"
    with pytest.warns(RuntimeWarning, match="left the training data's range"):
        summary = predict_to_file(
            model, x0, 20, path, n_paths=50, seed=11, chunk_paths=chunk, every=every
        )
    with pytest.warns(RuntimeWarning, match="left the training data's range"):
        ref, ref_summary = predict(
            model, x0, 20, 50, seed=11, batch_size=chunk, return_summary=True
        )
    x = np.load(path)
    assert x.dtype == np.float32 and x.shape == (50, 20 // every + 1, d)
    np.testing.assert_array_equal(x.astype(np.float64), ref[:, ::every])
    assert summary == ref_summary
    assert 0 < summary.outside_fraction <= 1
    # another seed gives other paths; float64 storage holds the same values
    predict_to_file(model, x0, 20, tmp_path / "q.npy", n_paths=50, seed=12, chunk_paths=chunk)
    assert not np.array_equal(np.load(tmp_path / "q.npy")[:, -1], ref[:, -1])
    predict_to_file(
        model, x0, 20, tmp_path / "r.npy", n_paths=50, seed=11, chunk_paths=chunk,
        every=every, dtype=np.float64,
    )  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "r.npy"), ref[:, ::every])


@pytest.mark.parametrize("preset", ["gaussian", "coupling", "paper"])
def test_blocked_model_evaluation_gives_the_unblocked_paths(preset, monkeypatch):
    """On the CPU the model is evaluated in blocks of rows while each step's noise is drawn
    for the whole batch: with blocks of 7 rows the paths equal those of one evaluation of
    all 40 rows (exact), so the block size does not change the ensemble."""
    model = _model(preset, 2)
    monkeypatch.setattr(rollout_module, "_CPU_EVAL_ROWS", 10**6)
    whole = predict(model, [0.1, 0.2], 5, 40, seed=2)
    monkeypatch.setattr(rollout_module, "_CPU_EVAL_ROWS", 7)
    np.testing.assert_array_equal(predict(model, [0.1, 0.2], 5, 40, seed=2), whole)


def test_nonfinite_paths_are_reported_when_not_kept(tmp_path):
    """A kernel that turns every path non-finite at step 1 is reported at step 1 even when
    only every 4th step is written (the check runs on every step)."""
    model = build_model(get_preset("gaussian-net"), 1, 0.01)
    model.d_std.fill_(math.inf)
    with pytest.warns(RuntimeWarning, match="3 of 3 paths became non-finite"):
        summary = predict_to_file(model, [0.5], 8, tmp_path / "p.npy", n_paths=3, every=4)
    assert summary.nonfinite_paths == 3 and summary.first_nonfinite_step == 1
    side = json.loads((tmp_path / "p.npy.json").read_text())
    assert side["meta"]["nonfinite_paths"] == 3


def test_sidecar_gives_dt_names_and_provenance(tmp_path):
    """<file>.npy.json records dt = Delta * every, the names, seed, x0 and every;
    load_trajectories reads the step from it (no dt needed), checks a given dt against it,
    and refuses a sidecar whose shape does not match the array."""
    model = _model(d=2)
    model.meta = {"names": ["u", "v"], "slowflow_version": "test"}
    path = tmp_path / "p.npy"
    predict_to_file(model, [0.1, 0.2], 12, path, n_paths=9, seed=3, every=3, meta={"who": 1})
    side = json.loads((tmp_path / "p.npy.json").read_text())
    assert side["dt"] == pytest.approx(0.03) and side["shape"] == [9, 5, 2]
    assert side["names"] == ["u", "v"]
    assert side["meta"]["seed"] == 3 and side["meta"]["every"] == 3
    assert side["meta"]["x0"] == [0.1, 0.2] and side["meta"]["who"] == 1
    data = load_trajectories(path)
    assert data.dt == pytest.approx(0.03) and data.names == ("u", "v")
    assert data.x.shape == (9, 5, 2)
    with pytest.raises(DataError, match="key 'dt' is 0.03"):
        load_trajectories(path, dt=0.01)
    np.save(path, np.zeros((9, 4, 2)))  # the array changes, the sidecar is stale
    with pytest.raises(DataError, match=r"describes shape \[9, 5, 2\]"):
        load_trajectories(path)


def test_bad_arguments_are_refused_before_writing(tmp_path, monkeypatch):
    model = _model()
    cases = [
        (dict(path=tmp_path / "p.npz"), "writes .npy"),
        (dict(every=3), "not a multiple of every=3"),
        (dict(every=0), "every must be a positive integer"),
        (dict(chunk_paths=0), "chunk_paths must be a positive integer"),
        (dict(dtype=np.int16), "float32 or float64"),
    ]
    for kwargs, match in cases:
        args = dict(path=tmp_path / "p.npy", n_paths=5, every=1) | kwargs
        with pytest.raises(ConfigError, match=match):
            predict_to_file(model, [0.0], 10, **args)
    # not enough free disk space for the file: refused before the rollout starts
    full = SimpleNamespace(total=10**9, used=10**9, free=0)
    monkeypatch.setattr(rollout_files.shutil, "disk_usage", lambda p: full)
    with pytest.raises(ConfigError, match="are free there"):
        predict_to_file(model, [0.0], 10, tmp_path / "p.npy", n_paths=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


class _Interrupt:
    """Replaces rollout._sample: raises KeyboardInterrupt at the n-th step."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0
        self.original = rollout_module._sample

    def __call__(self, dist, gen):
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt
        return self.original(dist, gen)


def test_interrupt_keeps_existing_file_and_leaves_no_partial_file(tmp_path, monkeypatch):
    """Ctrl-C in the middle of the rollout (second chunk) leaves the previous file and its
    sidecar byte for byte, and no temporary file; a first write leaves nothing at all."""
    model = _model()
    path = tmp_path / "p.npy"
    predict_to_file(model, [0.0], 10, path, n_paths=20, chunk_paths=8, seed=1)
    before = path.read_bytes(), (tmp_path / "p.npy.json").read_bytes()
    monkeypatch.setattr(rollout_module, "_sample", _Interrupt(15))
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(model, [0.0], 10, path, n_paths=20, chunk_paths=8, seed=2)
    assert (path.read_bytes(), (tmp_path / "p.npy.json").read_bytes()) == before
    assert _no_temp_files(tmp_path)
    monkeypatch.setattr(rollout_module, "_sample", _Interrupt(15))
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(model, [0.0], 10, tmp_path / "new.npy", n_paths=20, chunk_paths=8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "p.npy.json"]


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    torch.set_num_threads(1)
    from slowflow.model.config import get_preset
    from slowflow.model.flowmap import build_model
    from slowflow.rollout import predict, predict_to_file

    def rss(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    n, steps, chunk, path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    model = build_model(get_preset("gaussian"), 1, 0.01)
    predict(model, [0.0], 2, chunk, batch_size=chunk)  # warm up torch's kernels
    base = rss("VmRSS:")
    predict_to_file(model, [0.0], steps, path, n_paths=n, chunk_paths=chunk, progress=False)
    streamed = rss("VmHWM:") - base
    x = predict(model, [0.0], steps, n, batch_size=chunk, progress=False)
    print(streamed, rss("VmHWM:") - base)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_streamed_rollout_memory_is_bounded_by_one_chunk(tmp_path):
    """Peak resident memory (VmHWM, in a fresh process) grows by less than a quarter of the
    file while 50,000 paths x 201 steps (40 MB as float32) stream to disk in chunks of 2,000
    paths (a 1.6 MB buffer plus the model's per-step activations for 2,000 paths); measured:
    3-5 MB. As a control, the in-memory rollout of the same ensemble in the same process must
    show most of its float64 array (> 60 of 80 MB; measured 83-84 MB) in the same measure,
    so the measure does see an ensemble held in memory. (tracemalloc would not do: torch's allocations are invisible to it.)"""
    n, steps, chunk = 50_000, 200, 2_000
    file_bytes = n * (steps + 1) * 4
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(n), str(steps), str(chunk),
         str(tmp_path / "m.npy")],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    streamed, in_memory = (int(v) for v in res.stdout.split())
    assert (tmp_path / "m.npy").stat().st_size > file_bytes
    assert in_memory > 1.5 * file_bytes, (streamed, in_memory)  # 3/4 of the float64 array
    assert streamed < file_bytes / 4, (streamed, in_memory)


# ------------------------------------------------------------------------ chunk-wise metrics


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    """pred (float32, 1,003 paths, also as .npy), ref_a (777 paths), ref_b (500 paths), 41
    steps, d = 2, each starting at 0 with spread growing like sqrt(t)."""
    rng = np.random.default_rng(0)
    scale = np.sqrt(np.arange(41))[None, :, None]
    pred = (rng.standard_normal((1003, 41, 2)) * scale + 0.05).astype(np.float32)
    ref_a = rng.standard_normal((777, 41, 2)) * scale
    ref_b = rng.standard_normal((500, 41, 2)) * scale
    path = tmp_path_factory.mktemp("ens") / "pred.npy"
    np.save(path, pred)
    return pred, ref_a, ref_b, path


def _sources(pred, path):
    return {
        "array": pred,
        "memmap": np.load(path, mmap_mode="r"),
        "NpyArray": M.NpyArray(path),
        "path": path,
    }


@pytest.mark.parametrize("source", ["array", "memmap", "NpyArray", "path"])
def test_scan_equals_in_memory_metrics(ensembles, source):
    """scan_ensemble in chunks of 100 / 64 paths against moment_errors, w1_marginals,
    numpy.quantile, histograms and autocorrelation. Quantiles, histograms and W1 see the
    same values in the same arithmetic, so they are exact; means and stds are merged per
    chunk (Chan's update) and the autocorrelation is taken about that mean, so they agree to
    float64 rounding (atol 1e-12 on values of order 1-10, where rounding is ~1e-14)."""
    pred, ref_a, _, path = ensembles
    src = _sources(pred, path)[source]
    steps = [0, 5, -1]
    sp = M.scan_ensemble(src, steps, chunk_paths=100)
    sr = M.scan_ensemble(ref_a, steps, chunk_paths=64)
    assert sp.slices.dtype == np.float32 and sp.slices.shape == (1003, 3, 2)
    expected = M.moment_errors(pred, ref_a)
    got = M.scan_moment_errors(sp, sr)
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=0, atol=1e-12, err_msg=key)
    np.testing.assert_array_equal(M.scan_w1(sp, sr), M.w1_marginals(pred, ref_a)[[0, 5, 40]])
    q = [0.05, 0.5, 0.95]
    np.testing.assert_array_equal(
        sp.quantiles(q), np.quantile(pred[:, [0, 5, 40]].astype(np.float64), q, axis=0)
    )
    for a, b in zip(M.scan_histograms(sp, sr), M.histograms(pred, ref_a, steps), strict=True):
        assert a["step"] == b["step"] and a["component"] == b["component"]
        for key in ("edges", "pred_density", "ref_density"):
            np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_allclose(
        M.scan_autocorrelation(src, 10, sp.mean), M.autocorrelation(pred, 10), atol=1e-12
    )


def test_w1_over_many_steps_in_bounded_groups(ensembles):
    """scan_w1_steps with a budget of 3 steps per pass (14 passes) gives w1_report's W1 and
    floor at every step (to rounding: the unequal-size W1 is a dot product whose summation
    order may change with the number of columns, atol 1e-13)."""
    pred, ref_a, ref_b, path = ensembles
    per_step = (1003 * 4 + 777 * 8 + 500 * 8) * 2
    w1, floor = M.scan_w1_steps(path, ref_a, ref_b, np.arange(41), max_bytes=3 * per_step)
    rep = M.w1_report(pred, ref_a, ref_b, 0.1)
    np.testing.assert_allclose(w1, rep["w1"], rtol=0, atol=1e-13)
    np.testing.assert_allclose(floor, rep["floor"], rtol=0, atol=1e-13)
    w1_only, none = M.scan_w1_steps(pred, ref_a, None, [3, 7])
    assert none is None
    np.testing.assert_allclose(w1_only, rep["w1"][[3, 7]], rtol=0, atol=1e-13)


def test_scan_rejects_bad_ensembles(ensembles, tmp_path):
    """Non-finite values are named by path, step and component; unreadable or misshapen
    files by name; scans over different steps are not compared."""
    pred, ref_a, _, path = ensembles
    bad = pred.copy()
    bad[123, 4, 1] = np.nan
    with pytest.raises(DataError, match="path 123, step 4, component 1"):
        M.scan_ensemble(bad, chunk_paths=50)
    with pytest.raises(DataError, match="path 123, step 4, component 1"):
        M.scan_autocorrelation(bad, 3, np.zeros((41, 2)))
    truncated = tmp_path / "t.npy"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t.npy: truncated"):
        M.NpyArray(truncated)
    np.save(tmp_path / "two.npy", np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"two.npy: the array has shape \(4, 3\)"):
        M.NpyArray(tmp_path / "two.npy")
    np.save(tmp_path / "f.npy", np.asfortranarray(np.zeros((4, 3, 2))))
    with pytest.raises(DataError, match="Fortran order"):
        M.NpyArray(tmp_path / "f.npy")
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(DataError, match="text.npy: not a readable .npy file"):
        M.NpyArray(tmp_path / "text.npy")
    with pytest.raises(ConfigError, match="different steps"):
        M.scan_w1(M.scan_ensemble(pred, [1]), M.scan_ensemble(ref_a, [2]))
    with pytest.raises(DataError, match="must agree"):
        M.scan_moment_errors(M.scan_ensemble(pred), M.scan_ensemble(ref_a[:, :10]))


def test_npy_array_slices_like_numpy(ensembles):
    pred, _, _, path = ensembles
    arr = M.NpyArray(path)
    assert arr.shape == pred.shape and arr.dtype == np.float32 and len(arr) == 1003
    np.testing.assert_array_equal(arr[10:20], pred[10:20])
    np.testing.assert_array_equal(arr[-3:], pred[-3:])
    np.testing.assert_array_equal(arr[5], pred[5])
    np.testing.assert_array_equal(arr[2:4, 7], pred[2:4, 7])
    np.testing.assert_array_equal(np.asarray(arr), pred)
    assert arr[20:10].shape == (0, 41, 2)
    with pytest.raises(TypeError):
        arr[::2]


# ------------------------------------------------------------------------------------ CLI


def _main(argv) -> int:
    torch.set_num_threads(1)
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_big")
    model = _model()
    model.meta = {"names": ["x1"]}
    from slowflow.model.io import save_model

    save_model(model, d / "m.pt")
    return d / "m.pt"


def test_predict_npy_streams_the_same_paths_as_npz(model_file, tmp_path, capsys):
    """`predict --out p.npy --chunk-paths 16` writes the paths of `--out p.npz` with the
    same seed and chunk size (exact), with dt in the sidecar; `--every 5` keeps every 5th
    step in both formats at dt = 5 Delta."""
    common = ["--x0", "0.2", "--steps", "20", "--n-paths", "40", "--seed", "4"]
    for every in ("1", "5"):
        npy, npz = tmp_path / f"p{every}.npy", tmp_path / f"p{every}.npz"
        opts = ["--every", every, "--chunk-paths", "16"]
        assert _main(["predict", model_file, *common, *opts, "--out", npy]) == 0
        assert _main(["predict", model_file, *common, *opts, "--out", npz]) == 0
        a, b = load_trajectories(npy), load_trajectories(npz)
        assert a.x.shape == (40, 20 // int(every) + 1, 1)
        np.testing.assert_array_equal(a.x, b.x)
        assert a.dt == pytest.approx(b.dt) and a.dt == pytest.approx(0.01 * int(every))
    out = capsys.readouterr().out
    assert "wrote" in out and "p5.npy.json" in out


def test_predict_refuses_a_too_large_in_memory_format(model_file, tmp_path, capsys):
    """10^6 paths x 1,001 observations (8 GB as float64) to .csv is refused at once with one
    line that names the size and the .npy alternative; nothing is written."""
    out = tmp_path / "big.csv"
    argv = ["predict", model_file, "--x0", "0", "--steps", "1000", "--n-paths", "1000000"]
    capsys.readouterr()
    assert _main([*argv, "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("slowflow: error: --out")
    assert "8.01 GB" in err[0] and ".npy" in err[0]
    assert _main([*argv[:4], "--steps", "10", "--n-paths", "5", "--every", "3", "--out", out]) == 2
    assert "not a multiple of --every 3" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def test_predict_interrupted_leaves_no_file(model_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C during `predict --out p.npy` exits 130 and leaves neither the file, its
    sidecar nor a temporary file."""
    monkeypatch.setattr(rollout_module, "_sample", _Interrupt(30))
    argv = ["predict", model_file, "--x0", "0", "--steps", "20", "--n-paths", "50"]
    assert _main([*argv, "--chunk-paths", "10", "--out", tmp_path / "p.npy"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


@pytest.mark.parametrize("d", [1, 2])
def test_evaluate_streamed_equals_in_memory(model_file, tmp_path, capsys, monkeypatch, d):
    """`evaluate` on .npy files read chunk-wise (forced by a tiny threshold, as for a file
    above 1 GiB) reports the in-memory metrics.json values: the same keys plus `streamed`,
    values to float64 rounding (atol 1e-12; W1 grid = every step here), and the same
    figures."""
    import slowflow.evaluate.files as ev_cli

    rng = np.random.default_rng(d)
    scale = np.sqrt(np.arange(31))[None, :, None]
    files = {}
    for name, n, shift in (("pred", 600, 0.1), ("ref", 500, 0.0), ("ref_b", 400, 0.0)):
        x = (rng.standard_normal((n, 31, d)) * scale + shift).astype(np.float32)
        np.save(tmp_path / f"{name}.npy", x)
        files[name] = tmp_path / f"{name}.npy"
    args = [files["pred"], files["ref"], "--ref-b", files["ref_b"], "--dt", "0.1"]
    assert _main(["evaluate", *args, "--out", tmp_path / "mem"]) == 0
    monkeypatch.setattr(ev_cli, "STREAM_ABOVE_BYTES", 1000)
    assert _main(["evaluate", *args, "--out", tmp_path / "big"]) == 0
    assert "(streamed)" in capsys.readouterr().out
    mem = _flat(json.loads((tmp_path / "mem" / "metrics.json").read_text()))
    big = _flat(json.loads((tmp_path / "big" / "metrics.json").read_text()))
    assert set(big) - set(mem) == {
        "streamed.w1_time_avg_steps",
        "streamed.w1_time_avg_stride",
        "streamed.note",
    }
    assert set(mem) <= set(big)
    for key, value in mem.items():
        np.testing.assert_allclose(
            np.asarray(big[key], dtype=float), np.asarray(value, dtype=float),
            rtol=0, atol=1e-12, err_msg=key,
        )  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "big").iterdir()) == sorted(
        p.name for p in (tmp_path / "mem").iterdir()
    )
    # fewer W1 steps: a coarser grid, stated in the output
    assert _main(["evaluate", *args, "--w1-steps", "11", "--out", tmp_path / "coarse"]) == 0
    coarse = json.loads((tmp_path / "coarse" / "metrics.json").read_text())
    assert coarse["streamed"]["w1_time_avg_stride"] == 3
    assert coarse["streamed"]["w1_time_avg_steps"] == 11


def test_evaluate_streamed_reads_dt_from_the_sidecar(model_file, tmp_path, capsys):
    """A predicted .npy with its sidecar is evaluated with --stream without --dt; without a
    sidecar and without --dt the error names the file."""
    pred = tmp_path / "p.npy"
    argv = ["--x0", "0.2", "--steps", "20", "--n-paths", "60", "--every", "2"]
    assert _main(["predict", model_file, *argv, "--out", pred]) == 0
    assert _main(["predict", model_file, *argv, "--seed", "1", "--out", tmp_path / "r.npz"]) == 0
    out = tmp_path / "ev"
    assert _main(["evaluate", pred, tmp_path / "r.npz", "--stream", "--out", out]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["dt"] == pytest.approx(0.02) and report["n_paths_pred"] == 60
    np.save(tmp_path / "bare.npy", np.load(pred))
    capsys.readouterr()
    assert _main(["evaluate", tmp_path / "bare.npy", pred, "--stream", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "bare.npy" in err and "--dt" in err and len(err.strip().splitlines()) == 1
