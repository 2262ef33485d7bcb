"""The method protocol the training loop depends on, and the generic siamese method:
online branch (encoder -> projector [-> predictor]), an optional target branch owned by
the target rule, and a loss. All four papers are compositions of these components;
nothing here knows a method's name."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from twinfold.components import BranchOutput, Loss, StepProgress, TargetRule
from twinfold.config.models import MethodConfig, TrainerConfig
from twinfold.distributed import mean_over_ranks
from twinfold.registry import Registry, default_registry
from twinfold.sync_batchnorm import convert_sync_batchnorm

OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
"""Builds the optimizer of a method's trainable module (before it is wrapped)."""


@dataclass(frozen=True)
class SetupOptions:
    """How a method sets itself up on Fabric: the run's resolved trainer settings."""

    sync_batchnorm: bool
    channels_last: bool
    compile: bool

    @classmethod
    def from_trainer(cls, trainer: TrainerConfig) -> SetupOptions:
        return cls(trainer.sync_batchnorm, trainer.channels_last is True, trainer.compile)


@dataclass
class StepOutput:
    """What a training step returns to the loop."""

    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    #: this rank's projector outputs of the first view, detached (for collapse metrics)
    embeddings: Tensor | None = None


@runtime_checkable
class TrainingMethod(Protocol):
    """What the loop knows of a method. ``online`` is the trainable module (the only
    one wrapped for gradient synchronisation, by :meth:`setup`), ``target`` the optional
    module that follows it without gradients, ``backbone`` the encoder that is
    evaluated and exported. The state dicts hold ``online`` and ``target`` (and any other
    state the method keeps) as checkpoints store them."""

    @property
    def online(self) -> nn.Module: ...

    @property
    def target(self) -> nn.Module | None: ...

    @property
    def backbone(self) -> nn.Module: ...

    def setup(
        self, fabric: Any, make_optimizer: OptimizerFactory, options: SetupOptions
    ) -> torch.optim.Optimizer: ...

    def before_step(self, progress: StepProgress) -> None: ...

    def training_step(self, views: Sequence[Tensor]) -> StepOutput: ...

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


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

    def parts(self) -> list[nn.Module]:
        """The encoder, projector and predictor (when there is one)."""
        return [m for m in (self.encoder, self.projector, self.predictor) if m is not None]


class SiameseMethod:
    """The generic method (a :class:`TrainingMethod`): the online network, the target
    rule's module and the loss. ``online_raw`` is the online network unwrapped."""

    def __init__(self, online: OnlineNetwork, target_rule: TargetRule, loss: Loss) -> None:
        self._network = online
        self._online: nn.Module = online
        self.target_rule = target_rule
        self._target: nn.Module | None = target_rule.build(online)
        self.loss = loss

    @property
    def online(self) -> nn.Module:
        return self._online

    @property
    def online_raw(self) -> OnlineNetwork:
        return self._network

    @property
    def target(self) -> nn.Module | None:
        return self._target

    @property
    def backbone(self) -> nn.Module:
        return self._network.encoder

    def setup(
        self, fabric: Any, make_optimizer: OptimizerFactory, options: SetupOptions
    ) -> torch.optim.Optimizer:
        """Global-batch BN for several processes, memory format and ``torch.compile``
        (in place: parameter names and checkpoints are unchanged), then the optimizer;
        wraps the online network and optimizer with Fabric and moves the target (never
        wrapped: it gets no gradients and is updated identically on every rank)."""
        if options.sync_batchnorm and fabric.world_size > 1:
            self._network = convert_sync_batchnorm(self._network, fabric.device)
            if self._target is not None:
                self._target = convert_sync_batchnorm(self._target, fabric.device)
        networks = [m for m in (self._network, self._target) if m is not None]
        if options.channels_last:
            for network in networks:
                network.to(memory_format=torch.channels_last)
        if options.compile:
            for part in self._network.parts() + networks[1:]:
                part.compile()
        optimizer = make_optimizer(self._network)
        self._online, optimizer = fabric.setup(self._network, optimizer)
        if self._target is not None:
            self._target = fabric.to_device(self._target)
        self.loss = fabric.to_device(self.loss)  # a loss's buffers (state) live there too
        return optimizer

    def before_step(self, progress: StepProgress) -> None:
        """Called by the loop before every training step: hands ``progress`` to every
        component defining ``before_step(progress)`` (any module of the online and
        target networks, the loss, the target rule), each once, for schedules that
        follow the step or epoch (e.g. a loss's temperature warm-up)."""
        seen: set[int] = set()
        modules = [self._network, self._target, self.loss]
        parts = [m for module in modules if module is not None for m in module.modules()]
        for part in [*parts, self.target_rule]:
            hook = getattr(part, "before_step", None)
            if callable(hook) and id(part) not in seen:
                seen.add(id(part))
                hook(progress)

    def training_step(self, views: Sequence[Tensor]) -> StepOutput:
        out: BranchOutput = self._online(views)
        k = self.loss.target_views(len(views))
        if k < len(views):  # the target side sees the leading k views only
            out_k = BranchOutput(out.features[:k], out.projections[:k], out.predictions[:k])
            targets = self.target_rule.targets(views[:k], out_k, self._target)
        else:
            targets = self.target_rule.targets(views, out, self._target)
        # losses run in float32 even under bf16/fp16 autocast: their batch statistics
        # (cross-correlation, covariance, norms) lose too much in half precision
        with torch.autocast(out.predictions[0].device.type, enabled=False):
            online, target = float32_once(out.predictions, targets)
            terms = self.loss.terms(online, target)
        loss = terms.pop("loss")
        metrics = {f"loss/{k}": mean_over_ranks(v) for k, v in terms.items()}
        return StepOutput(loss, metrics, out.projections[0].detach())

    def after_optimizer_step(self, step: int, total_steps: int) -> dict[str, float]:
        return self.target_rule.update(self._network, self._target, step, total_steps)

    def state_dict(self) -> dict[str, Any]:
        """``online`` and ``target`` state dicts, ``target_rule`` when the rule keeps
        state of its own, and ``loss`` when the loss has buffers or parameters (e.g.
        DINO's centre)."""
        state: dict[str, Any] = {"online": self._network.state_dict()}
        if self._target is not None:
            state["target"] = self._target.state_dict()
        rule_state = self.target_rule.state_dict()
        if rule_state:
            state["target_rule"] = rule_state
        loss_state = self.loss.state_dict()
        if loss_state:
            state["loss"] = loss_state
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (strict key matching)."""
        self._network.load_state_dict(state["online"], strict=True)
        if self._target is not None:
            if "target" not in state:
                raise KeyError("the checkpoint has no target network")
            self._target.load_state_dict(state["target"], strict=True)
        self.target_rule.load_state_dict(state.get("target_rule", {}))
        loss_state = self.loss.state_dict()
        if loss_state and "loss" not in state:
            raise KeyError("the checkpoint has no state of the loss (it keeps buffers)")
        if loss_state:
            self.loss.load_state_dict(state["loss"], strict=True)


def float32_once(*groups: Sequence[Tensor]) -> list[list[Tensor]]:
    """Every tensor of ``groups`` in float32, each converted once: a tensor that appears
    in several groups (the online and target sides of a method without a target branch)
    stays ONE tensor, so a loss can still tell that both sides are the same
    (:meth:`twinfold.Loss.symmetric_view_pairs`)."""
    done: dict[int, Tensor] = {}
    out = []
    for group in groups:
        converted = []
        for t in group:
            if id(t) not in done:
                done[id(t)] = t.float()
            converted.append(done[id(t)])
        out.append(converted)
    return out


def build_method(cfg: MethodConfig, registry: Registry | None = None) -> SiameseMethod:
    """Build the components of ``cfg`` through ``registry`` (default: the process-wide
    one) and assemble the method."""
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
