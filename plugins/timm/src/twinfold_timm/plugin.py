"""twinfold-timm's registrations: the ``timm`` encoder and the ViT presets."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold_timm.encoder import TimmConfig, TimmEncoder
from twinfold_timm.presets import VICREG_VIT_SMALL


@hookimpl
def twinfold_encoders() -> Iterator[Component]:
    yield Component(TimmConfig, TimmEncoder, "any timm model (create_model), pooled features")


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield VICREG_VIT_SMALL
