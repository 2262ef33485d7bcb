"""DINO's registrations: loss, head, multi-crop views and presets (the EMA teacher is
twinfold-byol's ``ema`` rule, used by name)."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold.builtins.views import build_simclr_views
from twinfold_dino.head import DINOHeadConfig, build_dino_head
from twinfold_dino.loss import DINOLossConfig, build_dino_loss
from twinfold_dino.presets import DINO, DINO_SMALL, DINO_VIT_SMALL
from twinfold_dino.views import DINOViewsConfig


@hookimpl
def twinfold_losses() -> Iterator[Component]:
    yield Component(
        DINOLossConfig, build_dino_loss, "DINO: H(teacher centred+sharpened, student), centre EMA"
    )


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(
        DINOHeadConfig, build_dino_head, "DINO head: MLP, L2 bottleneck, weight-normalised last"
    )


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(DINOViewsConfig, build_simclr_views, "multi-crop: 2 global + N local crops")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield DINO_VIT_SMALL
    yield DINO
    yield DINO_SMALL
