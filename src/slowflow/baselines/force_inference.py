"""Stochastic Force Inference baseline: polynomial drift and diffusion fitted by SFI.

Stochastic Force Inference (SFI; Frishman & Ronceray, "Learning force fields from
stochastic trajectories", Phys. Rev. X 10, 021009, 2020) is the classical tool for
inferring an overdamped Langevin model from trajectories. It projects the increments on a
basis of functions: here, SFI's standard recipe with the ``stochasticforceinference``
package (import name ``SFI``):

1. ``OverdampedLangevinInference.compute_diffusion_constant(method)``: the average
   diffusion (normalizes the force moments) and SFI's localization-noise estimate Lambda;
2. ``infer_force_linear(monomials_up_to(order, rank="vector"), preset=preset)``: the Ito
   drift as a linear combination of the monomials of total degree <= ``order`` (default
   3), by linear regression of the increments on the basis;
3. ``infer_diffusion_linear(monomials_up_to(diffusion_order, rank="matrix"), M_mode)``: a
   state-dependent symmetric diffusion matrix on the monomials of degree <=
   ``diffusion_order`` (default 2; 0 keeps the constant of step 1).

Estimators (``preset``). The default ``"clean"`` is SFI's estimator for data without
measurement noise: Ito moments with the trapeze Gram (Amiri et al.) for the drift and the
weak-noise stencil ``(dX_{t+1} - dX_t)^2 / (4 dt)`` (drift cancels to O(dt^2)) for the
diffusion. ``"robust"`` is the noise-robust one (Stratonovich moments, shifted Gram,
Vestergaard-Blainey-Flyvbjerg diffusion stencil, which carries an O(F^2 dt) drift bias);
``"auto"`` is SFI's own default, ``"robust"`` when the noise estimate Tr(Lambda) > 0 and
``"clean"`` otherwise: on clean data the sign of that estimate is a coin flip (it is
-<dX_t dX_{t-1}>/2, of order F^2 dt^2), which is why it is not the default here. ``"KM"``
is plain least squares of dX/dt on the basis (rectangle Gram) with the weak-noise
diffusion.

Diffusion convention. SFI writes the SDE as ``dx = F(x) dt + sqrt(2 D(x)) dW``; slowflow's
diffusion is ``Sigma(x) = Cov[increment | x] / dt``, so ``Sigma = 2 D``.
:meth:`ForceInference.coefficients` returns ``Sigma`` (slowflow's convention), like the
Kramers-Moyal baseline.

Many short bursts. An SFI ``TrajectoryDataset`` holds an array ``(T, N, d)`` of ``N``
particles observed at the same ``T`` times; with a single-particle basis (monomials of the
particle's own coordinates) the particles are independent, identically distributed copies
of the process. slowflow's bursts are therefore passed as the ``N`` particles of one
dataset (burst ``i`` = particle ``i``, observation ``k`` = frame ``k``), so SFI forms
increments only along each burst and vectorizes over all of them. Ragged bursts (trailing
NaN padding) get a ``(T, N)`` validity mask (padding filled with 0, never read): SFI only
uses rows whose every frame (both ends of an increment, the three frames of a diffusion
stencil) is valid. A list of one dataset per burst would also be correct, but SFI loops
over datasets in Python ("no cross-dataset vectorization"): 10^4 separate small passes.

The fitted fields are polynomials; after the fit they are re-expressed exactly (least
squares on sample points, checked to round-off) on slowflow's own monomial table, so the
fitted object is plain numpy: evaluating and simulating need neither SFI nor JAX.
Rollouts use Euler-Maruyama at the data's step (optionally with substeps); a polynomial
drift can diverge outside the data's range, and such paths become non-finite rather than
raising.

Requirements: the optional extra ``pip install 'slowflow[baselines]'`` (installs
``stochasticforceinference``, which brings JAX). SFI is imported only when fitting. If JAX
has not been imported yet, fitting sets the environment variable ``JAX_PLATFORMS=cpu``
(only when it is unset), so that JAX neither probes for nor warns about accelerators; the
fit itself runs inside ``jax.enable_x64()`` (float64, scoped: JAX's global precision
setting is unchanged afterwards).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import Trajectories
from ..errors import ConfigError
from ._em import EulerMaruyama

_MISSING_SFI = (
    "force inference needs the optional package stochasticforceinference: "
    "pip install 'slowflow[baselines]'"
)
_PRESETS = ("auto", "clean", "robust", "KM", "legacy-sfi-v1.0")


def _exponents(dim: int, order: int) -> np.ndarray:
    """Exponents (F, dim) of all monomials of total degree <= order, by degree."""
    rows = [
        alpha
        for deg in range(order + 1)
        for alpha in itertools.product(range(deg + 1), repeat=dim)
        if sum(alpha) == deg
    ]
    return np.array(rows, dtype=np.int64).reshape(-1, dim)


def _features(z: np.ndarray, exps: np.ndarray) -> np.ndarray:
    """Monomials z^alpha, (n, F), for z (n, dim)."""
    out = np.ones((z.shape[0], exps.shape[0]))
    for j in range(z.shape[1]):
        p = exps[:, j]
        if p.any():
            out *= z[:, j : j + 1] ** p[None, :]
    return out


@dataclass
class ForceInference(EulerMaruyama):
    """Drift and diffusion inferred by Stochastic Force Inference, as polynomials.

    With ``z = (x - center) / scale``, the drift is ``features(z, drift_exponents) @
    drift_coef`` ((n, d)) and the diffusion ``Sigma = 2 D`` (slowflow's convention,
    ``Cov[increment]/dt``) is ``features(z, diffusion_exponents) @ diffusion_coef``
    ((n, d, d)). Build it with :func:`fit_force_inference` / :meth:`ForceInference.fit`.
    """

    center: np.ndarray
    scale: np.ndarray
    drift_exponents: np.ndarray
    drift_coef: np.ndarray
    diffusion_exponents: np.ndarray
    diffusion_coef: np.ndarray
    dt: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.center.shape[0])

    @classmethod
    def fit(
        cls,
        data: Trajectories,
        order: int = 3,
        diffusion_order: int = 2,
        preset: str = "clean",
        max_memory_gb: float = 1.0,
    ) -> ForceInference:
        """Same as :func:`fit_force_inference`."""
        return fit_force_inference(
            data,
            order=order,
            diffusion_order=diffusion_order,
            preset=preset,
            max_memory_gb=max_memory_gb,
        )

    def _z(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        return (x - self.center) / self.scale

    def drift(self, x) -> np.ndarray:
        """Ito drift (n, d) at points x (n, d)."""
        return _features(self._z(x), self.drift_exponents) @ self.drift_coef

    def diffusion(self, x) -> np.ndarray:
        """Diffusion Sigma = 2 D = Cov[increment]/dt, (n, d, d), at points x (n, d)."""
        d = self.dim
        phi = _features(self._z(x), self.diffusion_exponents)
        return (phi @ self.diffusion_coef.reshape(phi.shape[1], d * d)).reshape(-1, d, d)

    def coefficients(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Drift (n, d) and diffusion Sigma = 2 D (n, d, d) at points x (n, d)."""
        return self.drift(x), self.diffusion(x)


def _check_size(data: Trajectories, order: int, diffusion_order: int) -> None:
    """Refuse a fit SFI would not do within the available memory. SFI holds, for every
    pair, each basis function's d x d moment tensors in float64 (its ``max_memory_gb`` does
    not bound that): 10,000 bursts of d = 5 with cubic monomials reached 20 GB."""
    from ..io.limits import check_memory

    d = data.dim
    n_pairs = int(np.sum(np.maximum(data.lengths - 1, 0)))
    n_funcs = max(len(_exponents(d, int(order))), len(_exponents(d, int(diffusion_order))))
    check_memory(
        3.0 * n_pairs * n_funcs * d * d * 8,
        f"force inference on {n_pairs} pairs with {n_funcs} monomials in d={d}",
    )


def _import_sfi():
    """Import SFI (and JAX) lazily, on the CPU unless the user chose otherwise."""
    import sys

    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
        import SFI
        from SFI.bases import monomials_up_to
    except ImportError as exc:
        raise ConfigError(_MISSING_SFI) from exc
    return jax, SFI, monomials_up_to


def _project(field_values: np.ndarray, phi: np.ndarray, what: str) -> np.ndarray:
    """Coefficients c with phi @ c = field_values, checked to be exact (a polynomial)."""
    coef, *_ = np.linalg.lstsq(phi, field_values, rcond=None)
    resid = np.abs(phi @ coef - field_values).max()
    size = max(float(np.abs(field_values).max()), 1e-300)
    if not resid <= 1e-6 * size:
        raise RuntimeError(
            f"force inference: the fitted {what} is not a polynomial of the expected order "
            f"(relative residual {resid / size:.2e})"
        )
    return coef


def _check_args(data: Trajectories, order, diffusion_order, preset) -> None:
    """One-line ConfigErrors for arguments SFI cannot use."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ConfigError(f"force inference: order must be an integer >= 1, found {order!r}")
    if (
        isinstance(diffusion_order, bool)
        or not isinstance(diffusion_order, (int, np.integer))
        or diffusion_order < 0
    ):
        raise ConfigError(
            f"force inference: diffusion_order must be an integer >= 0, found {diffusion_order!r}"
        )
    if preset not in _PRESETS:
        raise ConfigError(
            f"force inference: preset must be one of {', '.join(_PRESETS)}, found {preset!r}"
        )
    if data.n_obs < 3:
        raise ConfigError("force inference needs trajectories of at least 3 observations")


def _run_sfi(data: Trajectories, valid, P, order: int, diffusion_order: int, preset, budget):
    """SFI's drift and diffusion, evaluated at the points P (n, d): (F (n, d), D (n, d, d),
    the inference object)."""
    jax, SFI, monomials_up_to = _import_sfi()
    # diffusion estimator paired with the force preset as SFI's "auto" pairs them
    d_mode = {"auto": "auto", "robust": "noisy", "legacy-sfi-v1.0": "noisy"}.get(
        preset, "WeakNoise"
    )
    d, n = data.dim, P.shape[0]
    # bursts as the N independent "particles" of one SFI dataset: X (T, N, d), mask (T, N)
    X = np.swapaxes(np.where(valid[..., None], data.x, 0.0), 0, 1)
    mask = None if valid.all() else np.ascontiguousarray(valid.T)
    with jax.enable_x64(True):
        coll = SFI.TrajectoryCollection.from_arrays(X=X, dt=float(data.dt), mask=mask)
        inf = SFI.OverdampedLangevinInference(coll, max_memory_gb=budget)
        inf.compute_diffusion_constant(method=d_mode)
        inf.infer_force_linear(monomials_up_to(order, dim=d, rank="vector"), preset=preset)
        if diffusion_order > 0:
            inf.infer_diffusion_linear(
                monomials_up_to(diffusion_order, dim=d, rank="matrix"), M_mode=d_mode
            )
        F_P = np.asarray(inf.force_inferred(P), dtype=np.float64).reshape(n, d)
        D_P = np.asarray(inf.diffusion_inferred(P), dtype=np.float64).reshape(n, d, d)
    info = {
        "lambda_trace": float(inf.Lambda_trace),
        "sfi_version": getattr(SFI, "__version__", "unknown"),
        **{k: v for k, v in inf.metadata.items() if isinstance(v, (str, int, float))},
    }
    return F_P, D_P, info


def fit_force_inference(
    data: Trajectories,
    order: int = 3,
    diffusion_order: int = 2,
    preset: str = "clean",
    max_memory_gb: float = 1.0,
) -> ForceInference:
    """Fit drift (monomials of degree <= ``order``) and diffusion (degree <=
    ``diffusion_order``) to ``data`` with SFI; see the module docstring for the recipe.

    ``preset`` selects SFI's estimators (``"clean"``, default, for data without
    measurement noise; ``"robust"``; ``"auto"``; ``"KM"``; ``"legacy-sfi-v1.0"``: see the
    module docstring); ``max_memory_gb`` is SFI's batch-memory budget.
    Raises :class:`~slowflow.errors.ConfigError` if SFI is not installed or an argument is
    invalid.
    """
    _check_args(data, order, diffusion_order, preset)
    d = data.dim
    _check_size(data, order, diffusion_order)
    valid = ~np.isnan(data.x[..., 0])  # (n_traj, n_obs); padding is whole NaN rows
    pts = data.x[valid]
    center = pts.mean(0)
    scale = pts.std(0)
    scale = np.where(scale > 0, scale, 1.0)
    # sample points for re-expressing the fitted polynomials (in the data's range)
    rng = np.random.default_rng(0)
    n_eval = min(len(pts), 2000)
    P = pts[rng.choice(len(pts), size=n_eval, replace=False)]
    F_P, D_P, sfi_info = _run_sfi(
        data, valid, P, int(order), int(diffusion_order), preset, max_memory_gb
    )
    drift_exps = _exponents(d, int(order))
    diff_exps = _exponents(d, int(diffusion_order))
    Sigma_P = 2.0 * D_P  # SFI: dx = F dt + sqrt(2D) dW; slowflow: Sigma = Cov/dt = 2D
    zP = (P - center) / scale
    drift_coef = _project(F_P, _features(zP, drift_exps), "drift")
    diff_coef = _project(
        Sigma_P.reshape(n_eval, d * d), _features(zP, diff_exps), "diffusion"
    ).reshape(-1, d, d)
    info = {"order": int(order), "diffusion_order": int(diffusion_order), **sfi_info}
    return ForceInference(
        center=center,
        scale=scale,
        drift_exponents=drift_exps,
        drift_coef=drift_coef,
        diffusion_exponents=diff_exps,
        diffusion_coef=diff_coef,
        dt=float(data.dt),
        info=info,
    )
