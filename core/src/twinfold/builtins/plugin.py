"""The core's builtins, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold.builtins.encoders import (
    ResNetConfig,
    ResNetEncoder,
    SmallCNN,
    SmallCNNConfig,
    TorchvisionConfig,
    TorchvisionEncoder,
)
from twinfold.builtins.heads import MLPHeadConfig, build_mlp_head
from twinfold.builtins.targets import NoTarget, NoTargetConfig
from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views
from twinfold.hookspecs import hookimpl
from twinfold.records import Component


@hookimpl
def twinfold_encoders() -> Iterator[Component]:
    yield Component(ResNetConfig, ResNetEncoder, "torchvision ResNet trunk, optional small stem")
    yield Component(
        TorchvisionConfig, TorchvisionEncoder, "any torchvision classification model, no classifier"
    )
    yield Component(SmallCNNConfig, SmallCNN, "small residual CNN for CPU-sized runs")


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(MLPHeadConfig, build_mlp_head, "MLP head: [Linear-BN-ReLU] x n, Linear")


@hookimpl
def twinfold_target_updates() -> Iterator[Component]:
    yield Component(NoTargetConfig, lambda cfg: NoTarget(), "no target: compare online views")


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(SimCLRViewsConfig, build_simclr_views, "per-sample SimCLR-family views")
