"""The generic siamese method: online branch (encoder -> projector [-> predictor]), an
optional target branch owned by the target rule, and a loss. All four papers are
compositions of these components; nothing here knows a method's name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from twinfold.components import BranchOutput, Loss, TargetRule
from twinfold.config.models import MethodConfig
from twinfold.distributed import mean_over_ranks
from twinfold.registry import Registry, default_registry


class OnlineNetwork(nn.Module):
    """The trainable branch; the only module wrapped for gradient synchronisation.

    ``forward`` takes all views at once so that one DDP forward covers one backward.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module, predictor: nn.Module | None):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.predictor = predictor

    def forward(self, views: Sequence[Tensor]) -> BranchOutput:
        features = [self.encoder(v) for v in views]
        projections = [self.projector(h) for h in features]
        predictions = (
            [self.predictor(z) for z in projections] if self.predictor is not None else projections
        )
        return BranchOutput(features, projections, predictions)


@dataclass
class StepOutput:
    """What a training step returns to the loop."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    #: this rank's projector outputs of the first view, detached (for collapse metrics)
    embeddings: Tensor | None = None


class SiameseMethod:
    """The method protocol the loop knows: ``online``, ``target``, ``training_step``,
    ``after_optimizer_step``, plus the raw modules for checkpoints and export."""

    def __init__(
        self,
        online: OnlineNetwork,
        target_rule: TargetRule,
        loss: Loss,
    ) -> None:
        self.online_raw = online
        self.online: nn.Module = online  # replaced by the Fabric-wrapped module in the loop
        self.target_rule = target_rule
        self.target: nn.Module | None = target_rule.build(online)
        self.loss = loss

    @property
    def backbone(self) -> nn.Module:
        return self.online_raw.encoder

    def training_step(self, views: Sequence[Tensor]) -> StepOutput:
        out: BranchOutput = self.online(views)
        targets = self.target_rule.targets(views, out, self.target)
        # losses run in float32 even under bf16/fp16 autocast: their batch statistics
        # (cross-correlation, covariance, norms) lose too much in half precision
        with torch.autocast(out.predictions[0].device.type, enabled=False):
            terms = self.loss.terms(
                [p.float() for p in out.predictions], [t.float() for t in targets]
            )
        loss = terms.pop("loss")
        metrics = {f"loss/{k}": mean_over_ranks(v) for k, v in terms.items()}
        return StepOutput(loss, metrics, out.projections[0].detach())

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        return self.target_rule.update(self.online_raw, self.target, step, total_steps)


def build_method(cfg: MethodConfig, registry: Registry | None = None) -> SiameseMethod:
    """Build the components of ``cfg`` through the registry and assemble the method."""
    registry = registry or default_registry()
    encoder = registry.build(cfg.encoder)
    out_dim = _out_dim(encoder, "encoder", cfg.encoder.name)
    projector_cfg = cfg.projector.model_copy(update={"in_dim": out_dim})
    projector = registry.build(projector_cfg)
    predictor = None
    if cfg.predictor is not None:
        pdim = _out_dim(projector, "projector", cfg.projector.name)
        predictor = registry.build(cfg.predictor.model_copy(update={"in_dim": pdim}))
    online = OnlineNetwork(encoder, projector, predictor)
    return SiameseMethod(online, registry.build(cfg.target), registry.build(cfg.loss))


def _out_dim(module: nn.Module, role: str, name: str) -> int:
    dim = getattr(module, "out_dim", None)
    if not isinstance(dim, int):
        raise TypeError(f"{role} '{name}' must expose an integer attribute out_dim")
    return dim


@torch.no_grad()
def branch_forward(module: nn.Module, views: Sequence[Tensor]) -> list[Tensor]:
    """Forward each view through ``module`` (encoder -> projector) without gradients."""
    return [module(v) for v in views]
