"""DINO's multi-crop views (Caron et al. 2021, sec. 3.1; multi-crop from Caron et al.
2020, SwAV): 2 global crops at the full size, area (0.4, 1), with BYOL's asymmetric
blur / solarize pair, then N local crops of a smaller size, area (0.05, 0.4), blur p 0.5.
The global views come FIRST: the teacher sees the leading ``global_views`` of the list
(loss ``dino``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig

GLOBAL_SCALE = (0.4, 1.0)
LOCAL_SCALE = (0.05, 0.4)


def multi_crop(global_views: list[ViewConfig], local: ViewConfig, locals_: int) -> list[ViewConfig]:
    """The global views followed by ``locals_`` copies of ``local``."""
    return [*global_views, *(local.model_copy() for _ in range(locals_))]


def dino_views(local_crops: int = 10, local_size: int = 96) -> list[ViewConfig]:
    """The paper's recipe: 2 global crops (the pipeline's ``image_size``) and
    ``local_crops`` local crops of side ``local_size``."""
    pair = [v.model_copy(update={"crop_scale": GLOBAL_SCALE}) for v in asymmetric_view_pair()]
    local = pair[0].model_copy(
        update={"crop_scale": LOCAL_SCALE, "blur_p": 0.5, "solarize_p": 0.0, "size": local_size}
    )
    return multi_crop(pair, local, local_crops)


class DINOViewsConfig(SimCLRViewsConfig):
    """2 global + 10 local (96 px) crops by default; list the global views first. Each
    view's ``size`` (default ``image_size``) sets its side."""

    name: Literal["dino-views"] = "dino-views"
    views: list[ViewConfig] = Field(default_factory=dino_views)
