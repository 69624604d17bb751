"""The closed-form stages of a model: the basis drift, the covariance, the history bank, and
the finished model when nothing is left to train."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import TrainingError
from ..model.basis import WEIGHT_FLOOR
from ..model.config import ModelConfig
from ..model.flowmap import FlowMap
from .config import TrainConfig
from .distributed import all_reduce
from .prepare import Prepared
from .results import kstep, meta_of, nll_sum


def fit_closed_form(config: ModelConfig, prep: Prepared, cfg: TrainConfig):
    """The closed-form stages of a model from the training pairs: (drift, covariance,
    autoregression), each a fit or None.

    Basis drift by feasible GLS (:func:`~slowflow.model.basis.fit_drift`). With a
    closed-form scale: the covariance of its residuals
    (:func:`~slowflow.model.covariance.fit_covariance`), the drift fitted again weighted by
    the inverse of that covariance's diagonal, and the covariance of the final residuals.
    With memory K > 0 and a closed-form scale, these one-step fits on x_n start the
    Cochrane-Orcutt rounds of :mod:`slowflow.model.residual_ar` (the memory in the noise).
    """
    from ..model.covariance import fit_covariance
    from ..model.residual_ar import fit_residual_ar

    if not config.uses_basis or prep.drift_sample is None:
        return None, None, None
    h, x1, groups = prep.drift_sample
    noise_memory = config.memory > 0 and config.uses_basis_scale
    x0, z = condition_parts(h, 0 if noise_memory else config.memory, prep.periods, last=True)
    dt, seed = prep.dt, cfg.seed
    drift, cov = _one_step(x0, x1, z, groups, dt, config, seed)
    if not noise_memory:
        return drift, cov, None

    def coords(pts):
        return condition_parts(pts, 0, prep.periods)[1]

    def refit(resid):
        return fit_covariance(resid, dt, z, groups, degree=cov.degree, seed=seed)

    return fit_residual_ar(h, x1, groups, drift, cov, dt, coords, prep.periods, refit)


def _one_step(x0, x1, z, groups, dt, config: ModelConfig, seed: int):
    """The basis drift (and, with a closed-form scale, the covariance) at coordinates z."""
    from ..model.basis import fit_drift
    from ..model.covariance import fit_covariance

    deg = config.basis_degree
    drift = fit_drift(x0, x1, dt, groups, degree=deg, seed=seed, context=z)
    if not config.uses_basis_scale:
        return drift, None
    for final in (False, True):
        resid = x1 - x0 - dt * drift.drift(z)
        cov = fit_covariance(resid, dt, z, groups, degree=config.scale_degree, seed=seed)
        if final:
            return drift, cov
        var = np.einsum("nii->ni", cov.sigma(z))
        # floored like the residual weights: a covariance that nearly vanishes somewhere
        # must not let a few pairs carry the fit
        var = np.maximum(var, WEIGHT_FLOOR * var.mean(0))
        drift = fit_drift(x0, x1, dt, groups, degree=deg, weights=1.0 / var, seed=seed, context=z)
    raise AssertionError("unreachable")


def condition_parts(
    h: np.ndarray, memory: int, periods=None, last: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(x_n, coordinates) of conditions: (N, d) for K = 0, windows (N, K + 1, d); periodic
    variables (``periods``: (lo, hi) or None per variable) enter through cos and sin.
    ``last``: h may be windows whose last point alone is the condition (memory 0)."""
    from ..model.flowmap import window_coords

    if last and h.ndim == 3:
        h = h[:, -1]
    x0 = h if memory == 0 else h[:, -1]
    per = [j for j, r in enumerate(periods or []) if r is not None]
    if not per:
        return x0, window_coords(h, memory)
    lo = np.array([r[0] if r else 0.0 for r in periods])
    period = np.array([r[1] - r[0] if r else 1.0 for r in periods])
    return x0, window_coords(h, memory, per, lo, period)


#: Training windows a map with memory keeps to draw rollout histories from.
HISTORY_BANK = 20_000


def history_bank(h: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 11])
    keep = rng.choice(h.shape[0], min(HISTORY_BANK, h.shape[0]), replace=False)
    return h[np.sort(keep)]


#: Training and validation pairs the innovation law is fitted and chosen on at most.
INNOVATION_TRAIN, INNOVATION_VAL = 300_000, 50_000


def innovation_law(model: FlowMap, prep: Prepared, cfg: TrainConfig) -> dict | None:
    """Choose and store the law of a Gaussian preset's innovation (its config's
    ``innovation``; :mod:`slowflow.model.innovation`) from the training pairs, judged on
    the validation pairs. Returns the record (None: nothing to choose)."""
    from ..model.innovation import choose_law

    want = model.config.innovation
    if not hasattr(model, "innov_count") or prep.drift_sample is None or want == "gaussian":
        return None
    model.set_innovation_law(None)
    rng = np.random.default_rng([cfg.seed, 31])
    parts = []
    for h, x1, cap in (
        (prep.drift_sample[0], prep.drift_sample[1], INNOVATION_TRAIN),
        (prep.v0, prep.v1, INNOVATION_VAL),
    ):
        keep = rng.choice(h.shape[0], min(cap, h.shape[0]), replace=False)
        if model.memory == 0 and h.ndim == 3:
            h = h[:, -1]
        device = model.x_mean.device
        ht = torch.as_tensor(h[np.sort(keep)], dtype=torch.float32, device=device)
        xt = torch.as_tensor(x1[np.sort(keep)], dtype=torch.float32, device=device)
        parts += [t.double().cpu().numpy() for t in model.innovations(ht, xt)]
    if min(parts[1].shape[0], parts[3].shape[0]) < 2:
        return None
    law, record = choose_law(*parts, seed=cfg.seed, force=want == "empirical")
    model.set_innovation_law(law)
    if law is not None:
        record["law"] = law.summary()
    return record


def closed_form_model(
    model, prep, cfg, preset_name, device, dctx, fits, seconds, stop_flag=None
) -> FlowMap:
    """Finish a model whose every stage was fitted in closed form: its validation scores,
    history and meta (no epochs, no checkpoints: a refit takes seconds)."""
    model.eval()
    innovation = innovation_law(model, prep, cfg)
    tv0 = torch.as_tensor(prep.v0[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
    tv1 = torch.as_tensor(prep.v1[dctx.rank :: dctx.world], dtype=torch.float32, device=device)
    n_val = int(prep.v0.shape[0])
    val = all_reduce([nll_sum(model, tv0, tv1)], device, dctx)[0] / max(1, n_val)
    if not math.isfinite(val):
        raise TrainingError(
            f"the closed-form model has no finite validation NLL ({val}); check the data"
        )
    history: dict = {"epoch": [], "train_nll": [], "val_nll": [], "lr": [], "seconds": []}
    for key, fit in zip(("drift_basis", "covariance_basis", "memory_ar"), fits):
        if fit is not None:
            history[key] = fit.summary()
    if innovation is not None:
        history["innovation"] = innovation
    stopped = stop_flag is not None and bool(stop_flag())
    history.update(
        initial_val_nll=val,
        best_val_nll=val,
        best_epoch=-1 if stopped else 0,
        stop_reason="interrupted during the closed-form fit"
        if stopped
        else "closed form: drift and covariance fitted by least squares, nothing to train",
        closed_form_seconds=seconds,
        train_seconds=seconds,
        n_train_pairs=int(prep.n_train),
        n_val_pairs=n_val,
        world_size=dctx.world,
        lr_reached_peak=True,
    )
    if dctx.rank == 0 and cfg.kstep_every:
        history["kstep"] = kstep(model, prep, cfg)
    model.history = history
    model.meta = meta_of(model, prep, cfg, preset_name, device, dctx)
    return model


def reweight_drift(model: FlowMap, prep: Prepared, cfg: TrainConfig, degree: int | None):
    """Refit a basis drift weighted by the model's learned conditional variance (``degree``
    None: chosen again) and store it in the model; returns the fit (None: nothing to do)."""
    from ..model.basis import fit_drift

    if not model.config.uses_basis or prep.drift_sample is None:
        return None
    h, x1, groups = prep.drift_sample
    x0, z = condition_parts(h, model.memory, prep.periods)
    var = model.conditional_variance(h)
    weights = 1.0 / np.maximum(var, 1e-12 * var.mean(0))
    fit = fit_drift(
        x0, x1, prep.dt, groups, degree=degree, weights=weights, seed=cfg.seed, context=z
    )
    model.set_drift(fit)
    return fit
