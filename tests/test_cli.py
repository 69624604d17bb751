"""The ``slowflow`` command line, run in-process through ``slowflow.cli.main``.

Happy paths write files in the standard layout; every user error exits with code 2 and a
single ``slowflow: error: ...`` line on stderr, without a traceback and without writing
the requested output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slowflow.cli import main
from slowflow.data import load_trajectories

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:only .* training pairs:RuntimeWarning"),
]


def _argv(*parts) -> list[str]:
    """Command-line words: strings are split on whitespace, paths are kept whole."""
    words: list[str] = []
    for part in parts:
        words += part.split() if isinstance(part, str) else [str(part)]
    return words


def _main(argv: list[str]) -> int:
    # One torch thread for every command: a `simulate` run before (numba's OpenMP runtime)
    # resets torch's thread count, and 2 spinning threads on the 2 shared cores slow small
    # fits down by an order of magnitude. The module fixture restores the count at the end.
    torch.set_num_threads(1)
    return main(argv)


def _run(capsys, *parts) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    rc = _main(_argv(*parts))
    out, err = capsys.readouterr()
    return rc, out, err


def _quiet(*parts) -> None:
    """Run a setup command in a module fixture (no capsys there); it must succeed."""
    rc = _main(_argv(*parts))
    assert rc == 0, parts


@pytest.fixture(scope="module")
def work(tmp_path_factory, torch_one_thread) -> Path:
    """OU bursts f.npz (50 x 21 x 1) and a 2-epoch default-preset model m.pt fitted on it."""
    d = tmp_path_factory.mktemp("cli")
    _quiet("simulate ou --n-traj 50 --t-end 0.2 --seed 3 --out", d / "f.npz")
    _quiet("fit", d / "f.npz", "--out", d / "m.pt", "--epochs 2 --batch-size 256")
    return d


def test_systems_lists_all_eight(capsys):
    """`systems` prints a header and 8 systems; the paper's examples carry aliases
    ex4.1..ex4.5 (exact text checks)."""
    rc, out, err = _run(capsys, "systems")
    assert rc == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["name", "alias"]
    rows = lines[1:]
    assert len(rows) == 8
    names = {r.split()[0] for r in rows}
    assert {"ou", "triad", "double_well", "ring"} <= names
    aliases = {r.split()[1] for r in rows}
    assert {f"ex4.{i}" for i in range(1, 6)} <= aliases


def test_simulate_bursts_writes_loadable_npz(tmp_path, capsys):
    """`simulate ou --n-traj 50 --t-end 0.2` writes (50, 21, 1) at dt = 0.01."""
    out_file = tmp_path / "f.npz"
    rc, out, err = _run(capsys, "simulate ou --n-traj 50 --t-end 0.2 --out", out_file)
    assert rc == 0, err
    assert "wrote" in out and str(out_file) in out
    data = load_trajectories(out_file)
    assert data.x.shape == (50, 21, 1)
    assert data.dt == pytest.approx(0.01)
    assert data.meta["system"] == "ou"
    assert np.isfinite(data.x).all()


def test_simulate_ensemble_from_x0(tmp_path, capsys):
    """`simulate triad --x0 1 --n-paths 100 --t-end 0.1` writes (100, 11, 1) paths that all
    start at x = 1 (exact)."""
    out_file = tmp_path / "r.npz"
    rc, _, err = _run(capsys, "simulate triad --x0 1 --n-paths 100 --t-end 0.1 --out", out_file)
    assert rc == 0, err
    data = load_trajectories(out_file)
    assert data.x.shape == (100, 11, 1)
    assert np.all(data.x[:, 0, 0] == 1.0)


def test_fit_writes_model_and_removes_checkpoint(work):
    """A completed `fit` leaves the model and deletes its OUT.ckpt."""
    assert (work / "m.pt").stat().st_size > 0
    assert not (work / "m.pt.ckpt").exists()


@pytest.mark.parametrize("ext", [".npz", ".csv"])
def test_predict_writes_standard_trajectory_file(work, tmp_path, capsys, ext):
    """`predict m.pt --x0 1.5 --steps 10 --n-paths 20` writes (20, 11, 1) paths starting at
    1.5, at the model's dt, readable by load_trajectories; the npz has keys x, dt, names,
    meta (the native layout)."""
    out_file = tmp_path / f"p{ext}"
    rc, out, err = _run(
        capsys, "predict", work / "m.pt", "--x0 1.5 --steps 10 --n-paths 20 --out", out_file
    )
    assert rc == 0, err
    assert "wrote" in out
    data = load_trajectories(out_file)
    assert data.x.shape == (20, 11, 1)
    assert data.dt == pytest.approx(0.01)
    assert data.names == ("x1",)
    assert np.all(data.x[:, 0, 0] == 1.5)
    assert np.isfinite(data.x).all()
    if ext == ".npz":
        with np.load(out_file, allow_pickle=False) as z:
            assert set(z.files) == {"x", "dt", "names", "meta"}
            assert json.loads(str(z["meta"]))["kind"] == "prediction"


def test_predict_is_reproducible_by_seed(work, tmp_path, capsys):
    """Same --seed, same paths (exact); another seed, other paths."""
    paths = []
    for i, seed in enumerate((4, 4, 5)):
        f = tmp_path / f"p{i}.npz"
        rc, _, err = _run(
            capsys,
            "predict",
            work / "m.pt",
            f"--x0 1.0 --steps 3 --n-paths 8 --seed {seed}",
            "--out",
            f,
        )
        assert rc == 0, err
        paths.append(load_trajectories(f).x)
    np.testing.assert_array_equal(paths[0], paths[1])
    assert not np.array_equal(paths[0], paths[2])


def test_drift_prints_one_row_per_point(work, capsys):
    """`drift m.pt --x 0.5,1.0` prints a header and two rows, one per point, with finite
    numbers."""
    rc, out, err = _run(capsys, "drift", work / "m.pt", "--x 0.5,1.0 --n-samples 2000")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("x |")
    assert [ln.split("|")[0].strip() for ln in lines[1:]] == ["0.5", "1"]
    for ln in lines[1:]:
        drift = float(ln.split("|")[1].split("+-")[0])
        assert np.isfinite(drift)


# ------------------------------------------------------------------------------ errors


# Each command line is split on whitespace, then {w} (the module's work dir, holding
# f.npz and m.pt) and {t} (the test's empty tmp dir) are filled in; the last word is the
# output that must not be written.
ERROR_CASES = {
    "unknown-system": "simulate nosuch --n-traj 5 --out {t}/o.npz",
    "x0-wrong-dim-for-system": "simulate ou --x0 1,2 --out {t}/o.npz",
    "missing-data-file": "fit {t}/missing.npz --out {t}/o.pt",
    "predict-non-model-file": "predict {w}/f.npz --x0 1.5 --steps 3 --n-paths 5 --out {t}/o.npz",
    "unsupported-out-extension": "simulate ou --n-traj 5 --t-end 0.2 --out {t}/x.txt",
    "predict-x0-wrong-dim": "predict {w}/m.pt --x0 1,2 --steps 3 --n-paths 5 --out {t}/o.npz",
    "predict-bad-number": "predict {w}/m.pt --x0 abc --steps 3 --n-paths 5 --out {t}/o.npz",
    "fit-out-not-pt": "fit {w}/f.npz --out {t}/o.npz",
    "fit-bad-epochs": "fit {w}/f.npz --epochs 0 --out {t}/o.pt",
    "fit-unknown-preset": "fit {w}/f.npz --preset bogus --out {t}/o.pt",
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_user_errors_exit_2_with_one_line(work, tmp_path, capsys, case):
    """Exit code 2, stderr is exactly one line 'slowflow: error: ...', no traceback, nothing
    on stdout, and neither the output file nor a temporary/checkpoint file is left."""
    argv = [word.format(w=work, t=tmp_path) for word in ERROR_CASES[case].split()]
    capsys.readouterr()
    rc = _main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slowflow: error: ")
    assert "Traceback" not in err
    assert not Path(argv[-1]).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "files left behind"


def test_error_messages_name_the_culprit(work, tmp_path, capsys):
    """The one-line messages say what was wrong: the system, the dimension, the file."""
    out = tmp_path / "o.npz"
    _, _, err = _run(capsys, "simulate nosuch --n-traj 5 --out", out)
    assert "nosuch" in err
    _, _, err = _run(capsys, "simulate ou --x0 1,2 --out", out)
    assert "--x0" in err
    _, _, err = _run(capsys, "fit", tmp_path / "missing.npz", "--out", tmp_path / "o.pt")
    assert "missing.npz" in err
    _, _, err = _run(capsys, "predict", work / "f.npz", "--x0 1.5 --steps 3 --out", out)
    assert "f.npz" in err
    _, _, err = _run(capsys, "predict", work / "m.pt", "--x0 1,2 --steps 3 --out", out)
    assert "d=1" in err
    _, _, err = _run(capsys, "simulate ou --n-traj 5 --out", tmp_path / "x.txt")
    assert "x.txt" in err


# ------------------------------------------------------------------------------- check


def test_check_passes_a_good_model_on_held_out_data(tmp_path, capsys):
    """A 'gaussian' model fitted on 1,000 OU bursts is CALIBRATED on 200 held-out bursts
    (exit 0) and calibration.json records it. With 200 starts the flag needs a PIT
    dispersion beyond 1 +- 0.19 or a PIT bias beyond 0.06 (3 SE), far from the errors of such
    a fit (variance within ~5 %, mean within ~0.05 kernel std)."""
    train, held, model = tmp_path / "train.npz", tmp_path / "held.npz", tmp_path / "m.pt"
    _quiet("simulate ou --n-traj 1000 --t-end 1.0 --seed 1 --out", train)
    _quiet("simulate ou --n-traj 200 --t-end 1.0 --seed 2 --out", held)
    fit_options = "--preset gaussian --epochs 10 --batch-size 4096 --lr 3e-3 --patience 20"
    _quiet("fit", train, "--out", model, fit_options)
    out_dir = tmp_path / "check"
    sizes = "--n-starts 200 --n-members 30 --max-lead 3"
    rc, out, err = _run(capsys, "check", model, held, "--out", out_dir, sizes)
    assert rc == 0, out + err
    assert "verdict: CALIBRATED" in out
    report = json.loads((out_dir / "calibration.json").read_text())
    assert report["calibrated"] is True
    assert report["n_starts"] == 200 and report["n_members"] == 30
    assert len(report["leads"]) == 3


def test_fit_reads_a_settings_file_and_the_command_line_wins(tmp_path, capsys):
    """``fit --config FILE.toml``: [train] and [model] settings are used, an option given
    on the command line overrides the file, and an unknown key is one line naming the
    file, the table and the key (nothing written)."""
    from slowflow.model.io import load_model

    data = tmp_path / "d.npz"
    assert main(["simulate", "ou", "--n-traj", "40", "--t-end", "0.2", "--out", str(data)]) == 0
    cfg = tmp_path / "fit.toml"
    cfg.write_text('[train]\nepochs = 2\nseed = 5\n\n[model]\npreset = "gaussian-net"\n')
    out = tmp_path / "m.pt"
    assert main(["fit", str(data), "--config", str(cfg), "--seed", "7", "--out", str(out)]) == 0
    meta = load_model(out).meta
    assert meta["preset"] == "gaussian-net"
    assert meta["train_config"]["epochs"] == 2 and meta["train_config"]["seed"] == 7
    cfg.write_text("[train]\nepoch = 2\n")
    capsys.readouterr()
    assert main(["fit", str(data), "--config", str(cfg), "--out", str(tmp_path / "n.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fit.toml: [train] has no setting 'epoch'" in err[0]
    assert not (tmp_path / "n.pt").exists()


def test_fit_reports_the_innovation_law_and_takes_it_as_an_option(tmp_path, capsys):
    """``fit`` prints which innovation law it chose; ``--innovation gaussian`` keeps
    N(0, I) and is stored in the model's config."""
    from slowflow.model.io import load_model

    data = tmp_path / "d.npz"
    assert main(["simulate", "ou", "--n-traj", "200", "--t-end", "0.5", "--out", str(data)]) == 0
    capsys.readouterr()
    assert main(["fit", str(data), "--out", str(tmp_path / "a.pt")]) == 0
    assert "innovation law: gaussian" in capsys.readouterr().out
    assert (
        main(["fit", str(data), "--innovation", "gaussian", "--out", str(tmp_path / "b.pt")]) == 0
    )
    model = load_model(tmp_path / "b.pt")
    assert model.config.innovation == "gaussian" and not model.empirical_innovation
    assert "innovation law" not in capsys.readouterr().out
