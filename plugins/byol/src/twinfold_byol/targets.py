"""BYOL's target-update rules (Grill et al. 2020, section 3.1 and appendix)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from twinfold import BranchOutput, TargetRule, TargetRuleConfig
from twinfold.components import frozen_copy, matched_tensors


class TargetNetwork(nn.Module):
    """A copy of the online encoder and projector (no predictor)."""

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.encoder = frozen_copy(online.encoder)
        self.projector = frozen_copy(online.projector)

    def forward(self, views: Sequence[Tensor]) -> list[Tensor]:
        return [self.projector(self.encoder(v)) for v in views]

    def matched(self, online: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        enc = matched_tensors(online.encoder, self.encoder)
        proj = matched_tensors(online.projector, self.projector)
        return enc[0] + proj[0], enc[1] + proj[1]


def ema_tau(step: int, total_steps: int, tau_base: float, tau_final: float = 1.0) -> float:
    """tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2 (Grill et al. 2020, sec. 3.2),
    with 1 generalised to ``tau_final``; k is clipped to [0, K]."""
    k = min(max(step, 0), total_steps)
    return (
        tau_final - (tau_final - tau_base) * (math.cos(math.pi * k / max(total_steps, 1)) + 1) / 2
    )


class _CopyTarget(TargetRule):
    def build(self, online: nn.Module) -> nn.Module:
        return TargetNetwork(online)

    def targets(
        self, views: Sequence[Tensor], online_out: BranchOutput, target: nn.Module | None
    ) -> list[Tensor]:
        assert target is not None, "this rule builds a target network"
        with torch.no_grad():
            return [t.detach() for t in target(views)]


class EMATargetConfig(TargetRuleConfig):
    """Exponential moving average of the online weights with a cosine tau schedule."""

    name: Literal["ema"] = "ema"
    tau_base: float = Field(0.996, ge=0, le=1)
    tau_final: float = Field(1.0, ge=0, le=1, description="BYOL anneals tau to 1")


class EMATarget(_CopyTarget):
    """xi <- tau xi + (1 - tau) theta after every optimizer step."""

    def __init__(self, cfg: EMATargetConfig) -> None:
        self.cfg = cfg

    def tau(self, step: int, total_steps: int) -> float:
        return ema_tau(step, total_steps, self.cfg.tau_base, self.cfg.tau_final)

    @torch.no_grad()
    def update(
        self, online: nn.Module, target: nn.Module | None, step: int, total_steps: int
    ) -> dict[str, float]:
        assert isinstance(target, TargetNetwork)
        tau = self.tau(step, total_steps)
        dest, src = target.matched(online)
        torch._foreach_lerp_(dest, src, 1.0 - tau)
        return {"target/tau": tau}


class ScaledCopyTargetConfig(TargetRuleConfig):
    """Target = lambda x online weights, reset after every step (BYOL appendix)."""

    name: Literal["scaled-copy"] = "scaled-copy"
    lambda_: float = Field(1.0, description="the constant lambda in xi = lambda theta")


class ScaledCopyTarget(_CopyTarget):
    """xi <- lambda theta after every optimizer step (and at the start)."""

    def __init__(self, cfg: ScaledCopyTargetConfig) -> None:
        self.cfg = cfg

    def build(self, online: nn.Module) -> nn.Module:
        target = TargetNetwork(online)
        self.update(online, target, 0, 1)
        return target

    @torch.no_grad()
    def update(
        self, online: nn.Module, target: nn.Module | None, step: int, total_steps: int
    ) -> dict[str, float]:
        assert isinstance(target, TargetNetwork)
        dest, src = target.matched(online)
        torch._foreach_copy_(dest, src)
        torch._foreach_mul_(dest, self.cfg.lambda_)
        return {"target/lambda": self.cfg.lambda_}
