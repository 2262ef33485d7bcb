"""BYOL's asymmetric view pair (Grill et al. 2020, Table 6)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig


class BYOLViewsConfig(SimCLRViewsConfig):
    """BYOL's two asymmetric views; every parameter can be overridden per view."""

    name: Literal["byol-views"] = "byol-views"
    views: list[ViewConfig] = Field(default_factory=asymmetric_view_pair)
