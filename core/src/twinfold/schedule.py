"""Learning-rate schedule: linear warm-up (Goyal et al. 2017), then cosine decay without
restarts (Loshchilov & Hutter 2017, Eq. 5) from the peak to ``final_lr_ratio`` x peak, as
in BYOL (Grill et al. 2020) and Barlow Twins (Zbontar et al. 2021). Groups with
``fixed_lr`` keep their peak rate throughout (SimSiam, Chen & He 2021, Sec. 4.4).

Weight decay: constant, or a cosine from ``weight_decay`` to ``weight_decay_end`` over
the whole run (DINO, Caron et al. 2021, Sec. 4.1: 0.04 to 0.4 for ViTs)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from twinfold.config.models import OptimizerConfig, ScheduleConfig

__all__ = ["LRSchedule", "WeightDecaySchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """Multiplier of each group's peak ``base_lr`` at 0-based optimizer step ``step``.

    - warm-up, ``step < warmup_steps``: ``(step + 1) / warmup_steps``, so the first step
      is not wasted at 0 and step ``warmup_steps - 1`` reaches the peak;
    - then ``final + (1 - final) * (1 + cos(pi * t)) / 2`` with
      ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` clipped to [0, 1]
      (``t = 1`` when no steps remain after warm-up).

    The cosine follows the reference code of BYOL and Barlow Twins: it reaches exactly
    ``final_lr_ratio`` at ``step == total_steps``, one past the last optimizer step, whose
    factor is ``final + (1 - final) * sin^2(pi / (2 (total - warmup)))``; so with
    ``final_lr_ratio = 0`` no step runs at a zero learning rate.
    """

    total_steps: int
    warmup_steps: int
    final_lr_ratio: float

    def __post_init__(self) -> None:
        if self.total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise ValueError(
                f"warmup_steps must be in [0, total_steps={self.total_steps}], "
                f"got {self.warmup_steps}"
            )
        if not 0 <= self.final_lr_ratio <= 1:
            raise ValueError(f"final_lr_ratio must be in [0, 1], got {self.final_lr_ratio}")

    def factor(self, step: int) -> float:
        """The multiplier of the peak learning rate at 0-based ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = self.total_steps - self.warmup_steps
        t = 1.0 if span <= 0 else min(max((step - self.warmup_steps) / span, 0.0), 1.0)
        final = self.final_lr_ratio
        return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set ``lr = base_lr x factor(step)`` in every group whose ``fixed_lr`` is false and
        ``lr = base_lr`` in the others; returns the factor. A group without ``base_lr``
        (not made by :func:`twinfold.optim.param_groups`) gets its current ``lr`` as one."""
        factor = self.factor(step)
        for group in optimizer.param_groups:
            base = group.setdefault("base_lr", group["lr"])
            group["lr"] = base if group.get("fixed_lr", False) else base * factor
        return factor

    @classmethod
    def from_config(
        cls, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int, max_steps: int | None
    ) -> LRSchedule:
        """``total_steps = min(epochs x steps_per_epoch, max_steps)``;
        ``warmup_steps = round(warmup_epochs x steps_per_epoch)`` (Python's round, ties to
        even) capped at ``total_steps``."""
        if steps_per_epoch < 1 or epochs < 1:
            raise ValueError(
                f"steps_per_epoch and epochs must be >= 1, got {steps_per_epoch} and {epochs}"
            )
        total = epochs * steps_per_epoch
        if max_steps is not None:
            total = min(total, max_steps)
        warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total)
        return cls(total_steps=total, warmup_steps=warmup, final_lr_ratio=cfg.final_lr_ratio)


@dataclass(frozen=True)
class WeightDecaySchedule:
    """Weight decay at 0-based optimizer step ``step``: ``end + (start - end) * (1 +
    cos(pi * t)) / 2`` with ``t = step / total_steps`` clipped to [0, 1], so step 0 runs at
    ``start`` and ``end`` is reached at ``step == total_steps`` (DINO's reference code:
    a cosine over every iteration, no warm-up). It sets the groups whose ``decays`` key is
    true (made by :func:`twinfold.optim.param_groups`; a group without the key counts as
    decaying when its ``weight_decay`` is above 0)."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < 0:
            raise ValueError(f"weight decay must be >= 0, got {self.start} and {self.end}")
        if self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {self.total_steps}")

    def value(self, step: int) -> float:
        """The weight decay at 0-based ``step``."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        t = min(step / self.total_steps, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        """Set ``weight_decay = value(step)`` in every decaying group; returns the value."""
        wd = self.value(step)
        for group in optimizer.param_groups:
            if group.setdefault("decays", group["weight_decay"] > 0):
                group["weight_decay"] = wd
        return wd

    @classmethod
    def from_config(cls, cfg: OptimizerConfig, total_steps: int) -> WeightDecaySchedule | None:
        """The schedule of ``cfg.weight_decay`` -> ``cfg.weight_decay_end``, or ``None``
        when ``weight_decay_end`` is unset (constant weight decay)."""
        if cfg.weight_decay_end is None:
            return None
        return cls(start=cfg.weight_decay, end=cfg.weight_decay_end, total_steps=total_steps)
