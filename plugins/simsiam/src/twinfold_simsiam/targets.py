"""SimSiam's target rule (Chen & He 2021, Algorithm 1): no target network and no copy;
the targets are the online projections with the gradient stopped, z.detach()."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from twinfold import BranchOutput, TargetRule, TargetRuleConfig


class StopGradientConfig(TargetRuleConfig):
    """Targets = sg(z): the online branch's own projections, detached (eq. 2)."""

    name: Literal["stop-gradient"] = "stop-gradient"


class StopGradient(TargetRule):
    """No target module (``build`` returns ``None``); ``targets`` detaches the online
    projections, so the loss reaches the encoder only through the predictor side."""

    def build(self, online: nn.Module) -> None:
        return None

    def targets(
        self, views: Sequence[Tensor], online_out: BranchOutput, target: nn.Module | None
    ) -> list[Tensor]:
        return [z.detach() for z in online_out.projections]


def build_stop_gradient(cfg: StopGradientConfig) -> StopGradient:
    return StopGradient()
