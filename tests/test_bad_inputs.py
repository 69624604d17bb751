"""The bad-input catalogue: every row of the README's table is one case here.

Each case runs a real command line in-process. A bad input must exit with code 2 and print
exactly one line ``slowflow: error: ...`` that contains the stated fragment (naming the
problem), no traceback, and leave no output file (outputs are written to a temporary file
and moved into place). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slowflow.cli import main
from slowflow.data import Trajectories, save_trajectories

pytestmark = [
    pytest.mark.usefixtures("torch_one_thread"),
    pytest.mark.filterwarnings("ignore:only .* training pairs:RuntimeWarning"),
]


class Evil:
    """Unpickling this would create a sentinel file: a model file must never run it."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def _write_bad(t: Path, w: Path) -> None:
    """The bad files of the catalogue, in the test's tmp dir ``t``."""
    rng = np.random.default_rng(0)
    (t / "empty.npz").write_bytes(b"")
    good = (w / "f.npz").read_bytes()
    (t / "truncated.npz").write_bytes(good[: len(good) // 2])
    (t / "text.npz").write_text("this is not an npz file\n")
    np.savez(t / "nokey.npz", y=np.zeros((3, 4, 1)), dt=0.01)
    np.savez(t / "object.npz", x=np.array([[1.0], "a"], dtype=object), dt=0.01)
    x = rng.normal(size=(4, 10, 1))
    x[2, 3, 0] = np.nan
    np.savez(t / "nan.npz", x=x, dt=0.01)
    x = rng.normal(size=(4, 10, 1))
    x[1, 5, 0] = np.inf
    np.savez(t / "inf.npz", x=x, dt=0.01)
    np.savez(t / "oneobs.npz", x=rng.normal(size=(4, 1, 1)), dt=0.01)
    np.savez(t / "nodt.npz", x=rng.normal(size=(4, 10, 1)))
    np.savez(t / "negdt.npz", x=rng.normal(size=(4, 10, 1)), dt=-0.01)
    np.savez_compressed(t / "compressed.npz", x=rng.normal(size=(4, 10, 1)), dt=0.01)
    (t / "strings.csv").write_text("traj,t,x1\n0,0.0,1.0\n0,0.01,abc\n0,0.02,1.2\n")
    (t / "irregular.csv").write_text("traj,t,x1\n0,0.0,1.0\n0,0.01,1.1\n0,0.03,1.2\n")
    save_trajectories(Trajectories(x=rng.normal(size=(20, 30, 2)), dt=0.01), t / "d2.npz")
    save_trajectories(Trajectories(x=rng.normal(size=(20, 30, 1)), dt=0.05), t / "dt05.npz")
    (t / "random.pt").write_bytes(rng.bytes(4096))
    torch.save({"format": "slowflow-model", "format_version": 99}, t / "future.pt")
    torch.save({"weights": torch.zeros(3)}, t / "foreign.pt")
    with open(t / "evil.pt", "wb") as fh:
        pickle.dump({"format": "slowflow-model", "x": Evil(str(t / "SENTINEL"))}, fh)
    torch.save({"format": "slowflow-model"}, t / "plain.pt")  # a real torch archive ...
    with zipfile.ZipFile(t / "plain.pt") as src, zipfile.ZipFile(t / "evilzip.pt", "w") as z:
        for item in src.infolist():  # ... whose pickle is swapped for a code payload
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(Evil(str(t / "SENTINEL")), protocol=2)
            z.writestr(item, data)
    (t / "plain.pt").unlink()


# id: (command line, fragment the message must contain). {w}: a folder with good OU bursts
# f.npz and a model m.pt (d = 1); {t}: the test's folder with the bad files; the last word
# is the output that must not appear.
CATALOGUE = {
    "missing file": ("fit {t}/missing.npz --out {t}/o.pt", "missing.npz"),
    "empty file": ("fit {t}/empty.npz --out {t}/o.pt", "empty"),
    "truncated npz": ("fit {t}/truncated.npz --out {t}/o.pt", "truncated.npz"),
    "not an npz": ("fit {t}/text.npz --out {t}/o.pt", "text.npz"),
    "unknown extension": ("fit {w}/f.txt --out {t}/o.pt", ".txt"),
    "missing key x": ("fit {t}/nokey.npz --out {t}/o.pt", "'x'"),
    "object (pickled) array": ("fit {t}/object.npz --out {t}/o.pt", "object.npz"),
    "NaN inside a trajectory": ("fit {t}/nan.npz --out {t}/o.pt", "trajectory 2"),
    "inf in the data": ("fit {t}/inf.npz --out {t}/o.pt", "trajectory 1"),
    "one observation per trajectory": ("fit {t}/oneobs.npz --out {t}/o.pt", "observation"),
    "no step dt": ("fit {t}/nodt.npz --out {t}/o.pt", "dt"),
    "negative step dt": ("fit {t}/negdt.npz --out {t}/o.pt", "dt"),
    "non-numeric CSV cell": ("fit {t}/strings.csv --out {t}/o.pt", "abc"),
    "irregular CSV time steps": ("fit {t}/irregular.csv --out {t}/o.pt", "step"),
    "data d differs from model": ("check {w}/m.pt {t}/d2.npz --out {t}/chk/x", "d=2"),
    "data dt differs from model": ("check {w}/m.pt {t}/dt05.npz --out {t}/chk/x", "dt"),
    "x0 of the wrong length": (
        "predict {w}/m.pt --x0 1,2 --steps 3 --n-paths 5 --out {t}/o.npz",
        "d=1",
    ),
    "zero steps": ("predict {w}/m.pt --x0 1 --steps 0 --n-paths 5 --out {t}/o.npz", "n_steps"),
    "zero paths": ("predict {w}/m.pt --x0 1 --steps 3 --n-paths 0 --out {t}/o.npz", "n_paths"),
    "zero epochs": ("fit {w}/f.npz --epochs 0 --out {t}/o.pt", "epochs"),
    "negative learning rate": ("fit {w}/f.npz --lr -1 --out {t}/o.pt", "lr"),
    "negative t-end": ("simulate ou --n-traj 5 --t-end -1 --out {t}/o.npz", "t_end"),
    "zero observation step": ("simulate ou --n-traj 5 --dt-obs 0 --out {t}/o.npz", "dt_obs"),
    "zero substeps": ("simulate ou --n-traj 5 --substeps 0 --out {t}/o.npz", "substeps"),
    "negative number of paths": (
        "simulate ou --x0 1 --n-paths -3 --t-end 0.1 --out {t}/o.npz",
        "n_paths",
    ),
    "unknown system": ("simulate nosuch --n-traj 5 --out {t}/o.npz", "nosuch"),
    "unknown preset": ("fit {w}/f.npz --preset bogus --out {t}/o.pt", "bogus"),
    "unknown example": ("reproduce ex9.9 --quick --out {t}/rep/x", "ex9.9"),
    "unknown model in --models": (
        "reproduce ex4.3 --quick --models default,nope --out {t}/rep/x",
        "nope",
    ),
    "unsupported output extension": ("simulate ou --n-traj 5 --out {t}/o.txt", "o.txt"),
    "data file given as model": (
        "predict {w}/f.npz --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "f.npz",
    ),
    "corrupted model file": (
        "predict {t}/random.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "random.pt",
    ),
    "model from a newer version": (
        "predict {t}/future.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "newer",
    ),
    "foreign torch file": (
        "predict {t}/foreign.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "not a slowflow",
    ),
    "pickle that would run code": (
        "predict {t}/evil.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "evil.pt",
    ),
    "torch zip with a code payload": (
        "predict {t}/evilzip.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "refused",
    ),
    "missing reference for evaluate": (
        "evaluate {w}/f.npz {t}/nothere.npz --out {t}/ev/x",
        "nothere.npz",
    ),
    "resume without checkpoint": ("fit {w}/f.npz --resume --out {t}/o.pt", "checkpoint"),
    "streaming a CSV": ("fit {t}/irregular.csv --stream --out {t}/o.pt", "cannot stream"),
    "streaming a compressed npz": ("fit {t}/compressed.npz --stream --out {t}/o.pt", "compressed"),
    "10^6 paths x 1,000 steps to CSV": (
        "predict {w}/m.pt --x0 1 --steps 1000 --n-paths 1000000 --out {t}/o.csv",
        ".npy",
    ),
}


@pytest.fixture(scope="module")
def work(tmp_path_factory, torch_one_thread) -> Path:
    d = tmp_path_factory.mktemp("bad")
    assert (
        main(["simulate", "ou", "--n-traj", "50", "--t-end", "0.2", "--out", str(d / "f.npz")]) == 0
    )
    (d / "f.txt").write_text("1 2 3\n")
    torch.set_num_threads(1)
    assert (
        main(
            [
                "fit",
                str(d / "f.npz"),
                "--out",
                str(d / "m.pt"),
                "--epochs",
                "1",
                "--preset",
                "gaussian",
            ]
        )
        == 0
    )
    return d


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_input_catalogue(case, work, tmp_path, capsys):
    _write_bad(tmp_path, work)
    before = {p.name for p in tmp_path.iterdir()}
    line, fragment = CATALOGUE[case]
    argv = [w.format(w=work, t=tmp_path) for w in line.split()]
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slowflow: error: "), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    assert not Path(argv[-1]).exists()
    assert {p.name for p in tmp_path.iterdir()} == before, "a file was left behind"
    assert not (tmp_path / "SENTINEL").exists(), "a model file ran code"


def test_debug_shows_traceback(work, tmp_path, capsys):
    with pytest.raises(Exception, match="nosuch"):
        main(["--debug", "simulate", "nosuch", "--n-traj", "5", "--out", str(tmp_path / "o.npz")])


def test_far_x0_warns_but_runs(work, tmp_path, capsys):
    """A start far outside the training data's range is allowed, with a warning."""
    capsys.readouterr()
    rc = main(
        [
            "predict",
            str(work / "m.pt"),
            "--x0",
            "50",
            "--steps",
            "2",
            "--n-paths",
            "5",
            "--out",
            str(tmp_path / "p.npz"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "p.npz").exists()
    assert "slowflow: warning:" in err and "outside the training data's range" in err
