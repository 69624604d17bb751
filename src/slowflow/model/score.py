"""Multi-step held-out scores of a learned map: what one-step likelihood cannot see.

A drift error of 10 % moves the one-step negative log-likelihood by ~3e-5 nats at
Delta = 0.01, far below its noise; after k steps the same error has shifted the forecast
k times as far while the noise has grown like sqrt(k). :func:`kstep_score` starts the model
at observed states x_n of held-out bursts, simulates an ensemble of ``members`` paths for
each start, and scores the ensembles at leads k = 1, 2, 4, ... up to the bursts' length
against the observed x_{n+k}:

* ``crps``: the fair ensemble CRPS per lead and component (lower is better; a proper score,
  sensitive to both the location and the spread of the k-step law);
* ``mean_sq``: the squared error of the ensemble mean per lead and component, with the
  ensemble's own sampling variance subtracted (an unbiased estimate of
  E[(E_model[x_{n+k}] - x_{n+k})^2], whose excess over the data's noise is the k-step bias).

``score`` is the CRPS summed over components and averaged over leads, each lead's CRPS
divided by that lead's observed increment spread so that long leads do not dominate;
``per_start`` holds it for each start (the same starts and random numbers for every model
scored with the same seed, so two models compare start by start) and ``score_se`` its
standard error.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError


def draw_noise(base, shape, generator: torch.Generator, device, dtype):
    """The random numbers of one draw of ``base`` for a batch ``shape`` (with the event
    dimension last): standard normals, and a uniform per row when the base is an
    empirical innovation law (:mod:`slowflow.model.innovation`), else None."""
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    v = None
    if getattr(base, "needs_uniform", False):
        v = torch.rand(shape[:-1], generator=generator, device=device, dtype=dtype)
    return z, v


def base_draw(base, z: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """A draw of ``base`` from the random numbers of :func:`draw_noise`."""
    if v is not None:
        return base.draw(z, v)
    return base.mean + base.stddev * z


def sample_with(dist, generator: torch.Generator) -> torch.Tensor:
    """One draw of a zuko NormalizingFlow with an explicit ``torch.Generator``."""
    base = dist.base
    shape = base.batch_shape + base.event_shape
    z, v = draw_noise(base, shape, generator, base.mean.device, base.mean.dtype)
    return dist.transform.inv(base_draw(base, z, v))


def leads_for(max_lead: int) -> list[int]:
    """1, 2, 4, ... below ``max_lead``, and ``max_lead`` itself.

    Examples
    --------
    >>> leads_for(100)
    [1, 2, 4, 8, 16, 32, 64, 100]
    """
    out, k = [], 1
    while k < max_lead:
        out.append(k)
        k *= 2
    return [*out, int(max_lead)]


def windows(
    x: np.ndarray,
    lengths: np.ndarray,
    max_lead: int,
    n_starts: int,
    seed: int,
    first: int = 0,
    memory: int = 0,
):
    """Random windows of held-out bursts: starts (S, d) and observations (S, max_lead, d)
    at leads 1..max_lead, never across the end of a burst. Starts lie at index >= ``first``
    (>= ``memory``); with ``memory`` K > 0 the starts are histories (S, K + 1, d) ending at
    the start. The draws depend on ``first``, not on ``memory``: maps of different memory
    scored with the same ``first`` and seed see the same starts."""
    first = max(int(first), int(memory))
    ok = np.flatnonzero(lengths - 1 - first >= max_lead)
    if ok.size == 0:
        raise ConfigError(
            f"no held-out trajectory is longer than {max_lead} steps after observation {first}"
        )
    rng = np.random.default_rng(seed)
    traj = rng.choice(ok, size=n_starts)
    start = first + rng.integers(0, lengths[traj] - max_lead - first)
    idx = start[:, None] + np.arange(-int(memory), max_lead + 1)[None, :]
    w = x[traj[:, None], idx]  # (S, K + max_lead + 1, d)
    k = int(memory)
    return (w[:, k] if k == 0 else w[:, : k + 1]), w[:, k + 1 :]


def _near(ens: torch.Tensor, obs: torch.Tensor, model) -> torch.Tensor:
    """Periodic variables of an ensemble moved by whole periods next to the observation
    (scores of angles then measure distances on the circle)."""
    periodic = list(getattr(model, "periodic", ()))
    if not periodic:
        return ens
    period = model.period_len[periodic].to(ens.dtype)
    ens = ens.clone()
    diff = ens[..., periodic] - obs[..., periodic]
    ens[..., periodic] = (
        obs[..., periodic] + torch.remainder(diff + period / 2, period) - period / 2
    )
    return ens


def _crps(ens: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """Fair ensemble CRPS, ens (M, S, d), obs (S, d) -> (S, d)."""
    m = ens.shape[0]
    err = (ens - obs).abs().mean(0)
    srt = torch.sort(ens, dim=0).values
    w = (2.0 * torch.arange(1, m + 1, device=ens.device, dtype=ens.dtype) - m - 1).view(-1, 1, 1)
    return err - (w * srt).sum(0) / (m * (m - 1))


@torch.no_grad()
def kstep_score(
    model,
    x: np.ndarray,
    lengths: np.ndarray,
    max_lead: int = 100,
    n_starts: int = 500,
    members: int = 16,
    seed: int = 0,
    first: int = 0,
) -> dict:
    """Multi-step scores of ``model`` on held-out bursts ``x`` (n, L, d) with ``lengths``.

    Starts lie at observation ``first`` or later (and late enough for the model's memory);
    models compared start by start must be scored with the same ``first`` and seed.

    Returns a dict with ``leads``, ``crps`` and ``mean_sq`` (lists per lead of lists per
    component) and the scalar ``score`` (see the module docstring).
    """
    k = int(getattr(model, "memory", 0))
    first = max(int(first), k)
    max_lead = int(min(max_lead, int(lengths.max()) - 1 - first))
    if max_lead < 1:
        raise ConfigError(
            f"held-out trajectories need at least {first + 2} observations (memory {k})"
        )
    h0, obs = windows(x, lengths, max_lead, n_starts, seed, first, k)
    x0 = h0 if k == 0 else h0[:, -1]
    leads = leads_for(max_lead)
    device = next(iter(model.buffers())).device
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=device).manual_seed(int(seed))
    cur = torch.as_tensor(np.repeat(h0[None], members, 0), dtype=torch.float32, device=device)
    flat = cur.reshape(-1, *cur.shape[2:])  # (members * S, d) or (members * S, K + 1, d)
    crps, msq = [], []
    scaled = np.zeros(x0.shape[0])  # per start: CRPS / spread, summed over components
    moved = obs - x0[:, None]
    for j in getattr(model, "periodic", ()):  # increments of angles on the circle
        period = float(model.period_len[j])
        moved[..., j] = (moved[..., j] + period / 2) % period - period / 2
    spread0 = np.abs(moved).mean(0)  # (max_lead, d)
    spread0 = np.maximum(spread0, 1e-3 * spread0.mean(0) + 1e-300)  # a lead with no spread
    wrap = getattr(model, "wrap", None)
    for lead in range(1, max_lead + 1):
        new = sample_with(model(flat), gen)
        new = wrap(new) if wrap is not None else new
        flat = new if k == 0 else torch.cat([flat[:, 1:], new.unsqueeze(1)], 1)
        if lead in leads:
            ens = new.reshape(members, -1, new.shape[-1]).double()
            o = torch.as_tensor(obs[:, lead - 1], dtype=torch.float64, device=device)
            ens = _near(ens, o, model)
            per = _crps(ens, o).cpu().numpy()  # (S, d)
            mean = ens.mean(0)
            sq = ((mean - o) ** 2 - ens.var(0, unbiased=True) / members).mean(0).cpu().numpy()
            crps.append(per.mean(0).tolist())
            msq.append(sq.tolist())
            scaled += (per / spread0[lead - 1]).sum(1) / len(leads)
    model.train(was_training)
    return {
        "leads": leads,
        "crps": crps,
        "mean_sq": msq,
        "score": float(scaled.mean()),
        "score_se": float(scaled.std(ddof=1) / np.sqrt(len(scaled))),
        "per_start": scaled,
        "n_starts": int(n_starts),
        "members": int(members),
    }
