"""Barlow Twins' registrations: loss, projector, views and presets."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold.builtins.heads import build_mlp_head
from twinfold.builtins.views import build_simclr_views
from twinfold_barlow_twins.heads import BarlowTwinsProjectorConfig
from twinfold_barlow_twins.loss import BarlowTwinsLossConfig, build_barlow_twins_loss
from twinfold_barlow_twins.presets import BARLOW_TWINS, BARLOW_TWINS_SMALL
from twinfold_barlow_twins.views import BarlowTwinsViewsConfig


@hookimpl
def twinfold_losses() -> Iterator[Component]:
    yield Component(
        BarlowTwinsLossConfig,
        build_barlow_twins_loss,
        "Barlow Twins: cross-correlation of globally batch-normed views pushed to identity",
    )


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(
        BarlowTwinsProjectorConfig, build_mlp_head, "Barlow Twins projector 8192-8192-8192"
    )


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(BarlowTwinsViewsConfig, build_simclr_views, "Barlow Twins' (BYOL's) view pair")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield BARLOW_TWINS
    yield BARLOW_TWINS_SMALL
