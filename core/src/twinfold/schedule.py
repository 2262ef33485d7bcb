"""Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov & Hutter 2017)
to ``final_lr_ratio`` x the peak. Groups with ``fixed_lr`` keep their peak rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from twinfold.config.models import ScheduleConfig


@dataclass(frozen=True)
class LRSchedule:
    total_steps: int
    warmup_steps: int
    final_lr_ratio: float

    def factor(self, step: int) -> float:
        """Multiplier of the peak lr at 0-based ``step``: (step+1)/warmup during warm-up,
        then final + (1 - final)(1 + cos(pi t))/2 with t from 0 to 1 over the rest."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        t = 1.0 if span <= 1 else min(max((step - self.warmup_steps) / (span - 1), 0.0), 1.0)
        return self.final_lr_ratio + (1 - self.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] if group.get("fixed_lr") else group["base_lr"] * factor
        return factor

    @classmethod
    def from_config(
        cls, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int, max_steps: int | None
    ) -> LRSchedule:
        total = epochs * steps_per_epoch
        if max_steps is not None:
            total = min(total, max_steps)
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
        return cls(total, warmup, cfg.final_lr_ratio)
