"""The learned one-step map as a conditional distribution (the zuko contract).

``model(x_n)`` returns a :class:`torch.distributions.Distribution` over x_{n+1}:
training minimizes ``-model(x_n).log_prob(x_next).mean()`` and rollouts call
``model(x_n).sample()``. The flows come from zuko; this module adds the state-dependent
location/scale stage of the ``increment`` parametrization and the standardization buffers.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import zuko
from torch import Tensor, nn
from torch.distributions import Distribution, Transform, constraints

from ..errors import ConfigError
from .basis import exponents, features_torch
from .config import ModelConfig
from .covariance import cholesky_torch
from .innovation import EmpiricalInnovation

_ACT = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}
# Bounds on the log of the diagonal of the conditional scale, in units of the global
# increment std: the kernels may be up to ~e^9 narrower or e^4 wider than average.
_LOG_SCALE_MIN, _LOG_SCALE_MAX = -9.0, 4.0


def _soft_bound(a: Tensor, lo: float, hi: float) -> Tensor:
    mid, half = 0.5 * (hi + lo), 0.5 * (hi - lo)
    return mid + half * torch.tanh((a - mid) / half)


class TriangularAffine(Transform):
    """u -> y = loc + L u with L lower triangular with a positive diagonal (event dim 1)."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: Tensor, tril: Tensor | None, diag: Tensor) -> None:
        super().__init__(cache_size=0)
        self.loc, self.tril, self.diag = loc, tril, diag

    def _call(self, u: Tensor) -> Tensor:
        if self.tril is None:
            return self.loc + self.diag * u
        return self.loc + (self.tril @ u.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, y: Tensor) -> Tensor:
        if self.tril is None:
            return (y - self.loc) / self.diag
        r = (y - self.loc).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.tril, r, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, u: Tensor, y: Tensor) -> Tensor:
        return self.diag.log().sum(-1).expand(u.shape[:-1])


def _mlp(n_in: int, n_out: int, hidden: tuple[int, ...], act: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(n_in, h), _ACT[act]()]
        n_in = h
    last = nn.Linear(n_in, n_out)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    layers.append(last)
    return nn.Sequential(*layers)


def window_coords(h, memory: int, periodic=(), lo=None, period=None):
    """Coordinates of conditions: h (..., d) for memory 0, windows (..., K + 1, d)
    (oldest first) for memory K. They are x_n, with each periodic variable j (indices
    ``periodic``, ranges [lo_j, lo_j + period_j)) replaced by the cosine and sine of its
    phase, then the last K increments x_n - x_{n-1}, ..., x_{n-K+1} - x_{n-K} (periodic ones
    taken on the circle): d + len(periodic) + K d values. Numpy arrays or torch tensors."""
    torch_in = isinstance(h, torch.Tensor)
    lib = torch if torch_in else np
    x = h if memory == 0 else h[..., -1, :]
    if not periodic and memory == 0:
        return x
    per = set(periodic)
    parts = []
    for j in range(x.shape[-1]):
        v = x[..., j : j + 1]
        if j in per:
            phase = 2.0 * math.pi * (v - lo[j]) / period[j]
            parts += [lib.cos(phase), lib.sin(phase)]
        else:
            parts.append(v)
    if memory:
        inc = h[..., 1:, :] - h[..., :-1, :]  # (..., K, d), oldest increment first
        if per:
            cols = [
                (inc[..., j : j + 1] + 0.5 * period[j]) % period[j] - 0.5 * period[j]
                if j in per
                else inc[..., j : j + 1]
                for j in range(x.shape[-1])
            ]
            inc = lib.cat(cols, -1) if torch_in else np.concatenate(cols, -1)
        parts += [inc[..., -1 - i, :] for i in range(memory)]
    return lib.cat(parts, -1) if torch_in else np.concatenate(parts, -1)


def _zuko_flow(cfg: ModelConfig, dim: int, context: int) -> zuko.flows.Flow | None:
    kw = dict(hidden_features=cfg.hidden, activation=_ACT[cfg.activation])
    if cfg.flow == "gaussian":
        return None
    if cfg.flow == "maf":
        return zuko.flows.MAF(dim, context, transforms=cfg.transforms, **kw)
    if cfg.flow == "nsf":
        return zuko.flows.NSF(dim, context, transforms=cfg.transforms, bins=cfg.bins, **kw)
    # coupling: spline coupling layers with alternating masks; each layer is inverted in a
    # single pass (d = 1 reduces to element-wise splines conditioned on x_n).
    spline = partial(zuko.transforms.MonotonicRQSTransform, slope=1e-3)
    shapes = [(cfg.bins,), (cfg.bins,), (cfg.bins - 1,)]
    layers = []
    for i in range(cfg.transforms):
        mask = (torch.arange(dim) % 2 == (i % 2)) if dim > 1 else None
        layers.append(
            zuko.flows.GeneralCouplingTransform(
                dim, context, mask=mask, univariate=spline, shapes=shapes, **kw
            )
        )
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(dim), torch.ones(dim), buffer=True
    )
    return zuko.flows.Flow(layers, base)


class FlowMap(nn.Module):
    """Conditional distribution p(x_{n+1} | history) of dimension ``dim``.

    The condition is x_n (shape (..., d)) for a one-step map, the window
    (x_{n-K}, ..., x_n) (shape (..., K + 1, d), oldest first) for a map with
    ``memory`` K > 0. Buffers ``x_mean``, ``x_std`` standardize x_n; ``d_mean``, ``d_std``
    are the training increments' mean and std (they standardize the window's increments
    too). ``dt`` is the observation step Delta the map was trained at. A map with memory
    keeps ``history_bank``, training windows from which rollouts from a single start draw
    their past (:func:`slowflow.rollout.draw_histories`).

    Attributes
    ----------
    memory : int
        K, the past observations the map needs besides x_n.
    history : dict
        The training record (``fit`` fills it: epochs, NLL, the basis fits, k-step scores).
    meta : dict
        Provenance: version, preset, training settings, the data's metadata and names.
    """

    history: dict
    meta: dict

    def __init__(self, dim: int, config: ModelConfig, dt: float = 1.0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.config = config
        self.memory = int(config.memory)
        self.periodic = tuple(config.periodic)
        if any(i >= self.dim for i in self.periodic):
            raise ConfigError(f"periodic indices {list(self.periodic)} exceed d={self.dim}")
        # a closed-form map with memory carries it in its noise (residual_ar): its drift
        # and covariance see x_n alone, its flow also the window's standardized residuals
        self.noise_memory = self.memory > 0 and config.uses_basis_scale
        if self.noise_memory:
            self.n_coords = self.dim + len(self.periodic)
            self.n_context = self.n_coords + self.memory * self.dim
        else:
            self.n_coords = self.dim * (self.memory + 1) + len(self.periodic)
            self.n_context = self.n_coords
        self.history, self.meta = {}, {}
        self.register_buffer("dt", torch.tensor(float(dt), dtype=torch.float64))
        self.register_buffer("x_mean", torch.zeros(dim))
        self.register_buffer("x_std", torch.ones(dim))
        self.register_buffer("d_mean", torch.zeros(dim))
        self.register_buffer("d_std", torch.ones(dim))
        # range of the training data, to report rollouts that leave it (set by fit)
        self.register_buffer("x_lo", torch.full((dim,), -math.inf))
        self.register_buffer("x_hi", torch.full((dim,), math.inf))
        if self.periodic:  # the periodic variables' ranges [lo, lo + period)
            kw = {"dtype": torch.float64}  # the ranges exactly as declared
            self.register_buffer("period_lo", torch.full((dim,), -math.pi, **kw))
            self.register_buffer("period_len", torch.full((dim,), 2 * math.pi, **kw))
        self.flow = _zuko_flow(config, self.dim, self.n_context)
        self.affine = None
        if config.uses_basis:
            self._init_basis(config)
        if config.uses_basis_scale:
            self._init_cov(config)
        elif config.parametrization == "increment":
            n_out = self.dim * (self.dim + 1) // 2 + (0 if config.uses_basis else self.dim)
            self.affine = _mlp(self.n_coords, n_out, config.affine_hidden, config.activation)
        if self.memory:
            self.register_buffer("history_bank", torch.zeros(0, self.memory + 1, self.dim))
        if self.noise_memory:  # xi_{n+1} = sum_k A_k xi_{n+1-k} + C eta (A: none until fitted)
            self.register_buffer("ar_coef", torch.zeros(self.memory, self.dim, self.dim))
            self.register_buffer("ar_chol", torch.eye(self.dim))
        if self.flow is None and config.parametrization == "increment":
            # the innovation's empirical law (none: N(0, I)), see set_innovation_law
            self.register_buffer("innov_centers", torch.zeros(0, self.n_coords))
            self.register_buffer("innov_bank", torch.zeros(0, 0, self.dim))
            self.register_buffer("innov_count", torch.zeros(0, dtype=torch.int64))
            self.register_buffer("innov_bw", torch.zeros(0))
        if self.flow is not None and config.parametrization == "increment":
            _identity_init(self.flow)
        self.register_buffer("_zeros", torch.zeros(dim))
        self.gaussian_only = False  # bypass the flow (used to warm up the affine stage)

    def _init_basis(self, config: ModelConfig) -> None:
        """Buffers of the closed-form drift a(x) = coef^T phi(x), zero until
        :meth:`set_drift` stores a fit (``basis_degree`` None: a constant, until then)."""
        expo = torch.as_tensor(exponents(self.n_coords, int(config.basis_degree or 0)))
        p = expo.shape[0]
        self.register_buffer("basis_expo", expo)
        self.register_buffer("basis_lo", torch.full((self.n_coords,), -1.0))
        self.register_buffer("basis_hi", torch.full((self.n_coords,), 1.0))
        self.register_buffer("basis_coef", torch.zeros(p, self.dim))
        # per component, the covariance of its coefficients (the estimator's error bars)
        self.register_buffer("basis_cov", torch.zeros(self.dim, p, p, dtype=torch.float64))

    def _init_cov(self, config: ModelConfig) -> None:
        """Buffers of the closed-form covariance Sigma(x) = sym(coef^T phi(x)) per unit
        time, the identity until :meth:`set_covariance` stores a fit."""
        d, p = self.dim, self.n_coords
        expo = torch.as_tensor(exponents(p, int(config.scale_degree or 0)))
        coef = torch.zeros(expo.shape[0], d * (d + 1) // 2)
        rows, cols = torch.triu_indices(d, d)
        coef[0] = (rows == cols).float()  # the constant Legendre feature is 1
        self.register_buffer("cov_expo", expo)
        self.register_buffer("cov_lo", torch.full((p,), -1.0))
        self.register_buffer("cov_hi", torch.full((p,), 1.0))
        self.register_buffer("cov_coef", coef)
        self.register_buffer("cov_scale", torch.ones(d))

    def set_covariance(self, fit) -> None:
        """Store a fitted :class:`~slowflow.model.covariance.CovarianceFit` (of any degree:
        the buffers and ``config.scale_degree`` follow it)."""
        if not self.config.uses_basis_scale:
            raise ConfigError("this model's scale is a network, not a closed-form covariance")
        device = self.x_mean.device
        if int(fit.degree) != self.config.scale_degree:
            from dataclasses import replace

            self.config = replace(self.config, scale_degree=int(fit.degree))
            self._init_cov(self.config)
        for name, value in (
            ("cov_lo", fit.lo),
            ("cov_hi", fit.hi),
            ("cov_coef", fit.coef),
            ("cov_scale", fit.scale),
        ):
            setattr(self, name, torch.as_tensor(value, dtype=torch.float32, device=device))
        self.cov_expo = self.cov_expo.to(device)

    def basis_covariance(self, z: Tensor) -> Tensor:
        """The closed-form Sigma (n, d, d) per unit time at coordinates z (n, p) (x itself
        for a one-step map), projected as in the map."""
        q = features_torch(z, self.cov_lo, self.cov_hi, self.cov_expo) @ self.cov_coef
        chol = cholesky_torch(q, self.cov_scale, self.dim)
        return chol @ chol.transpose(-1, -2)

    def set_drift(self, fit) -> None:
        """Store a fitted :class:`~slowflow.model.basis.DriftFit` (of any degree: the
        buffers and ``config.basis_degree`` follow it)."""
        if not self.config.uses_basis:
            raise ConfigError("this model's drift is a network, not a basis")
        device = self.basis_coef.device
        if int(fit.degree) != self.config.basis_degree:
            from dataclasses import replace

            self.config = replace(self.config, basis_degree=int(fit.degree))
            self._init_basis(self.config)
        for name, value in (("basis_lo", fit.lo), ("basis_hi", fit.hi), ("basis_coef", fit.coef)):
            setattr(self, name, torch.as_tensor(value, dtype=torch.float32, device=device))
        self.basis_expo = self.basis_expo.to(device)
        self.basis_cov = torch.as_tensor(fit.component_cov(), dtype=torch.float64, device=device)

    def set_memory_ar(self, fit) -> None:
        """Store a fitted :class:`~slowflow.model.residual_ar.ARFit` (its K must be the
        map's memory)."""
        if not self.noise_memory or fit.memory != self.memory:
            raise ConfigError(
                f"an autoregression of order {fit.memory} needs a closed-form map with "
                f"memory {fit.memory} (this one: memory {self.memory})"
            )
        device = self.ar_coef.device
        self.ar_coef = torch.as_tensor(fit.coef, dtype=torch.float32, device=device)
        self.ar_chol = torch.as_tensor(fit.chol, dtype=torch.float32, device=device)

    def _basis_chol(self, z: Tensor) -> Tensor:
        """Lower Cholesky factors of Delta Sigma at coordinates z (..., p)."""
        q = features_torch(z, self.cov_lo, self.cov_hi, self.cov_expo) @ self.cov_coef
        dt = self.dt.to(z.dtype)
        return cholesky_torch(q * dt, self.cov_scale * dt.sqrt(), self.dim)

    def residuals(self, h: Tensor) -> Tensor:
        """The standardized residuals (..., K, d) of the K steps of windows h (..., K + 1,
        d), most recent first: xi_m = L(x_{m-1})^-1 (x_m - x_{m-1} - Delta a(x_{m-1}))."""
        start, end = h[..., :-1, :], h[..., 1:, :]
        inc = end - start
        if self.periodic:
            idx = list(self.periodic)
            period = self.period_len[idx].to(h.dtype)
            inc[..., idx] = torch.remainder(inc[..., idx] + 0.5 * period, period) - 0.5 * period
        z = self.coords(start, memory=0)
        r = inc - self.dt.to(h.dtype) * self.basis_drift(z)
        chol = self._basis_chol(z)
        xi = torch.linalg.solve_triangular(chol, r.unsqueeze(-1), upper=False).squeeze(-1)
        return xi.flip(-2)

    def basis_drift_se(self, z) -> torch.Tensor:
        """Standard error (n, d) of the closed-form drift at coordinates z (n, p), float64;
        z of shape (n, m, p): of the drift averaged over the m windows of each point."""
        z = torch.as_tensor(z, dtype=torch.float64, device=self.basis_cov.device)
        phi = features_torch(z, self.basis_lo.double(), self.basis_hi.double(), self.basis_expo)
        if phi.dim() == 3:
            phi = phi.mean(1)
        var = torch.einsum("np,ipq,nq->ni", phi, self.basis_cov, phi)
        return var.clamp_min(0.0).sqrt()

    def basis_drift(self, z: Tensor) -> Tensor:
        """The closed-form drift (..., d) at coordinates z (..., p) (x for a one-step map)."""
        phi = features_torch(z, self.basis_lo, self.basis_hi, self.basis_expo)
        return phi @ self.basis_coef

    def split(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(x_n, coordinates) of a condition: h (..., d) for a one-step map, a window
        (..., K + 1, d) with memory K; the shape is checked."""
        d, k = self.dim, self.memory
        if k == 0:
            if h.shape[-1:] != (d,):
                raise ConfigError(f"the condition must have shape (..., {d}), got {tuple(h.shape)}")
            return h, self.coords(h)
        if h.dim() < 2 or h.shape[-2:] != (k + 1, d):
            raise ConfigError(
                f"this map has memory {k}: its condition is a window of shape (..., {k + 1}, "
                f"{d}) (x_(n-{k}), ..., x_n), got {tuple(h.shape)}"
            )
        if self.noise_memory:
            return h[..., -1, :], self.coords(h[..., -1, :], memory=0)
        return h[..., -1, :], self.coords(h)

    def drift_coords(self, h):
        """The coordinates the basis drift sees for conditions h (numpy or torch): the
        window's for a map with memory in its drift, x_n's for one with memory in its
        noise (and for a one-step map)."""
        if self.noise_memory:
            return self.coords(h[..., -1, :], memory=0)
        return self.coords(h)

    def coords(self, h, memory: int | None = None):
        """:func:`window_coords` of conditions with this map's memory (or ``memory``) and
        periodic ranges."""
        memory = self.memory if memory is None else memory
        if not self.periodic:
            return window_coords(h, memory)
        lo, period = self.period_lo, self.period_len
        if not isinstance(h, torch.Tensor):
            lo, period = lo.cpu().double().numpy(), period.cpu().double().numpy()
        return window_coords(h, memory, self.periodic, lo, period)

    def set_periods(self, ranges) -> None:
        """Store the ranges [(lo, hi) or None per variable] of the periodic variables."""
        for j in self.periodic:
            if ranges[j] is None:
                raise ConfigError(f"variable {j} is periodic in the config but has no range")
            self.period_lo[j] = float(ranges[j][0])
            self.period_len[j] = float(ranges[j][1] - ranges[j][0])

    def wrap(self, x: Tensor) -> Tensor:
        """States (..., d) with the periodic variables mapped into their ranges."""
        if not self.periodic:
            return x
        idx = list(self.periodic)
        out = x.clone()
        lo, period = self.period_lo[idx].to(x.dtype), self.period_len[idx].to(x.dtype)
        out[..., idx] = lo + torch.remainder(x[..., idx] - lo, period)
        return out

    def set_statistics(self, x_mean, x_std, d_mean, d_std) -> None:
        """Store standardization statistics (tensors or arrays of shape (dim,))."""
        for name, value in (
            ("x_mean", x_mean),
            ("x_std", x_std),
            ("d_mean", d_mean),
            ("d_std", d_std),
        ):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    def context(self, z: Tensor) -> Tensor:
        """The networks' input: the coordinates z, standardized (x_n by the data's mean and
        std, the window's increments by the increments' mean and std)."""
        if not self.config.standardize:
            return z
        k = 0 if self.noise_memory else self.memory
        if self.periodic:  # cos and sin are standardized as they are
            src = [j for j in range(self.dim) for _ in range(2 if j in self.periodic else 1)]
            trig = torch.tensor(
                [j in self.periodic for j in src], device=z.device, dtype=torch.bool
            )
            src_t = torch.tensor(src, device=z.device)
            xm = torch.where(trig, torch.zeros((), device=z.device), self.x_mean[src_t])
            xs = torch.where(trig, torch.ones((), device=z.device), self.x_std[src_t])
        else:
            xm, xs = self.x_mean, self.x_std
        mean = torch.cat([xm, self.d_mean.repeat(k)]) if k else xm
        std = torch.cat([xs, self.d_std.repeat(k)]) if k else xs
        return (z - mean) / std

    def _affine_transform(
        self, x: Tensor, z: Tensor, c: Tensor, xi: Tensor | None = None
    ) -> TriangularAffine:
        d = self.dim
        if self.config.uses_basis_scale:
            loc = x + self.dt.to(x.dtype) * self.basis_drift(z)
            chol = self._basis_chol(z)
            if xi is not None:  # memory in the noise: L (sum_k A_k xi_k + C eta)
                mean = torch.einsum("kij,...kj->...i", self.ar_coef, xi)
                loc = loc + (chol @ mean.unsqueeze(-1)).squeeze(-1)
                chol = chol @ self.ar_chol
            if d == 1:
                return TriangularAffine(loc, None, chol[..., 0])
            return TriangularAffine(loc, chol, torch.diagonal(chol, dim1=-2, dim2=-1))
        out = self.affine(c)
        if self.config.uses_basis:
            rest = out
            loc = x + self.dt.to(x.dtype) * self.basis_drift(z)
        else:
            m, rest = out[..., :d], out[..., d:]
            loc = x + self.d_mean + self.d_std * m
        log_diag = _soft_bound(rest[..., :d], _LOG_SCALE_MIN, _LOG_SCALE_MAX)
        diag = log_diag.exp()
        if d == 1:
            return TriangularAffine(loc, None, self.d_std * diag)
        off = rest[..., d:]
        tril = torch.diag_embed(diag)
        rows, cols = torch.tril_indices(d, d, offset=-1, device=x.device)
        tril = _fill_offdiag(tril, off, rows, cols)
        tril = self.d_std.unsqueeze(-1) * tril
        return TriangularAffine(loc, tril, self.d_std * diag)

    @torch.no_grad()
    def conditional_variance(self, x, batch: int = 65536):
        """Diagonal (n, d) of the affine stage's conditional covariance L L^T at conditions
        x ((n, d), or windows (n, K + 1, d)), as a float64 array: the one-step law's variance
        for the Gaussian preset, the scale that the flow then shapes for the others
        (increment parametrization)."""
        if self.config.parametrization != "increment":
            raise ConfigError("conditional_variance needs the increment parametrization")
        x = np.asarray(x)
        device = self.x_mean.device
        out = []
        for i in range(0, x.shape[0], batch):
            ht = torch.as_tensor(x[i : i + batch], dtype=torch.float32, device=device)
            t = self._parts(ht)[2]
            var = t.diag**2 if t.tril is None else (t.tril**2).sum(-1)
            out.append(var.double().cpu().numpy())
        return np.concatenate(out)

    @property
    def empirical_innovation(self) -> bool:
        """True when the innovation's law is the empirical one (not N(0, I))."""
        count = getattr(self, "innov_count", None)
        return count is not None and count.numel() > 0

    def set_innovation_law(self, law) -> None:
        """Store an :class:`~slowflow.model.innovation.InnovationLaw` (None: N(0, I))."""
        if not hasattr(self, "innov_count"):
            raise ConfigError("only the Gaussian presets take an empirical innovation law")
        dev = self.x_mean.device
        if law is None:
            self.innov_centers = torch.zeros(0, self.n_coords, device=dev)
            self.innov_bank = torch.zeros(0, 0, self.dim, device=dev)
            self.innov_count = torch.zeros(0, dtype=torch.int64, device=dev)
            self.innov_bw = torch.zeros(0, device=dev)
            return
        self.innov_centers = torch.as_tensor(law.centers, dtype=torch.float32, device=dev)
        self.innov_bank = torch.as_tensor(law.bank, dtype=torch.float32, device=dev)
        self.innov_count = torch.as_tensor(law.count, dtype=torch.int64, device=dev)
        self.innov_bw = torch.as_tensor(law.bandwidth, dtype=torch.float32, device=dev)

    @torch.no_grad()
    def innovations(self, h: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """(standardized coordinates of x_n, innovations u) of pairs (h, x1) under the
        affine stage: x1 = loc + L u (increment parametrization)."""
        _, c, outer = self._parts(h)
        return c[..., : self.n_coords], outer.inv(x1)

    def forward(self, h: Tensor) -> Distribution:
        """The conditional law of x_{n+1} given x_n (h of shape (..., d)) or, with memory K,
        given the window h (..., K + 1, d); batch shape ``h.shape[:-1]`` resp.
        ``h.shape[:-2]``."""
        if self.config.parametrization == "direct":
            return self.flow(self.context(self.split(h)[1]))
        x, c, outer = self._parts(h)
        if self.flow is None and self.empirical_innovation:
            base = EmpiricalInnovation(
                self.innov_centers,
                self.innov_bank,
                self.innov_count,
                self.innov_bw,
                c[..., : self.innov_centers.shape[-1]],
            )
            return zuko.distributions.NormalizingFlow(outer.inv, base)
        if self.flow is None or self.gaussian_only:
            base = zuko.distributions.DiagNormal(self._zeros, torch.ones_like(self._zeros))
            base = base.expand(x.shape[:-1])
            return zuko.distributions.NormalizingFlow(outer.inv, base)
        inner = self.flow(c)
        transform = zuko.transforms.ComposedTransform(outer.inv, inner.transform)
        return zuko.distributions.NormalizingFlow(transform, inner.base)

    def _parts(self, h: Tensor) -> tuple[Tensor, Tensor, TriangularAffine]:
        """(x_n, the networks' input, the affine stage) of conditions h (increment
        parametrization)."""
        x, z = self.split(h)
        c = self.context(z)
        if not self.noise_memory:
            return x, c, self._affine_transform(x, z, c)
        xi = self.residuals(h)
        c = torch.cat([c, xi.flatten(-2)], -1)
        return x, c, self._affine_transform(x, z, c, xi)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def set_history_bank(self, windows) -> None:
        """Store training windows (m, K + 1, d) to draw rollout histories from."""
        w = torch.as_tensor(np.asarray(windows), dtype=torch.float32, device=self.x_mean.device)
        if w.dim() != 3 or w.shape[1:] != (self.memory + 1, self.dim):
            raise ConfigError(f"history windows must have shape (m, {self.memory + 1}, {self.dim})")
        self.history_bank = w

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the banks' sizes are the data's, not the config's: take the stored ones
        key = prefix + "history_bank"
        if self.memory and key in state_dict:
            w = state_dict[key]
            if w.dim() == 3 and tuple(w.shape[1:]) == (self.memory + 1, self.dim):
                self.history_bank = torch.zeros_like(w, device=self.x_mean.device)
        if hasattr(self, "innov_count"):
            self._size_innovation(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _size_innovation(self, state_dict, prefix) -> None:
        """The innovation buffers sized as stored (files written before the empirical
        law have none: N(0, I))."""
        names = ("innov_centers", "innov_bank", "innov_count", "innov_bw")
        if not any(prefix + n in state_dict for n in names):
            for n in names:
                state_dict[prefix + n] = getattr(self, n)
            return
        trailing = {"innov_centers": (self.n_coords,), "innov_bank": (self.dim,)}
        for n in names:
            stored = state_dict.get(prefix + n)
            mine = getattr(self, n)
            tail = trailing.get(n, ())
            if stored is None or stored.dim() != mine.dim():
                continue  # load_state_dict reports the mismatch
            if tail and tuple(stored.shape[-len(tail) :]) != tail:
                continue
            setattr(self, n, torch.zeros_like(stored, dtype=mine.dtype, device=mine.device))


def _identity_init(flow: nn.Module) -> None:
    """Zero the output layer of every conditioner so that the flow starts as the identity
    (zuko's affine and spline transforms are the identity at zero parameters): the model
    then starts as the conditional Gaussian of its affine stage."""
    for module in flow.modules():
        hyper = getattr(module, "hyper", None)
        linears = (
            [m for m in hyper.modules() if isinstance(m, (nn.Linear, zuko.nn.Linear))]
            if isinstance(hyper, nn.Module)
            else []
        )
        if not linears:
            continue
        last = linears[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)


def _fill_offdiag(tril: Tensor, off: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    tril = tril.clone()
    tril[..., rows, cols] = off
    return tril


def build_model(
    config: ModelConfig, dim: int, dt: float = 1.0, drift_fit=None, cov_fit=None, ar_fit=None
) -> FlowMap:
    """A fresh model for ``dim`` slow variables at observation step ``dt``; with
    ``drift="basis"`` the fitted drift ``drift_fit`` (a
    :class:`~slowflow.model.basis.DriftFit`) sets the basis degree and coefficients, with
    ``scale="basis"`` the fitted ``cov_fit`` (a
    :class:`~slowflow.model.covariance.CovarianceFit`) the covariance."""
    model = FlowMap(dim, config, dt)
    if config.uses_basis and drift_fit is not None:
        model.set_drift(drift_fit)
    if config.uses_basis_scale and cov_fit is not None:
        model.set_covariance(cov_fit)
    if ar_fit is not None:
        model.set_memory_ar(ar_fit)
    return model


def gaussian_nll_floor(d_std: Tensor) -> float:
    """log of the global increment std: a reference point for reading NLL values."""
    return float(torch.log(d_std).sum() + 0.5 * d_std.numel() * math.log(2 * math.pi * math.e))
