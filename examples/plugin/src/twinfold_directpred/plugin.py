"""DirectPred's registrations: the predictor head and the small preset."""

from __future__ import annotations

from collections.abc import Iterator

from twinfold import Component, Preset, hookimpl
from twinfold_directpred.predictor import DirectPredConfig, build_directpred
from twinfold_directpred.presets import DIRECTPRED_SMALL


@hookimpl
def twinfold_heads() -> Iterator[Component]:
    yield Component(
        DirectPredConfig,
        build_directpred,
        "DirectPred: linear predictor set from the eigenvectors of E[f f^T], not learned",
    )


@hookimpl
def twinfold_presets() -> Iterator[Preset]:
    yield DIRECTPRED_SMALL
