"""Tests of slowflow.data (container, readers/writers, pairs, splits) and slowflow.io.atomic."""

from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slowflow.data import (
    Trajectories,
    check_dim,
    load_trajectories,
    make_pairs,
    save_trajectories,
    split_by_trajectory,
)
from slowflow.errors import ConfigError, DataError
from slowflow.io.atomic import atomic_write


def ragged(seed: int = 0, lengths: tuple[int, ...] = (5, 3, 7), d: int = 2) -> Trajectories:
    rng = np.random.default_rng(seed)
    trajs = [rng.normal(size=(n, d)) for n in lengths]
    return Trajectories.from_list(trajs, dt=0.05, names=[f"v{j}" for j in range(d)])


def assert_one_line(exc: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


# ------------------------------------------------------------------------------ container


def test_container_basics() -> None:
    data = ragged()
    assert (data.n_traj, data.n_obs, data.dim) == (3, 7, 2)
    assert data.lengths.tolist() == [5, 3, 7]
    assert data.is_ragged and data.x.dtype == np.float64 and data.x.flags.c_contiguous
    assert [t.shape for t in data.trajectories()] == [(5, 2), (3, 2), (7, 2)]
    assert np.isnan(data.x[1, 3:]).all()
    np.testing.assert_allclose(data.times(), 0.05 * np.arange(7))
    assert data.names == ("v0", "v1")
    sub = data.subset([0, 1])
    assert sub.n_obs == 5 and sub.lengths.tolist() == [5, 3]
    np.testing.assert_array_equal(sub.trajectories()[1], data.trajectories()[1])
    scalar = Trajectories(np.zeros((2, 4, 1), dtype=np.float32), 1)
    assert scalar.names == ("x1",) and scalar.dt == 1.0 and not scalar.is_ragged
    assert scalar == Trajectories(np.zeros((2, 4, 1)), 1.0, meta={"other": 1})
    assert "n_traj=2" in repr(scalar)


@pytest.mark.parametrize(
    ("x", "kwargs", "parts"),
    [
        (np.zeros((4, 2)), {}, ["x has 2 dimension", "expected 3"]),
        (np.array([[[0.0], [np.nan], [1.0]]]), {}, ["NaN at trajectory 0, observation 1"]),
        (np.array([[[0.0, np.nan], [1.0, 1.0]]]), {}, ["NaN at trajectory 0, observation 0"]),
        (np.array([[[0.0], [np.inf]]]), {}, ["infinite value at trajectory 0, observation 1"]),
        (np.array([[[0.0], [1.0]], [[0.0], [np.nan]]]), {}, ["trajectory 1", "at least 2"]),
        (np.zeros((0, 3, 1)), {}, ["0 trajectories"]),
        (np.zeros((1, 3, 2)), {"names": ("a",)}, ["names", "d=2"]),
        (np.zeros((1, 3, 1)), {"dt": 0.0}, ["dt", "> 0", "0.0"]),
        (np.zeros((1, 3, 1)), {"dt": float("nan")}, ["dt", "> 0"]),
        (np.array([[["a"], ["b"]]]), {}, ["x has dtype <U1"]),
    ],
)
def test_container_validation(x: np.ndarray, kwargs: dict, parts: list[str]) -> None:
    kwargs = {"dt": 0.1, **kwargs}
    with pytest.raises(DataError) as exc:
        Trajectories(x, **kwargs)
    assert_one_line(exc, "Trajectories", *parts)


def test_from_list_errors() -> None:
    with pytest.raises(DataError, match="0 trajectories"):
        Trajectories.from_list([], 0.1)
    with pytest.raises(DataError, match="trajectory 1 has d=1 but trajectory 0 has d=2"):
        Trajectories.from_list([np.zeros((3, 2)), np.zeros(3)], 0.1)
    with pytest.raises(DataError, match="trajectory 0 has a non-finite value at observation 2"):
        Trajectories.from_list([np.array([0.0, 1.0, np.nan])], 0.1)
    with pytest.raises(DataError, match="trajectory 1 has 1 observation"):
        Trajectories.from_list([np.zeros(3), np.zeros(1)], 0.1)


# ------------------------------------------------------------------------------ round trips


def test_npz_roundtrip_3d_ragged_and_meta(tmp_path: Path) -> None:
    data = Trajectories(ragged().x, 0.05, ("a", "b"), {"system": "ou", "seed": np.int64(3)})
    path = tmp_path / "sub" / "train.npz"
    save_trajectories(data, path)
    back = load_trajectories(path)
    assert back == data and back.is_ragged and back.lengths.tolist() == [5, 3, 7]
    assert back.meta == {"system": "ou", "seed": 3}
    assert load_trajectories(path, dt=0.05 * (1 + 1e-12)).dt == 0.05
    with np.load(path, allow_pickle=False) as z:  # written without pickled objects
        assert json.loads(str(z["meta"])) == back.meta and z["x"].shape == (3, 7, 2)
    assert [p.name for p in path.parent.iterdir()] == ["train.npz"]


@pytest.mark.parametrize("shape", [(6, 2), (6,)])
def test_npz_single_trajectory(tmp_path: Path, shape: tuple[int, ...]) -> None:
    x = np.arange(np.prod(shape), dtype=float).reshape(shape)
    path = tmp_path / "one.NPZ"
    with open(path, "wb") as fh:  # np.savez would append ".npz" to a path ending in ".NPZ"
        np.savez(fh, x=x, dt=0.5)
    data = load_trajectories(path)
    assert data.x.shape == (1, 6, x.size // 6) and data.dt == 0.5
    np.testing.assert_array_equal(data.trajectories()[0].reshape(shape), x)
    path2 = tmp_path / "nodt.npz"
    np.savez(path2, x=x)
    assert load_trajectories(path2, dt=0.25).dt == 0.25


def test_npy(tmp_path: Path) -> None:
    x = ragged().x
    np.save(tmp_path / "a.npy", x)
    data = load_trajectories(tmp_path / "a.npy", dt=0.1)
    assert data == Trajectories(x, 0.1)


def test_csv_ragged_string_ids_unsorted(tmp_path: Path) -> None:
    text = "traj,t,q,p\nb,0.2,5,6\na,0.0,1,2\nb,0.0,7,8\n\na,0.1,3,4\nb,0.1,9,10\n"
    path = tmp_path / "d.csv"
    path.write_text(text)
    data = load_trajectories(path)
    assert data.names == ("q", "p") and data.dt == 0.1 and data.lengths.tolist() == [3, 2]
    np.testing.assert_array_equal(data.trajectories()[0], [[7, 8], [9, 10], [5, 6]])
    np.testing.assert_array_equal(data.trajectories()[1], [[1, 2], [3, 4]])
    alt = tmp_path / "alt.csv"
    alt.write_text("Time, Trajectory ,x\n1.5,7,1\n2.0,7,2\n")
    assert load_trajectories(alt, dt=0.5).x.ravel().tolist() == [1.0, 2.0]


def test_csv_writer_roundtrip(tmp_path: Path) -> None:
    data = ragged(lengths=(4, 2))
    path = tmp_path / "out.csv"
    save_trajectories(data, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "traj,t,v0,v1" and len(lines) == 1 + 6
    assert lines[2].split(",")[:2] == ["0", "0.05"]
    assert load_trajectories(path) == data


@pytest.mark.parametrize("n_traj", [3, 1])
def test_mat_authors_layout(tmp_path: Path, n_traj: int) -> None:
    x = np.random.default_rng(1).normal(size=(n_traj, 8, 2))
    mat = np.transpose(x, (2, 1, 0)) if n_traj > 1 else x[0].T  # [d, n_obs, n_traj]
    path = tmp_path / "paper.mat"
    scipy.io.savemat(path, {"data": mat})
    data = load_trajectories(path, dt=0.01)
    assert data.dt == 0.01
    np.testing.assert_array_equal(data.x, x)


# ------------------------------------------------------------------------------ pairs, split


def test_make_pairs_all_and_ragged() -> None:
    data = ragged()
    x0, x1 = make_pairs(data)
    assert x0.shape == x1.shape == (4 + 2 + 6, 2) and x0.dtype == np.float64
    assert np.isfinite(x0).all() and np.isfinite(x1).all()
    np.testing.assert_array_equal(x0[:4], data.trajectories()[0][:-1])
    np.testing.assert_array_equal(x1[4:6], data.trajectories()[1][1:])


def test_make_pairs_per_traj() -> None:
    data = ragged()
    x0, x1 = make_pairs(data, pairs_per_traj=50, rng=7)
    assert x0.shape == (150, 2) and np.isfinite(x1).all()
    y0, _ = make_pairs(data, pairs_per_traj=50, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(x0, y0)
    for i, traj in enumerate(data.trajectories()):  # each pair consecutive within trajectory i
        for a, b in zip(x0[50 * i : 50 * (i + 1)], x1[50 * i : 50 * (i + 1)], strict=True):
            k = np.flatnonzero((traj == a).all(axis=1))[0]
            np.testing.assert_array_equal(traj[k + 1], b)
    assert {tuple(r) for r in x0[50:100]} == {tuple(r) for r in data.trajectories()[1][:2]}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="pairs_per_traj"):
            make_pairs(data, pairs_per_traj=bad)


def test_split_by_trajectory() -> None:
    data = ragged(lengths=tuple(range(3, 13)))
    train, val = split_by_trajectory(data, 0.3, seed=4)
    assert (train.n_traj, val.n_traj) == (7, 3)
    rows = {tuple(t[0]) for t in data.trajectories()}
    tr, va = ({tuple(t[0]) for t in part.trajectories()} for part in (train, val))
    assert tr.isdisjoint(va) and tr | va == rows
    assert split_by_trajectory(data, 0.3, seed=4)[1] == val
    assert split_by_trajectory(data, 0.3, seed=5)[1] != val
    assert val.meta["split"]["part"] == "val" and val.n_obs == val.lengths.max()
    assert split_by_trajectory(data.subset([0, 1]), 0.01)[1].n_traj == 1  # at least one each
    for bad in (0, 1, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="val_fraction"):
            split_by_trajectory(data, bad)


def test_split_single_trajectory_in_time() -> None:
    data = Trajectories.from_list([np.arange(10.0)], 0.1)
    train, val = split_by_trajectory(data, 0.2)
    assert train.x.ravel().tolist() == list(range(8)) and val.x.ravel().tolist() == [8, 9]
    assert train.meta["split"]["by"] == "time"
    with pytest.raises(DataError, match="each needs at least 2"):
        split_by_trajectory(data, 0.05)


def test_check_dim() -> None:
    check_dim(ragged(d=2), 2, "m.pt")
    with pytest.raises(DataError) as exc:
        check_dim(ragged(d=3), 2, "train.npz")
    assert str(exc.value) == "train.npz: data has d=3 slow variables but the model expects d=2"


# ------------------------------------------------------------------------------ bad inputs


def _npz(**arrays: object):
    return lambda p: np.savez(p, **arrays)


def _text(text: str):
    return lambda p: p.write_text(text)


def _bytes(data: bytes):
    return lambda p: p.write_bytes(data)


def _truncated_npz(p: Path) -> None:
    np.savez(p, x=np.zeros((2, 50, 2)), dt=0.1)
    p.write_bytes(p.read_bytes()[:200])


def _v73_mat(p: Path) -> None:
    head = b"MATLAB 7.3 MAT-file, HDF5 schema 1.00 .".ljust(116) + b"\0" * 8
    p.write_bytes((head + struct.pack("<H", 0x0200) + b"IM").ljust(600, b"\0"))


BAD_INPUTS = [
    ("gone.npz", None, None, ["no such file"]),
    ("empty.npz", _bytes(b""), None, ["empty"]),
    ("trunc.npz", _truncated_npz, None, ["truncated or corrupt"]),
    ("text.npz", _text("hello"), None, ["not an .npz archive"]),
    (
        "arr.npz",
        lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p),
        None,
        [".npy array, not an .npz"],
    ),
    ("data.txt", _text("1,2"), None, ["extension '.txt'", ".npz, .npy, .csv, .mat"]),
    ("keys.npz", _npz(y=np.zeros(3), dt=0.1), None, ["missing key 'x'", "found keys: 'y', 'dt'"]),
    (
        "obj.npz",
        _npz(x=np.array([None, 1.0], dtype=object), dt=0.1),
        None,
        ["key 'x'", "unpickling"],
    ),
    ("str.npz", _npz(x=np.array(["a", "b"]), dt=0.1), None, ["key 'x' has dtype <U1"]),
    ("4d.npz", _npz(x=np.zeros((1, 2, 3, 4)), dt=0.1), None, ["key 'x' has 4 dimensions"]),
    (
        "nan.npz",
        _npz(x=np.array([[[0.0], [np.nan], [1.0]]]), dt=0.1),
        None,
        ["key 'x' has a NaN at trajectory 0, observation 1", "trailing NaN"],
    ),
    (
        "inf.npz",
        _npz(x=np.array([0.0, 1.0, -np.inf]), dt=0.1),
        None,
        ["key 'x'", "infinite", "observation 2"],
    ),
    (
        "short.npz",
        _npz(x=np.array([[[0.0], [1.0]], [[2.0], [np.nan]]]), dt=0.1),
        None,
        ["key 'x'", "trajectory 1", "at least 2"],
    ),
    ("zero.npz", _npz(x=np.zeros((0, 4, 2)), dt=0.1), None, ["key 'x'", "0 trajectories"]),
    ("nodt.npz", _npz(x=np.zeros(3)), None, ["no key 'dt'", "--dt"]),
    ("negdt.npz", _npz(x=np.zeros(3), dt=-1.0), None, ["key 'dt'", "> 0", "-1.0"]),
    ("infdt.npz", _npz(x=np.zeros(3), dt=np.inf), None, ["key 'dt'", "> 0"]),
    ("clash.npz", _npz(x=np.zeros(3), dt=0.1), 0.2, ["key 'dt' is 0.1", "dt=0.2"]),
    (
        "names.npz",
        _npz(x=np.zeros((3, 2)), dt=0.1, names=np.array(["a"])),
        None,
        ["key 'names'", "d=2"],
    ),
    ("meta.npz", _npz(x=np.zeros(3), dt=0.1, meta=np.array("{bad")), None, ["key 'meta'", "JSON"]),
    ("arg.npz", _npz(x=np.zeros(3)), -0.5, ["dt must be", "-0.5"]),
    ("nodt.npy", lambda p: np.save(p, np.zeros(3)), None, ["no time step", "--dt"]),
    ("obj.npy", lambda p: np.save(p, np.array([None]), allow_pickle=True), 0.1, ["unpickling"]),
    ("nodt.mat", lambda p: scipy.io.savemat(p, {"data": np.zeros((1, 4))}), None, ["--dt"]),
    (
        "key.mat",
        lambda p: scipy.io.savemat(p, {"traj": np.zeros((1, 4))}),
        0.1,
        ["missing variable 'data'", "'traj'"],
    ),
    ("v73.mat", _v73_mat, 0.1, ["v7.3", "-v7"]),
    ("junk.mat", _text("not matlab at all" * 20), 0.1, ["not a readable MATLAB file"]),
    ("noid.csv", _text("t,x\n0,1\n1,2\n"), None, ["trajectory id column", "traj, trajectory, id"]),
    ("notime.csv", _text("traj,x\n0,1\n0,2\n"), None, ["time column"]),
    ("novar.csv", _text("traj,t\n0,0\n0,1\n"), None, ["variable columns"]),
    ("cells.csv", _text("traj,t,x\n0,0,1\n0,1\n"), None, ["line 3 has 2 cells"]),
    ("nonnum.csv", _text("traj,t,x\n0,0,1\n0,1,abc\n"), None, ["line 3, column 'x'", "'abc'"]),
    ("nan.csv", _text("traj,t,x\n0,0,1\n0,1,nan\n"), None, ["line 3, column 'x'", "not finite"]),
    (
        "dup.csv",
        _text("traj,t,x\n0,0,1\n0,1,2\n0,1,3\n"),
        None,
        ["trajectory '0'", "duplicate t=1.0", "lines 3 and 4"],
    ),
    (
        "irreg.csv",
        _text("traj,t,x\na,0,1\na,1,2\na,2,3\nb,0,1\nb,1,1\nb,3,1\n"),
        None,
        ["trajectory 'b', line 7", "steps by 2.0, expected 1.0"],
    ),
    (
        "dtarg.csv",
        _text("traj,t,x\n0,0,1\n0,1,2\n"),
        0.5,
        ["column 't' has time step 1.0", "dt=0.5"],
    ),
    (
        "one.csv",
        _text("traj,t,x\n0,0,1\n0,1,2\n1,0,5\n"),
        None,
        ["trajectory '1' has 1 observation", "line 4"],
    ),
    ("hdr.csv", _text("traj,t,x\n"), None, ["no data rows"]),
]


@pytest.mark.parametrize(
    ("name", "make", "dt", "parts"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_inputs(tmp_path: Path, name: str, make, dt: float | None, parts: list[str]) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    with pytest.raises(DataError) as exc:
        load_trajectories(path, dt=dt)
    assert_one_line(exc, str(path), *parts)


def test_save_errors_write_nothing(tmp_path: Path) -> None:
    data = ragged()
    for name, parts in [("out.txt", ["'.txt'", ".npz, .csv"]), ("out.mat", [".npz, .csv"])]:
        with pytest.raises(DataError) as exc:
            save_trajectories(data, tmp_path / name)
        assert_one_line(exc, name, *parts)
    with pytest.raises(DataError) as exc:
        save_trajectories(Trajectories(data.x, 0.1, ("t", "x")), tmp_path / "out.csv")
    assert_one_line(exc, "out.csv", "'t'", "reserved")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ atomic_write


def test_atomic_write(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "f.npz"
    with atomic_write(target) as tmp:
        assert (
            tmp.parent == target.parent
            and tmp.suffix == ".npz"
            and tmp.name.startswith(".f.npz.tmp-")
        )
        np.savez(tmp, a=1)
    assert np.load(target)["a"] == 1
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert np.load(target)["a"] == 1 and [p.name for p in target.parent.iterdir()] == ["f.npz"]
    fresh = tmp_path / "new.csv"
    with pytest.raises(KeyError), atomic_write(fresh):
        raise KeyError
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["deep"]


# ------------------------------------------------------------------------------ properties

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def ragged_lists(draw: st.DrawFn) -> tuple[list[np.ndarray], float]:
    d = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(2, 6), min_size=1, max_size=4))
    trajs = [
        np.array(draw(st.lists(finite, min_size=n * d, max_size=n * d))).reshape(n, d)
        for n in lengths
    ]
    return trajs, draw(st.floats(1e-3, 10.0))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ragged_lists())
def test_property_roundtrip(case: tuple[list[np.ndarray], float]) -> None:
    trajs, dt = case
    data = Trajectories.from_list(trajs, dt)
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ("npz", "csv"):
            path = Path(tmp) / f"d.{ext}"
            save_trajectories(data, path)
            back = load_trajectories(path)
            assert back == data and back.dt == dt
            for a, b in zip(back.trajectories(), trajs, strict=True):
                np.testing.assert_array_equal(a, b)


@settings(max_examples=25, deadline=None)
@given(ragged_lists())
def test_property_pairs(case: tuple[list[np.ndarray], float]) -> None:
    trajs, dt = case
    data = Trajectories.from_list(trajs, dt)
    x0, x1 = make_pairs(data)
    assert len(x0) == len(x1) == sum(len(t) - 1 for t in trajs)
    expected0 = np.concatenate([t[:-1] for t in trajs])
    expected1 = np.concatenate([t[1:] for t in trajs])
    np.testing.assert_array_equal(x0, expected0)
    np.testing.assert_array_equal(x1, expected1)


def test_regression_fuzz_npz_unknown_compression_method(tmp_path):
    """Found by the fuzz run: an archive whose central directory names an unknown
    compression method made zipfile raise NotImplementedError through the reader."""
    path = tmp_path / "odd.npz"
    np.savez(path, x=np.zeros((2, 3, 1)), dt=0.1)
    blob = bytearray(path.read_bytes())
    at = blob.find(b"PK\x01\x02")
    blob[at + 10 : at + 12] = (99).to_bytes(2, "little")
    path.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="odd.npz"):
        load_trajectories(path)


def test_regression_fuzz_mat_reader_crash_is_isolated(tmp_path, monkeypatch):
    """Found by the fuzz run: scipy's MATLAB reader crashed the interpreter (segmentation
    fault) on a corrupted file. The reader now runs in a child process; a crash there is
    a one-line DataError here."""
    import scipy.io

    import slowflow.data.files as data_module  # the MATLAB reader lives there

    path = tmp_path / "crash.mat"
    scipy.io.savemat(path, {"data": np.zeros((1, 4, 2))})
    monkeypatch.setattr(
        data_module, "_MAT_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    )
    with pytest.raises(
        DataError, match="crash.mat: not a readable MATLAB file .the reader crashed"
    ):
        load_trajectories(path, dt=0.1)
