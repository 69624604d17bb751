"""Mini-batches of pairs (or windows): held on the device, or read from disk piece by piece."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .distributed import Dist


class MemoryBatches:
    """Pairs held on the training device; each epoch a fresh permutation.

    With ``world`` processes every global batch of ``bs`` pairs is cut into equal shares,
    so the gradient DDP averages is the one-process gradient of the same batch.
    """

    def __init__(self, x0: np.ndarray, x1: np.ndarray, device) -> None:
        self.tx0 = torch.as_tensor(x0, dtype=torch.float32, device=device)
        self.tx1 = torch.as_tensor(x1, dtype=torch.float32, device=device)
        self.device = device

    def epoch(self, epoch: int, steps: int, bs: int, gen: torch.Generator, dctx: Dist):
        perm = torch.randperm(self.tx0.shape[0], generator=gen).to(self.device)
        share = bs // dctx.world
        for b in range(steps):
            idx = perm[b * bs + dctx.rank * share : b * bs + (dctx.rank + 1) * share]
            yield self.tx0[idx], self.tx1[idx]


class StreamBatches:
    """Pairs read from a memory-mapped file piece by piece.

    Each epoch visits the pieces in a new random order (seeded by seed and epoch, so a
    resumed run reads what the uninterrupted one would); ``buffer`` pieces at a time are
    loaded (the next group in a background thread while the current one trains), mixed,
    and cut into batches. Memory: about two groups of pieces. With several processes each
    takes every ``world``-th piece of the order; all take the same number of steps.
    """

    def __init__(self, store, pieces, seed: int, device, buffer: int, read, memory: int) -> None:
        self.store, self.pieces, self.seed = store, pieces, int(seed)
        self.device, self.buffer = device, max(1, int(buffer))
        self.read = read  # piece -> (conditions, targets)
        d = store.dim
        self.cond_shape = (d,) if memory == 0 else (memory + 1, d)

    def _load(self, idx) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.read(self.pieces[i]) for i in idx]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def epoch(self, epoch: int, steps: int, bs: int, gen, dctx: Dist):
        from concurrent.futures import ThreadPoolExecutor

        share = bs // dctx.world
        if len(self.pieces) < dctx.world:
            raise ConfigError(
                f"{len(self.pieces)} data piece(s) for {dctx.world} processes; lower "
                "block_pairs so that every process gets at least one"
            )
        produced, rep = 0, 0
        carry = (np.empty((0, *self.cond_shape)), np.empty((0, self.store.dim)))
        with ThreadPoolExecutor(1) as pool:
            while produced < steps:
                rng = np.random.default_rng([self.seed, epoch, rep])
                order = rng.permutation(len(self.pieces))[dctx.rank :: dctx.world]
                groups = [order[g : g + self.buffer] for g in range(0, len(order), self.buffer)]
                pending = pool.submit(self._load, groups[0])
                got_any = False
                for gi in range(len(groups)):
                    x0, x1 = pending.result()
                    if gi + 1 < len(groups):
                        pending = pool.submit(self._load, groups[gi + 1])
                    got_any = got_any or x0.shape[0] > 0
                    x0 = np.concatenate([carry[0], x0])
                    x1 = np.concatenate([carry[1], x1])
                    perm = rng.permutation(x0.shape[0])
                    nb = x0.shape[0] // share
                    use = perm[: nb * share]
                    t0 = torch.as_tensor(x0[use], dtype=torch.float32).to(self.device)
                    t1 = torch.as_tensor(x1[use], dtype=torch.float32).to(self.device)
                    carry = (x0[perm[nb * share :]], x1[perm[nb * share :]])
                    for b in range(nb):
                        yield t0[b * share : (b + 1) * share], t1[b * share : (b + 1) * share]
                        produced += 1
                        if produced >= steps:
                            return
                if not got_any:
                    raise DataError(f"{self.store.path}: no training pairs for this process")
                rep += 1
