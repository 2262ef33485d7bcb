"""SimSiam's registrations: loss, stop-gradient target rule, views, heads and presets."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold.builtins.heads import build_mlp_head
from twinfold.builtins.views import build_simclr_views
from twinfold_simsiam.heads import SimSiamPredictorConfig, SimSiamProjectorConfig
from twinfold_simsiam.loss import SimSiamLossConfig, build_simsiam_loss
from twinfold_simsiam.presets import SIMSIAM, SIMSIAM_SMALL
from twinfold_simsiam.targets import StopGradientConfig, build_stop_gradient
from twinfold_simsiam.views import SimSiamViewsConfig


@hookimpl
def twinfold_losses() -> Iterator[Component]:
    yield Component(
        SimSiamLossConfig, build_simsiam_loss, "SimSiam: -1/2 [cos(p1, z2) + cos(p2, z1)]"
    )


@hookimpl
def twinfold_target_updates() -> Iterator[Component]:
    yield Component(
        StopGradientConfig, build_stop_gradient, "no target network: targets = sg(online z)"
    )


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(SimSiamViewsConfig, build_simclr_views, "SimSiam's symmetric view pair")


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(
        SimSiamProjectorConfig, build_mlp_head, "SimSiam projector 2048-2048-2048, BN output"
    )
    yield Component(SimSiamPredictorConfig, build_mlp_head, "SimSiam predictor 2048-512-2048")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield SIMSIAM
    yield SIMSIAM_SMALL
