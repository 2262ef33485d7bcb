"""Builtin target rule ``none``: no target network; the loss compares the online
branch's projections with each other and gradients flow through both sides (Barlow
Twins, VICReg)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from twinfold.components import BranchOutput, TargetRule, TargetRuleConfig


class NoTargetConfig(TargetRuleConfig):
    name: Literal["none"] = "none"


class NoTarget(TargetRule):
    """Targets are the online projections themselves (no stop-gradient)."""

    def targets(
        self, views: Sequence[Tensor], online_out: BranchOutput, target: nn.Module | None
    ) -> list[Tensor]:
        return list(online_out.projections)
