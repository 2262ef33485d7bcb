"""Barlow Twins' views (Zbontar et al. 2021, appendix "Image augmentations"): BYOL's
asymmetric pair."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig


class BarlowTwinsViewsConfig(SimCLRViewsConfig):
    """Two asymmetric views (blur p 1.0 / 0.1, solarize p 0.0 / 0.2); every parameter
    can be overridden per view."""

    name: Literal["barlow-twins-views"] = "barlow-twins-views"
    views: list[ViewConfig] = Field(default_factory=asymmetric_view_pair)
