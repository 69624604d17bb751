"""Calibration of a learned kernel on held-out trajectories (a Chapman-Kolmogorov test).

Start the model at observed states x_n of held-out trajectories, simulate k = 1..K steps
with an ensemble of ``n_members`` paths per start, and score the ensemble against the
observed x_{n+k}: CRPS per component (and the energy score for d >= 2), and the
probability integral transform (PIT, a randomized rank) per component and lead time.

If the slow variable is Markov at step Delta and the model learned its kernel, the PIT is
uniform at every lead k. A one-step kernel that is right at k = 1 but whose k-step
iterates drift away from the data (U-shaped PIT at larger k) means the k-step law is not
the k-fold composition of the one-step law: the data carry memory at this Delta, or the
model is wrong.

The verdict
-----------
For each lead and component: the PIT dispersion index D = 12 Var(PIT) (1 when calibrated;
a Gaussian forecast whose spread is 10 % too narrow gives D = 1.12, 10 % too wide 0.90)
and the PIT mean bias |E[PIT] - 1/2| (a shift of 0.1 true standard deviations gives 0.028).
The kernel is flagged when, at any lead, D > 1.12 or D < 0.90 or the bias exceeds 0.03, and
the deviation also exceeds 3 standard errors (so that small samples do not raise false
alarms). Spread errors of 10 % are the size that is visible in mean +- std plots and
that the paper's own trained models show (11-20 %); with 2,000 starts they lie 6 standard
errors away from 1, so a calibrated kernel is flagged with negligible probability.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..data import Trajectories, periodic_ranges
from ..errors import ConfigError, DataError
from ..model.periods import check_model_periods
from . import metrics

D_HIGH, D_LOW, BIAS_MAX, N_SE = 1.12, 0.90, 0.03, 3.0

Sampler = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass
class CalibrationResult:
    """Scores per lead time k (rows) and component (columns)."""

    leads: np.ndarray
    n_starts: int
    n_members: int
    crps: np.ndarray  # (K, d) model
    pit_dispersion: np.ndarray  # (K, d)
    pit_bias: np.ndarray  # (K, d) E[PIT] - 1/2
    pit_counts: np.ndarray  # (K, d, bins)
    energy: np.ndarray | None = None  # (K,) for d >= 2
    crps_reference: np.ndarray | None = None
    energy_reference: np.ndarray | None = None
    pit_dispersion_reference: np.ndarray | None = None
    calibrated: bool = True
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"calibration on {self.n_starts} held-out starts x {self.n_members} members, "
            f"leads 1..{int(self.leads[-1])}:"
        ]
        for i in range(self.crps.shape[1]):
            lines.append(
                f"  x{i + 1}: PIT dispersion 12Var(PIT) {self._range(self.pit_dispersion[:, i])} "
                f"(1 = calibrated), PIT bias {self._range(self.pit_bias[:, i])}, "
                f"CRPS at lead 1 {self.crps[0, i]:.4g}, at lead {int(self.leads[-1])} {self.crps[-1, i]:.4g}"
                + (
                    f" (reference {self.crps_reference[0, i]:.4g} / {self.crps_reference[-1, i]:.4g})"
                    if self.crps_reference is not None
                    else ""
                )
            )
        verdict = "CALIBRATED" if self.calibrated else "FLAGGED"
        lines.append(
            f"verdict: {verdict}" + ("" if self.calibrated else ": " + "; ".join(self.reasons))
        )
        return "\n".join(lines)

    @staticmethod
    def _range(v: np.ndarray) -> str:
        return f"{np.min(v):.3f}..{np.max(v):.3f}"

    def to_dict(self) -> dict:
        return metrics.to_jsonable(
            {
                "leads": self.leads,
                "n_starts": self.n_starts,
                "n_members": self.n_members,
                "crps": self.crps,
                "energy_score": self.energy,
                "pit_dispersion": self.pit_dispersion,
                "pit_bias": self.pit_bias,
                "pit_counts": self.pit_counts,
                "crps_reference": self.crps_reference,
                "energy_reference": self.energy_reference,
                "pit_dispersion_reference": self.pit_dispersion_reference,
                "calibrated": self.calibrated,
                "reasons": self.reasons,
                "thresholds": {
                    "dispersion_high": D_HIGH,
                    "dispersion_low": D_LOW,
                    "bias_max": BIAS_MAX,
                    "n_standard_errors": N_SE,
                },
            }
        )


def model_sampler(model) -> Sampler:
    """Adapt a FlowMap to the sampler protocol ``f(starts (N, d), n_steps, seed)`` (for a
    map with memory K the starts are histories (N, K + 1, d))."""
    from ..rollout import predict

    def sample(starts: np.ndarray, n_steps: int, seed: int) -> np.ndarray:
        return predict(model, starts, n_steps, seed=seed, progress=False)

    return sample


def system_sampler(system, dt_obs: float, substeps: int | None = None) -> Sampler:
    """The best Markov predictor given only x_n for a built-in system: the full system
    started at x_n with its fast variables drawn from their conditional stationary law."""
    from ..simulate import resolve_steps, simulate_paths
    from ..systems import get_system

    system = get_system(system)

    def sample(starts: np.ndarray, n_steps: int, seed: int) -> np.ndarray:
        _, m = resolve_steps(dt_obs, dt_obs, substeps)
        rng = np.random.default_rng(seed + 7)
        y = system.sample_fast(starts, rng) if system.fast_dim else np.empty((len(starts), 0))
        s0 = np.concatenate([starts, y], axis=1)
        return simulate_paths(system, s0, n_steps, dt_obs, m, seed=seed, progress=False)

    return sample


def _starts(
    data: Trajectories, max_lead: int, n_starts: int, rng: np.random.Generator, memory: int = 0
):
    """Random windows (n_starts, memory + max_lead + 1, d) of held-out trajectories: the
    start x_n at position ``memory``, its past before it, the observations after it."""
    lengths = data.lengths
    usable = lengths - max_lead - memory  # start indices memory..L-1-max_lead
    if usable.max() < 1:
        raise DataError(
            f"held-out trajectories have at most {lengths.max()} observations; "
            f"need more than max_lead={max_lead}" + (f" + memory {memory}" if memory else "")
        )
    weights = np.clip(usable, 0, None).astype(float)
    traj = rng.choice(data.n_traj, size=n_starts, p=weights / weights.sum())
    idx = memory + (rng.random(n_starts) * usable[traj]).astype(int)
    offsets = range(-memory, max_lead + 1)
    return np.stack([data.x[traj, idx + k] for k in offsets], axis=1)


def _scores(samples: np.ndarray, obs: np.ndarray, rng, periods=None) -> tuple:
    """samples (n, m, K+1, d), obs (n, K+1, d) -> per-lead CRPS, energy, PIT stats.
    Periodic components (``periods``) are scored on the circle: every sample is moved by
    whole periods next to its observation first."""
    n, m, k1, d = samples.shape
    for j, r in enumerate(periods or []):
        if r is not None:
            period = r[1] - r[0]
            diff = samples[..., j] - obs[:, None, :, j]
            samples[..., j] = obs[:, None, :, j] + (diff + period / 2) % period - period / 2
    K = k1 - 1
    crps = np.empty((K, d))
    disp = np.empty((K, d))
    bias = np.empty((K, d))
    counts = np.empty((K, d, 10), dtype=int)
    energy = np.empty(K) if d >= 2 else None
    for k in range(1, k1):
        for i in range(d):
            ens = samples[:, :, k, i].T  # (m, n)
            crps[k - 1, i] = float(np.mean(metrics.crps_ensemble(ens, obs[:, k, i])))
            pit = metrics.pit_values(ens, obs[:, k, i], rng)
            disp[k - 1, i] = 12.0 * float(np.var(pit))
            bias[k - 1, i] = float(np.mean(pit)) - 0.5
            counts[k - 1, i] = metrics.pit_histogram(pit, bins=10)["counts"]
        if energy is not None:
            energy[k - 1] = float(
                np.mean(
                    metrics.energy_score(np.transpose(samples[:, :, k, :], (1, 0, 2)), obs[:, k, :])
                )
            )
    return crps, energy, disp, bias, counts


def _kernel_sampler(kernel, data: Trajectories) -> tuple:
    """The kernel's sampler and the data's periodic ranges, after checking that the kernel
    fits the held-out data (dimension, step, periods)."""
    sampler = (
        kernel if callable(kernel) and not hasattr(kernel, "config") else model_sampler(kernel)
    )
    if hasattr(kernel, "dim") and kernel.dim != data.dim:
        raise DataError(
            f"held-out data have d={data.dim} slow variables but the model has d={kernel.dim}"
        )
    if hasattr(kernel, "dt") and not math.isclose(float(kernel.dt), data.dt, rel_tol=1e-6):
        raise DataError(
            f"held-out data have step dt={data.dt:g} but the model was trained at "
            f"dt={float(kernel.dt):g}"
        )
    periods = periodic_ranges(data)
    if hasattr(kernel, "periodic"):
        check_model_periods(kernel, periods, "held-out data")
    return sampler, periods


def _verdict(disp: np.ndarray, bias: np.ndarray, n: int) -> list[str]:
    """Reasons to flag: PIT dispersion or bias (leads x d) outside its band by more than
    N_SE standard errors of n uniform values."""
    # SE of 12 Var(U) for n uniform values: 12 sqrt((1/80 - 1/144) / n) = 0.894 / sqrt(n)
    se_disp = 12.0 * math.sqrt((1.0 / 80.0 - 1.0 / 144.0) / n)
    se_bias = math.sqrt(1.0 / 12.0 / n)
    reasons = []
    for k, i in np.ndindex(*disp.shape):
        dv, bv = disp[k, i], bias[k, i]
        if (dv > D_HIGH or dv < D_LOW) and abs(dv - 1.0) > N_SE * se_disp:
            kind = "too narrow (under-dispersed)" if dv > 1 else "too wide (over-dispersed)"
            reasons.append(f"x{i + 1} lead {k + 1}: ensemble {kind}, 12Var(PIT)={dv:.3f}")
        if abs(bv) > BIAS_MAX and abs(bv) > N_SE * se_bias:
            reasons.append(f"x{i + 1} lead {k + 1}: biased, mean PIT {0.5 + bv:.3f}")
    return reasons


def check_calibration(
    kernel,
    data: Trajectories,
    max_lead: int = 10,
    n_starts: int = 2000,
    n_members: int = 100,
    seed: int = 0,
    reference: Sampler | None = None,
) -> CalibrationResult:
    """Score k-step ensembles of ``kernel`` against held-out trajectories.

    Parameters
    ----------
    kernel : FlowMap or sampler ``f(starts (N, d), n_steps, seed) -> (N, n_steps + 1, d)``
        A map with memory K starts from the K observations before each start too.
    data : Trajectories
        Held-out trajectories (not used in training) at the model's step Delta.
    reference : sampler or None
        A perfect-kernel (or best Markov) reference scored the same way, when available.
    """
    if int(max_lead) < 1 or int(n_starts) < 10 or int(n_members) < 2:
        raise ConfigError("need max_lead >= 1, n_starts >= 10 and n_members >= 2")
    sampler, periods = _kernel_sampler(kernel, data)
    memory = int(getattr(kernel, "memory", 0))
    max_lead = int(min(max_lead, int(data.lengths.max()) - 1 - memory))
    from ..io.limits import check_memory

    check_memory(  # the ensembles' paths (float64) with the rollout's float32 buffer
        12.0 * int(n_starts) * int(n_members) * (max_lead + 1) * data.dim,
        f"n_starts={n_starts} x n_members={n_members} x {max_lead + 1} leads "
        "(CLI: --n-starts, --n-members)",
    )
    rng = np.random.default_rng(seed)
    full = _starts(data, max_lead, int(n_starts), rng, memory)
    window = full[:, memory:]  # x_n and the observations after it
    n, d = window.shape[0], window.shape[2]
    points = np.repeat(window[:, 0], n_members, axis=0)
    histories = np.repeat(full[:, : memory + 1], n_members, axis=0) if memory else points

    def run(s: Sampler, sd: int, starts) -> tuple:
        paths = s(starts, max_lead, sd).reshape(n, n_members, max_lead + 1, d)
        if not np.isfinite(paths).all():
            raise DataError("the kernel produced non-finite values from held-out starts")
        return _scores(paths, window, np.random.default_rng(seed + 1), periods)

    crps, energy, disp, bias, counts = run(sampler, seed, histories)
    result = CalibrationResult(
        leads=np.arange(1, max_lead + 1),
        n_starts=n,
        n_members=int(n_members),
        crps=crps,
        pit_dispersion=disp,
        pit_bias=bias,
        pit_counts=counts,
        energy=energy,
    )
    if reference is not None:
        rc, re, rd, _, _ = run(reference, seed + 100, points)  # Markov: x_n only
        result.crps_reference, result.energy_reference, result.pit_dispersion_reference = rc, re, rd
    reasons = _verdict(disp, bias, n)
    result.reasons = reasons[:6] + ([f"... {len(reasons) - 6} more"] if len(reasons) > 6 else [])
    result.calibrated = not reasons
    return result
