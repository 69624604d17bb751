"""The learning-rate schedule: a multiplier of the optimizer step and the elapsed time."""

from __future__ import annotations

import math

from .config import TrainConfig


class Schedule:
    """Learning-rate multiplier as a function of the optimizer step (and elapsed time).

    With a wall-clock budget (``max_minutes``) the cosine schedule, warm-up included, runs
    on whichever is further along, the steps or the budget: ``--epochs 1e9 --max-minutes 1``
    warms up over the first 2 % of the minute, not of 10^9 epochs.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int) -> None:
        self.cfg = cfg
        self.spe = max(1, steps_per_epoch)
        self.total = cfg.epochs * self.spe
        self.warmup = max(1, int(0.02 * self.total))

    def __call__(self, step: int, elapsed: float = 0.0) -> float:
        return self._value(step, elapsed)

    def warmed_up(self, step: int, elapsed: float) -> bool:
        """Whether the learning rate has reached its peak after ``step`` steps and
        ``elapsed`` seconds (always true without a warm-up)."""
        if self.cfg.schedule != "cosine" or step >= self.warmup:
            return True
        budget = self.cfg.max_minutes
        return budget is not None and elapsed >= 0.02 * 60.0 * budget

    def _value(self, step: int, elapsed: float) -> float:
        cfg = self.cfg
        if cfg.schedule == "constant":
            return 1.0
        if cfg.schedule == "cosine":
            time_frac = 0.0
            if cfg.max_minutes is not None:
                time_frac = min(1.0, elapsed / (60.0 * cfg.max_minutes))
            if step < self.warmup and time_frac < 0.02:
                return max((step + 1) / self.warmup, time_frac / 0.02)
            frac = min(1.0, max(0, step - self.warmup) / max(1, self.total - self.warmup))
            if cfg.max_minutes is not None:
                frac = max(frac, (time_frac - 0.02) / 0.98)
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac))
        epoch = step // self.spe  # step_cyclic steps once per epoch, like the authors' code
        seg, it = divmod(epoch, cfg.cyclic_segment)
        scale = 0.5 / (seg + 1)
        base, top = 1.0 / 3.0, 1.0
        cycle = math.floor(1 + it / (2 * cfg.cyclic_step))
        x = abs(it / cfg.cyclic_step - 2 * cycle + 1)
        return scale * (base + (top - base) * max(0.0, 1 - x) * cfg.cyclic_gamma**it)
