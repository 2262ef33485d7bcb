"""VICReg's view pair: BYOL's asymmetric augmentations (Bardes et al. 2022, appendix C.1;
authors' ``augmentations.py``): blur p 1.0 / 0.1, solarize p 0.0 / 0.2."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig


class VICRegViewsConfig(SimCLRViewsConfig):
    """VICReg's two asymmetric views; every parameter can be overridden per view."""

    name: Literal["vicreg-views"] = "vicreg-views"
    views: list[ViewConfig] = Field(default_factory=asymmetric_view_pair)
