"""Every figure function renders for d = 1 and d = 2 and writes a non-trivial PNG."""

from __future__ import annotations

import numpy as np
import pytest

from slowflow.evaluate import metrics, plots
from slowflow.rollout import DriftDiffusion


@pytest.mark.parametrize("d", [1, 2])
def test_all_figures_render(tmp_path, d):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 41, d)).cumsum(axis=1) * 0.1
    pred = ref * 1.05 + 0.01
    dt = 0.05
    figs = {
        "paths": plots.sample_paths(pred, ref, dt),
        "mean_std": plots.mean_std({"truth": ref, "model": pred, "averaged": ref, "km": pred}, dt),
        "hist": plots.histograms({"truth": ref, "model": pred}, dt, [0.5, 1.0, 2.0]),
        "w1": plots.w1_over_time(
            metrics.w1_marginals(pred, ref),
            metrics.w1_marginals(ref, pred),
            dt,
            extra={"other": metrics.w1_marginals(ref * 0.9, ref)},
        ),
        "training": plots.training_curves(
            {
                "epoch": [0, 1, 2],
                "train_nll": [1, 0.5, 0.4],
                "val_nll": [1.1, 0.6, 0.5],
                "best_epoch": 2,
            }
        ),
        "calibration": plots.calibration(
            np.arange(1, 4), {"model": [0.1, 0.2, 0.3]}, {"lead 1": np.ones(10)}, "CRPS"
        ),
    }
    x = np.linspace(-1, 1, 7)[:, None] * np.ones((1, d))
    dd = DriftDiffusion(
        x,
        -x,
        0.1 * np.ones_like(x),
        np.tile(np.eye(d), (7, 1, 1)),
        0.01 * np.ones((7, d, d)),
        dt,
        100,
    )
    figs["drift"] = plots.drift_diffusion(
        dd, lambda p: (-p, np.ones_like(p)), data_stats=(x, -x, np.ones_like(x))
    )
    if d == 2:
        figs["phase"] = plots.phase_portrait(pred, ref)
    for name, fig in figs.items():
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.stat().st_size > 5000, name


def test_importing_and_drawing_leaves_matplotlib_state_alone():
    """The figures are built as Figure objects: no backend switch, no pyplot figures left
    (a user's notebook or GUI backend is untouched)."""
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import numpy as np\n"
        "from slowflow.evaluate import plots\n"
        "fig = plots.free_energy_2d({'a': np.random.default_rng(0).normal(size=(500, 2))},"
        " ((-3, 3), (-3, 3)))\n"
        "import matplotlib.pyplot as plt\n"
        "print(matplotlib.get_backend(), len(plt.get_fignums()), type(fig).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "0", "Figure"], out
