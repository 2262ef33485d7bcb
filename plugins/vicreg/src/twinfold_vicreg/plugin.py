"""VICReg's registrations: loss, expander head, views and presets."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold.builtins.heads import build_mlp_head
from twinfold.builtins.views import build_simclr_views
from twinfold_vicreg.heads import VICRegExpanderConfig
from twinfold_vicreg.loss import VICRegLossConfig, build_vicreg_loss
from twinfold_vicreg.presets import VICREG, VICREG_SMALL
from twinfold_vicreg.views import VICRegViewsConfig


@hookimpl
def twinfold_losses() -> Iterator[Component]:
    yield Component(
        VICRegLossConfig, build_vicreg_loss, "VICReg: invariance + variance + covariance"
    )


@hookimpl
def twinfold_augmentations() -> Iterator[Component]:
    yield Component(VICRegViewsConfig, build_simclr_views, "VICReg's (BYOL's) asymmetric views")


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(VICRegExpanderConfig, build_mlp_head, "VICReg expander 8192-8192-8192")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield VICREG
    yield VICREG_SMALL
