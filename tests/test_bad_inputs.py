"""The bad-input catalogue: every row of the troubleshooting page's table is one case here
(docs/guide/troubleshooting.md).

Each case runs a real command line in-process. A bad input must exit with code 2 and print
exactly one line ``slowflow: error: ...`` that contains the stated fragment (naming the
problem), no traceback, and leave no output file (outputs are written to a temporary file
and moved into place). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import pickle
import shlex
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slowflow.cli import main
from slowflow.data import Trajectories, save_trajectories
from slowflow.io.atomic import TEMP_MARK

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
    hdr = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6, 1)}
    with open(t / "bomb.npy", "wb") as fh:  # 200 bytes that announce 8 TB
        np.lib.format.write_array_header_1_0(fh, hdr)
        fh.write(bytes(64))
    with zipfile.ZipFile(t / "bomb.npz", "w") as z:
        with z.open("x.npy", "w") as m:
            np.lib.format.write_array_header_1_0(m, hdr)
            m.write(bytes(64))
        with z.open("dt.npy", "w") as m:
            np.lib.format.write_array(m, np.float64(0.01))
    np.savez(t / "textdt.npz", x=rng.normal(size=(4, 10, 1)), dt="abc")
    np.savez(t / "huge.npz", x=rng.normal(size=(20, 10, 1)) * 1e300, dt=0.01)
    model = torch.load(w / "m.pt", weights_only=True)
    torch.save(
        {**model, "config": {**model["config"], "affine_hidden": [14000, 14000]}}, t / "wide.pt"
    )
    torch.save({**model, "dt": -0.01}, t / "negdt.pt")
    x = rng.normal(size=(30, 11, 1))
    save_trajectories(Trajectories(x=x, dt=0.01), t / "e01.npz")
    save_trajectories(Trajectories(x=x, dt=0.02), t / "e02.npz")
    (t / "dir.npz").mkdir()
    (t / "link.npz").symlink_to(w / "f.npz")
    os.link(w / "f.npz", t / "hard.npz")


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
    # outputs
    "--out is the data": ("drift {w}/m.pt --data {w}/f.npz --out {w}/f.npz", "would overwrite"),
    "--out is a symbolic link to the data": (
        "drift {w}/m.pt --data {w}/f.npz --out {t}/link.npz",
        "would overwrite",
    ),
    "--out is a hard link to the data": (
        "drift {w}/m.pt --data {w}/f.npz --out {t}/hard.npz",
        "would overwrite",
    ),
    "--out is a directory": ("simulate ou --n-traj 5 --out {t}/dir.npz", "is a directory"),
    "--out below a file": ("simulate ou --n-traj 5 --out {w}/f.npz/o.npz", "not a directory"),
    "evaluate --out is a file": ("evaluate {w}/f.npz {w}/f.npz --out {w}/f.npz", "is a file"),
    # option values
    "x0 with a space instead of a comma": (
        "predict {w}/m.pt --x0 '1 2' --steps 3 --n-paths 5 --out {t}/o.npz",
        "--x0",
    ),
    "x0 that overflows to inf": (
        "predict {w}/m.pt --x0 1e999 --steps 3 --n-paths 5 --out {t}/o.npz",
        "too large",
    ),
    "empty item in a list": (
        "evaluate {t}/e01.npz {t}/e01.npz --times 1,,2 --out {t}/ev",
        "--times",
    ),
    "time beyond the ensembles' horizon": (
        "evaluate {t}/e01.npz {t}/e01.npz --times -1 --out {t}/ev",
        "horizon",
    ),
    "infinite learning rate": ("fit {w}/f.npz --lr inf --out {t}/o.pt", "--lr"),
    "NaN duration": ("simulate ou --n-traj 5 --t-end nan --out {t}/o.npz", "--t-end"),
    "fractional count": (
        "predict {w}/m.pt --x0 1 --steps 3 --n-paths 2.5 --out {t}/o.npz",
        "--n-paths",
    ),
    # sizes checked before allocating
    "10^12 paths (predict)": (
        "predict {w}/m.pt --x0 1 --steps 3 --n-paths 1e12 --out {t}/o.npz",
        "--n-paths",
    ),
    "10^12 trajectories (simulate)": ("simulate ou --n-traj 1e12 --out {t}/o.npz", "--n-traj"),
    "10^12 paths (simulate)": (
        "simulate ou --x0 1 --n-paths 1e12 --t-end 0.1 --out {t}/o.npz",
        "--n-paths",
    ),
    "t-end of 10^12": ("simulate ou --x0 1 --n-paths 5 --t-end 1e12 --out {t}/o.npz", "--t-end"),
    "10^12 starts (check)": (
        "check {w}/m.pt {w}/f.npz --n-starts 1e12 --out {t}/chk",
        "--n-starts",
    ),
    "10^12 members (check)": (
        "check {w}/m.pt {w}/f.npz --n-members 1e12 --out {t}/chk",
        "--n-members",
    ),
    "10^12 samples (drift)": ("drift {w}/m.pt --n-samples 1e12 --out {t}/d.npz", "--n-samples"),
    ".npy header announcing 10^12 values": (
        "fit {t}/bomb.npy --dt 0.01 --out {t}/o.pt",
        "truncated",
    ),
    ".npz entry announcing 10^12 values": ("fit {t}/bomb.npz --out {t}/o.pt", "truncated"),
    "dt stored as text": ("fit {t}/textdt.npz --out {t}/o.pt", "'dt'"),
    "model asking for 14,000-unit layers": (
        "predict {t}/wide.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "does not match its config",
    ),
    "model with a negative dt": (
        "predict {t}/negdt.pt --x0 1 --steps 3 --n-paths 5 --out {t}/o.npz",
        "'dt'",
    ),
    "unknown device": (
        "predict {w}/m.pt --x0 1 --steps 3 --n-paths 5 --device foo --out {t}/o.npz",
        "device",
    ),
    "10^12 pairs per trajectory": (
        "fit {w}/f.npz --pairs-per-traj 1e12 --out {t}/o.pt",
        "--pairs-per-traj",
    ),
    "seed out of range": ("simulate ou --n-traj 5 --seed -1 --out {t}/o.npz", "--seed"),
    # success means success
    "data with values near 1e300": ("fit {t}/huge.npz --out {t}/o.pt", "too large"),
    "resume with data of another Delta": ("fit {t}/dt05.npz --resume --out {w}/r.pt", "dt"),
    "resume with data of another d": ("fit {t}/d2.npz --resume --out {w}/r.pt", "d=2"),
    "resume with another preset": ("fit {w}/f.npz --resume --preset nsf --out {w}/r.pt", "preset"),
    "resume with another learning rate": ("fit {w}/f.npz --resume --lr 0.1 --out {w}/r.pt", "lr"),
    "evaluate ensembles of different Delta": (
        "evaluate {t}/e01.npz {t}/e02.npz --out {t}/ev",
        "dt",
    ),
    "check with a Delta other than the model's": (
        "check {w}/m.pt {t}/dt05.npz --dt 0.05 --out {t}/chk",
        "dt",
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
    from slowflow.train import fit

    fit(
        d / "f.npz", "gaussian-net", epochs=1, checkpoint=d / "r.pt.ckpt", progress=False, threads=1
    )
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
                "gaussian-net",
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
    argv = [w.format(w=work, t=tmp_path) for w in shlex.split(line)]
    last = Path(argv[-1])
    old = last.read_bytes() if last.is_file() else None
    capsys.readouterr()
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (case, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slowflow: error: "), err
    assert fragment.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err
    if old is None:
        assert not last.exists() or last.is_dir() and (tmp_path / "dir.npz") == last
    else:  # an existing file named as output is left as it was
        assert last.read_bytes() == old
    assert not [p for p in work.iterdir() if TEMP_MARK in p.name]
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


# ------------------------------------------------------- the troubleshooting page's table
README = Path(__file__).resolve().parents[1] / "docs" / "guide" / "troubleshooting.md"
TABLE_HEAD = "| bad input | command | exit | message |\n|---|---|---|---|\n"


def _shown(line: str) -> str:
    """The catalogue's command line as the table shows it (no folders)."""
    return "slowflow " + line.replace("{w}/", "").replace("{t}/", "")


def _readme_rows() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index(TABLE_HEAD) + len(TABLE_HEAD) :].split("\n\n")[0]
    rows = [r.split(" | ") for r in table.strip().splitlines()]
    return [(r[0].removeprefix("| "), r[1].strip("`")) for r in rows]


def test_readme_table_is_the_catalogue():
    """The docs' bad-input table has one row per case, in order, with its command
    (regenerate it with ``python tests/test_bad_inputs.py``)."""
    assert _readme_rows() == [(case, _shown(line)) for case, (line, _) in CATALOGUE.items()]


def regenerate_readme() -> None:  # pragma: no cover - a maintenance script
    """Run every case and rewrite the docs' table with the messages it prints."""
    import contextlib
    import io
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as root:
        w, rows = Path(root) / "w", []
        w.mkdir()
        main(["simulate", "ou", "--n-traj", "50", "--t-end", "0.2", "--out", str(w / "f.npz")])
        (w / "f.txt").write_text("1 2 3\n")
        from slowflow.train import fit

        fit(w / "f.npz", "gaussian-net", epochs=1, checkpoint=w / "r.pt.ckpt", progress=False)
        main(
            [
                "fit",
                str(w / "f.npz"),
                "--out",
                str(w / "m.pt"),
                "--epochs",
                "1",
                "--preset",
                "gaussian-net",
            ]
        )
        for i, (case, (line, _)) in enumerate(CATALOGUE.items()):
            t = Path(root) / f"t{i}"
            t.mkdir()
            _write_bad(t, w)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main([a.format(w=w, t=t) for a in shlex.split(line)])
            msg = err.getvalue().strip().replace(f"{w}/", "").replace(f"{t}/", "")
            rows.append(f"| {case} | `{_shown(line)}` | {rc} | `{msg}` |\n")
    text = README.read_text(encoding="utf-8")
    start = text.index(TABLE_HEAD) + len(TABLE_HEAD)
    end = text.index("\n\n", start)
    README.write_text(text[:start] + "".join(rows).rstrip("\n") + text[end:], encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover
    regenerate_readme()
