"""Choosing the memory K of the map (and the transient to skip) from held-out bursts.

The paper's map assumes that the slow variable is Markov at the observation step Delta.
When the fast variables decorrelate on a time comparable to Delta, successive increments
are correlated and every one-step model gets the multi-step law wrong although its
one-step law is right: with a fast correlation time of Delta / 10 (ex4.2) the one-step
variance is 10 % below the long-time one (the rest lies in the covariance of adjacent
increments), and the ensembles come out 5 % too narrow. A map conditioned on the last K + 1
observations (:attr:`slowflow.model.config.ModelConfig.memory`) carries that correlation.

:func:`fit_memory_auto` first decides whether to drop the first observations of every
burst (fast variables started out of equilibrium): by the transient test of
:mod:`slowflow.train.transient`, which asks whether the first increments of the bursts
follow another law than later increments from the same states. Then it chooses K by how
well each candidate predicts the next increment of bursts it was not fitted on: K-fold
cross-validation over whole trajectories, every candidate scored on the same targets
(observations late enough in their burst for the largest memory tried), trajectory by
trajectory. For the
closed-form maps (the default), whose memory is an autoregression of the standardized
residuals (:mod:`slowflow.model.residual_ar`), the score is the squared norm of the
held-out innovation (each candidate with its own drift); for maps with a network scale or
drift, whose memory is in the drift's inputs, the weighted squared error of the closed-form
drift on the window's coordinates, with the weights of the K = 0 covariance. K = 0, 1,
2, ...: a candidate is kept while it beats the best so far with a signed-rank z of the
per-trajectory paired errors below ``-z`` (ranks, so that one burst with a huge error
cannot decide); the search stops at the first one that does not (or at ``max_memory``).

Why the skip is not chosen by the same held-out score: removing a one-step transient from
1 % of the pairs changes the drift by about its standard error, which moves the held-out
error of later targets by about one paired standard error (ex4.5: z from -0.6 to -1.8 over
three seeds, W1/floor 1.70 -> 1.46 and 1.74 -> 1.33 with the skip), while the test on the
first increments themselves rejects at p ~ 1e-15.

Why the search is not run on a multi-step score: on the 10 % of bursts held out for
validation it cannot resolve a 5 % spread error at the paper's data size (paired z about
0.5 on ex4.2), while the serial correlation of the increments that causes it is plain in
the one-step errors of all the bursts (tens of standard errors). The multi-step score has
the last word instead: a K > 0 that the search chose is compared with K = 0 by the k-step
score of :func:`slowflow.model.score.kstep_score` on the validation bursts, which no
candidate was fitted on (the same starts and random numbers for both, leads up to the
bursts' length), and K = 0 is fitted instead where K is worse by more than ``Z_VETO``
paired standard errors: a memory whose one-step gain comes with a drift or an
autoregression that carries rollouts away is caught there. The two models it compares are
the closed-form Gaussian twins of the requested preset (seconds to fit); for presets whose
memory is in a network's inputs it is not run (it would cost two trainings). ``slowflow
check`` tests the k-step calibration of the final model.

The requested preset is then fitted with the chosen K and skip; every candidate's score
and the multi-step check go into the model's history (``memory_selection``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import replace

import numpy as np
from scipy import stats

from ..data import (
    Trajectories,
    load_trajectories,
    make_windows,
    periodic_ranges,
    split_by_trajectory,
    window_positions,
)
from ..errors import ConfigError, DataError
from ..model.basis import (
    WEIGHT_FLOOR,
    Folds,
    Moments,
    box,
    exponents,
    features_np,
    fit_drift,
    max_degree,
    n_features,
)
from ..model.config import ModelConfig, get_preset
from ..model.covariance import fit_covariance
from ..model.flowmap import window_coords
from ..model.score import kstep_score
from .closed_form import condition_parts
from .config import TrainConfig
from .loop import fit
from .transient import transient_length


class MemoryAutoUnavailable(ConfigError):
    """The data do not allow choosing K (streamed, or bursts too short for a window, a
    target and a scored target): ``slowflow fit``, which chooses K by default, then fits
    K = 0 and says so."""


#: Paired-difference z a candidate must beat the best by to be kept.
Z_ACCEPT = 3.0
#: The same for the memory-in-the-noise candidates: a lag of the residuals' autoregression
#: adds d^2 numbers, and its effect on the long-horizon spread is the horizon times its
#: effect on the one-step error (on ex4.1 an AR(2) coefficient of -0.024 lowers the
#: held-out error by 0.04 % at paired z about -3, and the 100-step spread by 2 %).
Z_ACCEPT_NOISE = 2.0
#: Paired z (the chosen K's k-step score minus K = 0's, in standard errors of the
#: difference) beyond which the multi-step check fits K = 0 instead: one-sided, so that a
#: K the multi-step score cannot tell from K = 0 (most of them, see above) is kept.
Z_VETO = 3.0
#: Starts (of 16 paths each) the multi-step check scores both models on.
VETO_STARTS = 1000
#: Windows the screening uses at most (trajectories drawn at random beyond that). On ex4.1
#: (10,000 bursts, about 970,000 windows) the second lag's mean-difference z was -1.1, -1.2, -3.6
#: over three seeds with 150,000 windows, and -8.2, -7.8 and -6.7 with 500,000: the
#: lag (an AR(2) coefficient of -0.02, which halves the ensembles' spread error over the
#: horizon) is plain in the data and was lost to the subsample. With d slow variables the
#: cap is ``SCREEN_WINDOWS / d`` (numbers per window grow with d, and so does the cost:
#: 68 s for the ring with d = 5 on 500,000 windows).
SCREEN_WINDOWS = 500_000


def _screen_data(train: Trajectories, seed: int):
    """The training bursts the screening uses (at most about ``SCREEN_WINDOWS / d``
    windows)."""
    per = np.maximum(train.lengths - 1, 0)
    cap = SCREEN_WINDOWS // max(1, train.dim)
    if per.sum() <= cap:
        return train
    rng = np.random.default_rng([seed, 17])
    order = rng.permutation(train.n_traj)
    keep = order[: max(2, int(np.searchsorted(np.cumsum(per[order]), cap)))]
    return train.subset(np.sort(keep))


class _Screen:
    """Cross-validated one-step errors of the candidates on common targets."""

    def __init__(self, data: Trajectories, max_memory: int, skip: int, seed: int, folds=10):
        self.data, self.seed = data, seed
        self.k_max, self.t0 = int(max_memory), int(max_memory) + int(skip) + 1
        self.folds = folds
        # weights: the inverse variance of the K = 0 covariance at each target's x_n
        h, x1, traj = make_windows(data, 0, 0)
        x0 = h[:, 0]
        drift = fit_drift(x0, x1, data.dt, traj, seed=seed)
        cov = fit_covariance(x1 - x0 - data.dt * drift.drift(x0), data.dt, x0, traj, seed=seed)
        self.degree, self.cov = drift.degree, cov

    def _weights(self, x: np.ndarray) -> np.ndarray:
        var = np.einsum("nii->ni", self.cov.sigma(x))
        return 1.0 / np.maximum(var, WEIGHT_FLOOR * var.mean(0))

    def errors(self, k: int, skip: int) -> np.ndarray:
        """Held-out weighted squared error per trajectory (n_traj,), for memory k, skip."""
        data, dt = self.data, self.data.dt
        h, x1, traj = make_windows(data, k, skip)
        h = h[:, 0] if k == 0 else h
        x0 = h if k == 0 else h[:, -1]
        z = x0 if k == 0 else window_coords(h, k)
        # the target's index in its burst: skip + K + 1 + position among the windows
        pos = window_positions(traj)
        evaluate = pos + skip + k + 1 >= self.t0
        y = (x1 - x0) / dt
        w = self._weights(x0)
        p_dim = z.shape[1]
        deg = min(self.degree, max_degree(p_dim, traj.size))
        lo, hi = box(z)
        cv = Folds.of(traj, self.folds, self.seed)
        phi = features_np(z[cv.order], lo, hi, exponents(p_dim, deg))
        y, w, traj_o, ev = y[cv.order], w[cv.order], traj[cv.order], evaluate[cv.order]
        m = n_features(p_dim, deg)
        out = np.zeros(data.n_traj)
        for i in range(y.shape[1]):
            mo = Moments.of(phi, y[:, i], w[:, i], cv.bounds)
            for f in range(cv.k):
                sl = slice(cv.bounds[f], cv.bounds[f + 1])
                beta = mo.coef(m, leave_out=f)[:, 0]
                r = (y[sl, i] - phi[sl] @ beta) ** 2 * w[sl, i] * ev[sl]
                np.add.at(out, traj_o[sl], r)
        return out


class _NoiseScreen:
    """Cross-validated errors of the memory-in-the-noise candidates
    (:mod:`slowflow.model.residual_ar`): the standardized residuals of the one-step drift
    and covariance, an autoregression of order K fitted on the other folds' trajectories,
    and the squared norm of the held-out innovation xi_{n+1} - sum_k A_k xi_{n+1-k} per
    trajectory (K = 0: of xi_{n+1}). Each candidate's residuals are those of its own drift
    (fitted with its autoregression on all the screened bursts: the drift's parameters are
    the same for every candidate, so its in-sample fit favours none); the covariance is
    the one-step one for all, so every candidate is scored in the same units."""

    def __init__(self, data: Trajectories, max_memory: int, skip: int, seed: int, folds=10):
        self.data, self.seed, self.folds = data, seed, folds
        self.k_max, self.t0 = int(max_memory), int(max_memory) + int(skip) + 1
        self.periods = periodic_ranges(data)
        self._fit = None

    def _coords(self, pts: np.ndarray) -> np.ndarray:
        return condition_parts(pts, 0, self.periods)[1]

    def _one_step(self, skip: int):
        if self._fit is None:
            h, x1, traj = make_windows(self.data, 0, skip)
            x0 = h[:, 0]
            z = self._coords(x0)
            dt = self.data.dt
            drift = fit_drift(x0, x1, dt, traj, seed=self.seed, context=z)
            resid = x1 - x0 - dt * drift.drift(z)
            self._fit = (drift, fit_covariance(resid, dt, z, traj, seed=self.seed))
        return self._fit

    def errors(self, k: int, skip: int) -> np.ndarray:
        from ..model.residual_ar import fit_ar, fit_residual_ar, predicted, residuals, steps

        data, dt = self.data, self.data.dt
        h, x1, traj = make_windows(data, k, skip)
        drift, cov = self._one_step(skip)
        if k:  # the candidate's own drift (Cochrane-Orcutt), the covariance kept
            drift = fit_residual_ar(
                h, x1, traj, drift, cov, dt, self._coords, self.periods, lambda r: cov
            )[0]
        starts, inc = steps(h, x1, self.periods)
        xi = residuals(starts, inc, drift, cov, dt, self._coords)[0]
        pos = window_positions(traj)
        evaluate = pos + skip + k + 1 >= self.t0
        cv = Folds.of(traj, self.folds, self.seed)
        out = np.zeros(data.n_traj)
        for f in range(cv.k):
            held = np.zeros(traj.size, dtype=bool)
            held[cv.order[cv.bounds[f] : cv.bounds[f + 1]]] = True
            eta = xi[held, -1]
            if k:
                eta = eta - predicted(fit_ar(xi[~held]), xi[held, :-1])
            np.add.at(out, traj[held], (eta**2).sum(-1) * evaluate[held])
        return out


def _check_values(data: Trajectories, source: str) -> None:
    """Refuse values that training in float32 cannot use, as fit does, before screening."""
    top = float(np.nanmax(np.abs(data.x))) if data.x.size else 0.0
    if not top < float(np.finfo(np.float32).max) / 1e3:
        raise DataError(
            f"{source}: the values are too large for training in float32 (max |x| = {top:g}); "
            "rescale the data"
        )


def signed_rank_z(diff: np.ndarray) -> float:
    """The Wilcoxon signed-rank statistic of paired differences as a z (normal
    approximation; zeros dropped): negative where the differences are mostly negative.

    Per-trajectory held-out errors can be dominated by a single burst (on the skew
    product at eps = 5 Delta one burst's error was 2.6e7 where the median was 75, and K = 1
    was better on every other burst); a mean-difference z then follows that burst, ranks
    do not.

    Examples
    --------
    >>> round(signed_rank_z(np.array([-1.0, -2.0, -3.0, 0.5])), 2)
    -1.46
    """
    d = diff[diff != 0]
    n = d.size
    if n == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    mean = n * (n + 1) / 4
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    return float((ranks[d > 0].sum() - mean) / sd)


def _search(screen, max_memory: int, skip: int, z: float):
    """(best K, record): K = 1, 2, ... kept while each beats the best so far by more than
    ``z`` (the signed-rank z of the per-trajectory differences, all with this ``skip``)."""
    best_k, best = 0, screen.errors(0, skip)
    record = [_entry((0, skip), best, None, True)]
    for k in range(1, max_memory + 1):
        err = screen.errors(k, skip)
        zval = signed_rank_z(err - best)
        keep = zval < -z
        record.append(_entry((k, skip), err, zval, keep))
        if not keep:
            break
        best, best_k = err, k
    return best_k, record


def _entry(key, err, zval, kept) -> dict:
    return {
        "memory": key[0],
        "skip_first": key[1],
        "error": float(err.mean()),
        "z": zval,
        "kept": kept,
    }


def _candidate(data: Trajectories, config: ModelConfig, memory: int, skip: int, cfg):
    """A model of the multi-step check: ``config`` fitted on the training part of ``data``."""
    run = replace(cfg, skip_first=skip, kstep_every=0)
    return fit(data, config, run, memory=memory, progress=False)


def _closed_form(config: ModelConfig) -> bool:
    """True when the preset with memory is fitted in closed form (nothing to train)."""
    return replace(config, memory=1).uses_basis_scale and config.flow == "gaussian"


def _gaussian_twin(model):
    """A copy of a closed-form model with N(0, I) innovations."""
    twin = copy.deepcopy(model)
    twin.set_innovation_law(None)
    return twin


def _multistep_check(data, val, target, k: int, skip: int, cfg, final=None):
    """The k-step scores of K and of K = 0 on the validation bursts (module docstring):
    a record whose ``vetoed`` says whether K = 0 is fitted instead. Both models are the
    closed-form Gaussian twins of ``target``; ``final``, the closed-form model already
    fitted with K, gives its twin without a second fit."""
    t0 = time.perf_counter()
    if not replace(target, memory=1).uses_basis_scale:
        return {"run": False, "why": "the preset's memory is in a network's inputs"}
    if val.n_traj == 0:
        return {"run": False, "why": "no validation bursts"}
    twin = replace(target, flow="gaussian", transforms=0, innovation="gaussian")
    scores = {}
    try:
        for memory in (0, k):
            if memory and final is not None:
                model = _gaussian_twin(final)
            else:
                model = _candidate(data, twin, memory, skip, cfg)
            scores[memory] = kstep_score(
                model, val.x, val.lengths, n_starts=VETO_STARTS, seed=cfg.seed, first=skip + k
            )
    except ConfigError as err:  # no validation burst long enough for a lead after the window
        return {"run": False, "why": str(err)}
    diff = scores[k]["per_start"] - scores[0]["per_start"]
    se = diff.std(ddof=1) / math.sqrt(diff.size)
    zval = float(diff.mean() / se) if se > 0 else 0.0
    return {
        "run": True,
        "memory": k,
        "score": scores[k]["score"],
        "score_memory_0": scores[0]["score"],
        "max_lead": scores[k]["leads"][-1],
        "z": zval,
        "z_veto": Z_VETO,
        "vetoed": zval > Z_VETO,
        "n_starts": VETO_STARTS,
        "seconds": time.perf_counter() - t0,
    }


def _fit_checked(final, data, val, target, k: int, skip: int, cfg):
    """(model, multi-step record): ``final(K)`` fitted with the chosen K, or with K = 0
    where the multi-step check vetoes K. A closed-form preset is fitted first and its twin
    checked (seconds); a trained preset's twins are checked before its training."""
    if k == 0:
        return final(0), {"run": False, "why": "memory 0 chosen"}
    model = final(k) if _closed_form(target) else None
    check = _multistep_check(data, val, target, k, skip, cfg, final=model)
    if check.get("vetoed"):
        return final(0), check
    return (model if model is not None else final(k)), check


def _inputs(data, model_config, dt):
    """The bursts (loaded and checked) and the target model config."""
    source = "the data" if isinstance(data, Trajectories) else str(data)
    if not isinstance(data, Trajectories):
        data = load_trajectories(data, dt=dt)
    _check_values(data, source)
    if isinstance(model_config, str) or model_config is None:
        target = get_preset(model_config)
    else:
        target = model_config
    return data, target


def _select(train, target, seed, max_memory, max_skip, skip_first, z):
    """Choose skip-first (transient test) and K (held-out screen) on the training bursts."""
    # short bursts: fewer candidates (each needs a window, a target and a scored target)
    room = int(train.lengths.max()) - 3
    if room < 1:
        raise MemoryAutoUnavailable(
            f"--memory auto needs bursts of at least 4 observations, the longest has "
            f"{int(train.lengths.max())}; give a fixed --memory K"
        )
    if skip_first is None:
        transient = transient_length(train, min(int(max_skip), room), seed)
        skip = transient["skip"]
    else:
        transient, skip = {"given": int(skip_first)}, int(skip_first)
    max_memory = max(0, min(int(max_memory), room - skip))
    noise = replace(target, memory=1).uses_basis_scale
    kind = _NoiseScreen if noise else _Screen
    if z is None:
        z = Z_ACCEPT_NOISE if noise else Z_ACCEPT
    screen = kind(_screen_data(train, seed), max_memory, skip, seed)
    k, record = _search(screen, max_memory, skip, z)
    return k, skip, record, transient, z, screen


def fit_memory_auto(
    data,
    model_config: ModelConfig | str | None = None,
    train_config: TrainConfig | None = None,
    *,
    max_memory: int = 4,
    max_skip: int = 2,
    z: float | None = None,
    skip_first: int | None = None,
    dt: float | None = None,
    progress: bool | None = None,
    **fit_kwargs,
):
    """Fit with the memory K and skip-first chosen on held-out bursts (module docstring).

    Parameters
    ----------
    data : Trajectories or path
        Bursts in memory or a file (streaming is not supported by the selection).
    model_config : ModelConfig, preset name or None
        The model to fit with the chosen K (its own ``memory`` is ignored).
    train_config : TrainConfig or None
        Its ``skip_first`` is replaced by the chosen one; keyword arguments that name its
        fields override it, the others (``checkpoint``, ``stop_flag``, ...) go to the
        final :func:`~slowflow.train.fit`.
    max_memory, max_skip : int
        The largest K tried (fewer where the bursts are too short: every candidate is
        scored on targets after the largest window) and the most leading observations the
        transient test may skip.
    z : float, optional
        The signed-rank z (:func:`signed_rank_z`) a candidate must win by (None:
        ``Z_ACCEPT_NOISE`` for the closed-form maps, ``Z_ACCEPT`` for the others).
    skip_first : int, optional
        Keep this skip (the user's) and choose K only; None: choose both.

    Returns
    -------
    FlowMap
        The fitted model; ``history["memory_selection"]`` lists every candidate with its
        held-out error, the signed-rank z against the best before it and whether it was kept,
        the transient test's record (``transient``) and the multi-step check
        (``multistep``: both k-step scores, their paired z and whether K was vetoed).
    """
    t0 = time.perf_counter()
    fields = TrainConfig.__dataclass_fields__
    cfg = replace(
        train_config or TrainConfig(), **{k: v for k, v in fit_kwargs.items() if k in fields}
    )
    extra = {k: v for k, v in fit_kwargs.items() if k not in fields}
    if cfg.stream:
        raise MemoryAutoUnavailable("--memory auto cannot stream the data; give a fixed --memory K")
    data, target = _inputs(data, model_config, dt)
    train, val = split_by_trajectory(data, cfg.val_fraction, seed=cfg.seed)
    k, skip, record, transient, z, screen = _select(
        train, target, cfg.seed, max_memory, max_skip, skip_first, z
    )
    # the preset's name (when one was given) stays in the model's meta
    given = model_config if isinstance(model_config, str) else target

    def final(memory):
        run = replace(cfg, skip_first=skip)
        return fit(data, given, run, memory=memory, progress=progress, **extra)

    model, check = _fit_checked(final, data, val, target, k, skip, cfg)
    k = model.memory
    model.history["memory_selection"] = {
        "candidates": record,
        "chosen": {"memory": k, "skip_first": skip},
        "transient": transient,
        "multistep": check,
        "z_accept": float(z),
        "first_scored_observation": screen.t0,
        "n_trajectories": int(screen.data.n_traj),
        "seconds": time.perf_counter() - t0,
    }
    return model


def describe(selection: dict) -> str:
    """The transient test and one line per candidate, for the command line."""
    lines = []
    tr = selection.get("transient") or {}
    if "given" in tr:
        lines.append(f"  skip-first {tr['given']} (given)")
    for p in tr.get("positions", []):
        lines.append(
            f"  transient test, increments from observation {p['position']}: "
            f"chi2 {p['wald']:.1f} on {p['dof']} dof, p {p['p_value']:.2g}"
            + (" (skipped)" if p["position"] < tr["skip"] else "")
        )
    for c in selection["candidates"]:
        z = "" if c["z"] is None else f", signed-rank z {c['z']:+.1f}"
        lines.append(
            f"  memory {c['memory']}, skip-first {c['skip_first']}: held-out error "
            f"{c['error']:.6g}{z}{' (kept)' if c['kept'] and c['z'] is not None else ''}"
        )
    ms = selection.get("multistep") or {}
    if ms.get("run"):
        lines.append(
            f"  multi-step check on the validation bursts (leads up to {ms['max_lead']}): "
            f"k-step score {ms['score']:.4g} with memory {ms['memory']}, "
            f"{ms['score_memory_0']:.4g} with memory 0, paired z {ms['z']:+.1f}"
            + (" (worse: memory 0 fitted instead)" if ms["vetoed"] else "")
        )
    ch = selection["chosen"]
    lines.append(
        f"  chosen: memory {ch['memory']}, skip-first {ch['skip_first']} "
        f"({selection['seconds']:.1f} s)"
    )
    return "\n".join(lines)
