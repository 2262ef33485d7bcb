"""SimSiam's symmetric view pair (Chen & He 2021, appendix A; MoCo v2's augmentation)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.recipes import simsiam_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig


class SimSiamViewsConfig(SimCLRViewsConfig):
    """Two identically distributed views: crop area (0.2, 1), jitter p 0.8
    (0.4, 0.4, 0.4, 0.1), grayscale 0.2, blur p 0.5 (sigma 0.1-2), flip 0.5."""

    name: Literal["simsiam-views"] = "simsiam-views"
    views: list[ViewConfig] = Field(default_factory=simsiam_view_pair)
