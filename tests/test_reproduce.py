"""End to end: `slowflow reproduce --quick` and `slowflow evaluate` (the README's main job)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slowflow.cli import main
from slowflow.data import Trajectories, save_trajectories


@pytest.mark.slow
def test_reproduce_quick_end_to_end_and_cached(tmp_path, capsys):
    """The README's main job runs, writes a report with the table and figures, and a rerun
    reuses every cached stage and gives the same numbers."""
    out = tmp_path / "runs"
    assert main(["reproduce", "ex4.3", "--quick", "--out", str(out)]) == 0
    report = (out / "triad" / "report.md").read_text()
    assert "| triad (ex4.3) | default |" in report and "| triad (ex4.3) | averaged |" in report
    for fig in ("mean_std.png", "histograms.png", "w1.png", "calibration_default.png"):
        assert (out / "triad" / fig).stat().st_size > 1000
    first = json.loads((out / "triad" / "metrics.json").read_text())
    ratio = first["models"]["default"]["w1"]["ratio_time_avg"][0]
    assert np.isfinite(ratio) and ratio > 0
    capsys.readouterr()
    assert main(["reproduce", "ex4.3", "--quick", "--out", str(out)]) == 0
    log = capsys.readouterr().out
    assert "reuse model default" in log and "train default" not in log
    second = json.loads((out / "triad" / "metrics.json").read_text())
    assert second["models"]["default"]["w1"] == first["models"]["default"]["w1"]


def _ensemble(rng, n, shift=0.0):
    x = np.cumsum(rng.normal(0, 0.1, size=(n, 21, 1)), axis=1) + shift
    x[:, 0] = 0.0 + shift
    return Trajectories(x=x, dt=0.1)


def test_evaluate_command_writes_metrics(tmp_path):
    """Two ensembles of one law score W1/floor near 1 (within a factor 2, which at 2,000
    paths is many standard errors wide); a shifted one scores far above."""
    rng = np.random.default_rng(0)
    for name, shift in (("a", 0.0), ("b", 0.0), ("same", 0.0), ("off", 0.5)):
        save_trajectories(_ensemble(rng, 2000, shift), tmp_path / f"{name}.npz")
    for pred, lo, hi in (("same", 0.5, 2.0), ("off", 10.0, np.inf)):
        out = tmp_path / f"eval_{pred}"
        args = [
            "evaluate",
            str(tmp_path / f"{pred}.npz"),
            str(tmp_path / "a.npz"),
            "--ref-b",
            str(tmp_path / "b.npz"),
            "--out",
            str(out),
        ]
        assert main(args) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert lo < metrics["w1"]["ratio_time_avg"][0] < hi
        assert (out / "mean_std.png").exists()


def test_evaluate_shape_mismatch_is_a_clear_error(tmp_path, capsys):
    rng = np.random.default_rng(1)
    save_trajectories(_ensemble(rng, 50), tmp_path / "a.npz")
    save_trajectories(Trajectories(x=rng.normal(size=(50, 11, 1)), dt=0.1), tmp_path / "p.npz")
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "p.npz"),
                str(tmp_path / "a.npz"),
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("slowflow: error:") and "does not match" in err
    assert not (tmp_path / "e" / "metrics.json").exists()
