"""Figures. Every function returns a :class:`matplotlib.figure.Figure`; nothing is shown,
and matplotlib's global state (its backend, pyplot's figure list) is never touched, so a
user's notebook or GUI session is left as it was.

Time axes are in the data's time units (steps x Delta); values are in the slow
variables' own units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..io.atomic import atomic_open

COLORS = {"truth": "#1f77b4", "model": "#d62728", "averaged": "#2ca02c", "other": "#9467bd"}
_OTHERS = ("#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _color(label: str, k: int) -> str:
    """Fixed colours for truth/model/averaged, distinct ones for everything else."""
    return COLORS.get(label.split()[0], _OTHERS[k % len(_OTHERS)])


def _names(d: int, names=None) -> list[str]:
    return list(names) if names else [f"x{i + 1}" for i in range(d)]


def _subplots(*grid, figsize=None, **kw):
    """(Figure, axes) like ``pyplot.subplots``, without pyplot."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kw)


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG atomically (drawn with the Agg canvas, whatever the session's
    backend)."""
    path = Path(path)
    with atomic_open(path) as fh:
        fig.savefig(fh, dpi=120, bbox_inches="tight", format="png")
    return path


def sample_paths(pred, ref, dt, n=5, names=None, seed=0):
    """A few sample paths of the truth and the model, one panel per component and source."""
    d = ref.shape[2]
    names = _names(d, names)
    t = np.arange(ref.shape[1]) * dt
    rng = np.random.default_rng(seed)
    fig, axes = _subplots(d, 2, figsize=(10, 2.8 * d), sharex=True, sharey="row", squeeze=False)
    for j, (label, ens) in enumerate((("truth", ref), ("model", pred))):
        idx = rng.choice(ens.shape[0], min(n, ens.shape[0]), replace=False)
        for i in range(d):
            ax = axes[i, j]
            ax.plot(t, ens[idx, :, i].T, lw=0.8)
            ax.set_title(f"{label}: {names[i]}")
            ax.set_ylabel(names[i])
    for ax in axes[-1]:
        ax.set_xlabel("time t")
    fig.tight_layout()
    return fig


def mean_std(ensembles: dict, dt, names=None):
    """Mean +- one std over time for several labelled ensembles (n, T, d), or for
    precomputed ``(mean, std)`` pairs of arrays (T, d) (e.g. from a chunk-wise scan)."""
    first = next(iter(ensembles.values()))
    d = first[0].shape[-1] if isinstance(first, tuple) else first.shape[2]
    names = _names(d, names)
    fig, axes = _subplots(1, d, figsize=(6 * d, 4), squeeze=False)
    for k, (label, ens) in enumerate(ensembles.items()):
        if isinstance(ens, tuple):
            mean, std = (np.asarray(a) for a in ens)
        else:
            mean = np.nanmean(ens, axis=0)
            std = np.nanstd(ens, axis=0)
        t = np.arange(mean.shape[0]) * dt
        color = _color(label, k)
        for i in range(d):
            ax = axes[0, i]
            ax.plot(
                t,
                mean[:, i],
                color=color,
                lw=1.6,
                ls="-" if k == 0 else "--",
                label=f"{label} mean",
            )
            ax.fill_between(
                t,
                mean[:, i] - std[:, i],
                mean[:, i] + std[:, i],
                color=color,
                alpha=0.15,
                label=f"{label} +-1 std",
            )
    for i in range(d):
        axes[0, i].set_xlabel("time t")
        axes[0, i].set_ylabel(names[i])
        axes[0, i].set_title(f"{names[i]}: mean +- std")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def histograms(ensembles: dict, dt, times, names=None, bins=60, columns=None):
    """Marginal densities at the given times, one row per component. ``columns`` (one per
    time) says which column of the arrays holds each time, when they hold only the values
    at those times (default: column ``round(t / dt)``)."""
    first = next(iter(ensembles.values()))
    d = first.shape[2]
    names = _names(d, names)
    fig, axes = _subplots(d, len(times), figsize=(3.6 * len(times), 3 * d), squeeze=False)
    for c, t in enumerate(times):
        k = columns[c] if columns is not None else min(first.shape[1] - 1, int(round(t / dt)))
        for i in range(d):
            vals = [e[:, k, i] for e in ensembles.values()]
            lo = min(np.nanmin(v) for v in vals)
            hi = max(np.nanmax(v) for v in vals)
            edges = np.linspace(lo, hi + 1e-12, bins + 1)
            ax = axes[i, c]
            for j, (label, e) in enumerate(ensembles.items()):
                color = _color(label, j)
                ax.hist(
                    e[:, k, i],
                    bins=edges,
                    density=True,
                    histtype="step",
                    lw=1.5,
                    color=color,
                    label=label,
                )
            ax.set_title(f"{names[i]} at t = {t:g}")
            ax.set_xlabel(names[i])
            ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def phase_portrait(pred, ref, n=20, seed=0, names=None):
    """x1-x2 phase portraits of a few paths, truth vs model (d >= 2)."""
    names = _names(ref.shape[2], names)
    rng = np.random.default_rng(seed)
    fig, axes = _subplots(1, 2, figsize=(10, 4.6))
    both = np.concatenate([ref[:, :, :2].reshape(-1, 2), pred[:, :, :2].reshape(-1, 2)])
    both = both[np.isfinite(both).all(axis=1)]
    lo, hi = np.quantile(both, 0.001, axis=0), np.quantile(both, 0.999, axis=0)
    for ax, (label, ens) in zip(axes, (("truth", ref), ("model", pred))):
        idx = rng.choice(ens.shape[0], min(n, ens.shape[0]), replace=False)
        for j in idx:
            ax.plot(ens[j, :, 0], ens[j, :, 1], lw=0.4, alpha=0.7)
        ax.set_title(f"{label}: phase portrait ({len(idx)} paths)")
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal", adjustable="box")
    fig.tight_layout()
    return fig


def w1_over_time(w1_model, w1_floor, dt, names=None, extra: dict | None = None):
    """W1 of each component over time: model vs reference A, the noise floor (B vs A),
    and optional other models."""
    d = w1_model.shape[1]
    names = _names(d, names)
    t = np.arange(w1_model.shape[0]) * dt
    fig, axes = _subplots(1, d, figsize=(6 * d, 3.8), squeeze=False)
    for i in range(d):
        ax = axes[0, i]
        ax.plot(t, w1_model[:, i], color=COLORS["model"], label="model vs truth")
        ax.plot(t, w1_floor[:, i], color="k", lw=1, label="noise floor (truth B vs A)")
        for k, (label, w) in enumerate((extra or {}).items()):
            ax.plot(t, w[:, i], lw=1, ls="--", color=f"C{k + 2}", label=label)
        ax.set_xlabel("time t")
        ax.set_ylabel(f"W1 of {names[i]} marginal")
        ax.set_title(f"{names[i]}: Wasserstein-1 to the reference")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def drift_diffusion(dd, reference=None, names=None, data_stats=None):
    """Learned drift and diffusion (diagonal) with 2-SE bands, against a reference
    ``reference(x) -> (drift (n, d), diffusion diag (n, d))`` and binned data estimates
    ``data_stats = (centers, drift, diffusion)``. Plotted along the first component."""
    d = dd.drift.shape[1]
    names = _names(d, names)
    x = dd.x[:, 0]
    order = np.argsort(x)
    fig, axes = _subplots(2, d, figsize=(5.5 * d, 7), squeeze=False)
    diag = np.stack([dd.diffusion[:, i, i] for i in range(d)], 1)
    diag_se = np.stack([dd.diffusion_se[:, i, i] for i in range(d)], 1)
    for i in range(d):
        for row, (val, se, what) in enumerate(
            ((dd.drift, dd.drift_se, "drift"), (diag, diag_se, "diffusion (variance rate)"))
        ):
            ax = axes[row, i]
            ax.plot(x[order], val[order, i], color=COLORS["model"], label="learned map")
            ax.fill_between(
                x[order],
                (val - 2 * se)[order, i],
                (val + 2 * se)[order, i],
                color=COLORS["model"],
                alpha=0.2,
            )
            if reference is not None:
                ref = reference(dd.x)[row]
                ax.plot(
                    x[order],
                    ref[order, i],
                    color=COLORS["averaged"],
                    ls="--",
                    label="averaged equation",
                )
            if data_stats is not None:
                centers, drift_b, diff_b = data_stats
                vals = drift_b if row == 0 else diff_b
                ax.plot(centers[:, 0], vals[:, i], "o", ms=3, color="k", label="binned data")
            ax.set_xlabel(names[0])
            ax.set_ylabel(f"{what} of {names[i]}")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def training_curves(history: dict):
    """Train and validation NLL per epoch."""
    fig, ax = _subplots(figsize=(6, 3.8))
    ep = history.get("epoch", [])
    ax.plot(ep, history.get("train_nll", []), label="train NLL")
    ax.plot(ep, history.get("val_nll", []), label="validation NLL")
    if history.get("best_epoch", -1) >= 0:
        ax.axvline(history["best_epoch"], color="k", lw=0.8, ls=":", label="best epoch")
    ax.set_xlabel("epoch")
    ax.set_ylabel("negative log-likelihood (nats / pair)")
    ax.legend()
    fig.tight_layout()
    return fig


def calibration(leads, scores: dict, pit_hists: dict | None = None, score_name="CRPS"):
    """Score per lead time for the model and references, and PIT histograms."""
    n_pit = len(pit_hists or {})
    fig, axes = _subplots(1, 1 + n_pit, figsize=(5 * (1 + n_pit), 3.8), squeeze=False)
    ax = axes[0, 0]
    for label, vals in scores.items():
        ax.plot(leads, vals, marker="o", ms=3, label=label)
    ax.set_xlabel("lead time k (steps of Delta)")
    ax.set_ylabel(f"mean {score_name}")
    ax.set_title(f"{score_name} vs lead time (lower is better)")
    ax.legend(fontsize=8)
    for j, (label, counts) in enumerate((pit_hists or {}).items()):
        ax = axes[0, j + 1]
        counts = np.asarray(counts, dtype=float)
        nb = len(counts)
        ax.bar(
            (np.arange(nb) + 0.5) / nb,
            counts / counts.sum() * nb,
            width=1 / nb,
            edgecolor="k",
            alpha=0.7,
        )
        ax.axhline(1.0, color="k", lw=1)
        ax.set_xlabel("PIT value")
        ax.set_ylabel("density (1 = calibrated)")
        ax.set_title(f"PIT histogram: {label}")
    fig.tight_layout()
    return fig


def free_energy_2d(
    samples: dict, ranges, bins: int = 36, names=("x1", "x2"), vmax: float = 8.0, periodic=True
):
    """Free-energy surfaces F = -log p (in kT, zero at each surface's minimum) of 2-D
    samples, one panel per source (e.g. a Ramachandran plot of (phi, psi) from MD, an MSM
    and a learned map). ``samples``: name -> array (n, 2); ``ranges``: ((lo, hi), (lo, hi));
    bins holding no sample are blank."""
    n = len(samples)
    fig, axes = _subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    edges = [np.linspace(r[0], r[1], bins + 1) for r in ranges]
    mesh = None
    for i, (ax, (label, pts)) in enumerate(zip(axes[0], samples.items(), strict=True)):
        pts = np.asarray(pts, dtype=float).reshape(-1, 2)
        hist, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=edges)
        with np.errstate(divide="ignore"):
            f = -np.log(hist / hist.sum())
        f -= np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
        f[~np.isfinite(f)] = np.nan
        mesh = ax.pcolormesh(edges[0], edges[1], f.T, vmin=0.0, vmax=vmax, cmap="viridis")
        ax.set_title(label)
        ax.set_xlabel(names[0])
        if i == 0:  # the panels share their axes: one label, no overlap with the next panel
            ax.set_ylabel(names[1])
        else:
            ax.tick_params(labelleft=False)
        ax.set_aspect("equal" if periodic else "auto")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes[0]), label="free energy (kT)", shrink=0.85)
    return fig
