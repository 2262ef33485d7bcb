"""BYOL's registrations: loss, target rules, views, heads and presets."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold.builtins.heads import build_mlp_head
from twinfold.builtins.views import build_simclr_views
from twinfold_byol.heads import BYOLPredictorConfig, BYOLProjectorConfig
from twinfold_byol.loss import BYOLLossConfig, build_byol_loss
from twinfold_byol.presets import BYOL, BYOL_SMALL
from twinfold_byol.targets import (
    EMATarget,
    EMATargetConfig,
    ScaledCopyTarget,
    ScaledCopyTargetConfig,
)
from twinfold_byol.views import BYOLViewsConfig


@hookimpl
def twinfold_losses() -> Iterator[Component]:
    yield Component(BYOLLossConfig, build_byol_loss, "BYOL: 2 - 2 cos(q, sg(z')), both directions")


@hookimpl
def twinfold_target_updates() -> Iterator[Component]:
    yield Component(EMATargetConfig, EMATarget, "EMA target with BYOL's cosine tau schedule")
    yield Component(ScaledCopyTargetConfig, ScaledCopyTarget, "target = lambda x online weights")


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(BYOLViewsConfig, build_simclr_views, "BYOL's asymmetric view pair")


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(BYOLProjectorConfig, build_mlp_head, "BYOL projector 4096-256")
    yield Component(BYOLPredictorConfig, build_mlp_head, "BYOL predictor 4096-256")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield BYOL
    yield BYOL_SMALL
