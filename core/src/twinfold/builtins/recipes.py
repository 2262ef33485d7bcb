"""View recipes shared by several methods (values from the papers; see
``docs/methods.md``): public, for plugins that register their own named view configs
(the four method plugins use them). A change to a recipe changes every preset built on
it, so the values only change with a new minor version of the core.

- :func:`asymmetric_view_pair`, :func:`simsiam_view_pair`: the papers' view pairs as
  :class:`~twinfold.builtins.views.ViewConfig` lists (a views config's ``views``);
- :data:`DIGITS_VIEW_CHANGES`, :data:`ASYMMETRIC_PROBABILITIES` and
  :func:`digits_views_section`: what the small presets on the embedded digits use;
- :data:`PAPER_HELD_OUT`: the deviation the paper presets share for their GPU-node
  defaults (1% of the training images held out for kNN, evaluated a few times a run).
"""

from __future__ import annotations

from twinfold.builtins.views import ViewConfig

__all__ = [
    "ASYMMETRIC_PROBABILITIES",
    "DIGITS_VIEW_CHANGES",
    "PAPER_HELD_OUT",
    "asymmetric_view_pair",
    "digits_views_section",
    "simsiam_view_pair",
]

PAPER_HELD_OUT = (
    "1% of the training images are held out as kNN queries (data.holdout_fraction 0.01; "
    "the papers train on all of them) and the kNN runs every 100 epochs (SimSiam's 100: "
    "at 50) and at the end; set data.eval_root to the labelled validation folder to train "
    "on every training image and query that folder."
)

_COMMON = dict(
    crop_scale=(0.08, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    flip_p=0.5,
    jitter_p=0.8,
    brightness=0.4,
    contrast=0.4,
    saturation=0.2,
    hue=0.1,
    grayscale_p=0.2,
    blur_sigma=(0.1, 2.0),
    blur_kernel_fraction=0.1,
    solarize_threshold=0.5,
)


def asymmetric_view_pair() -> list[ViewConfig]:
    """BYOL's pair (Grill et al. 2020, Table 6), also used by Barlow Twins and VICReg:
    view 1 blurs always and never solarizes; view 2 blurs with p 0.1, solarizes with p 0.2."""
    return [
        ViewConfig(**_COMMON, blur_p=1.0, solarize_p=0.0),
        ViewConfig(**_COMMON, blur_p=0.1, solarize_p=0.2),
    ]


def simsiam_view_pair() -> list[ViewConfig]:
    """SimSiam's symmetric pair (Chen & He 2021, sec. 4 / appendix A): crop area (0.2, 1),
    jitter p 0.8 (0.4, 0.4, 0.4, 0.1), grayscale 0.2, blur p 0.5, flip 0.5."""
    view = dict(
        _COMMON,
        crop_scale=(0.2, 1.0),
        saturation=0.4,
        blur_p=0.5,
        solarize_p=0.0,
    )
    return [ViewConfig(**view), ViewConfig(**view)]


#: What the small presets on the embedded digits change in every paper view: the digits
#: are grey (no saturation/hue jitter, no grayscale) and not mirror-symmetric (no flip),
#: and an 8x8 source keeps its class only under milder crops.
DIGITS_VIEW_CHANGES: dict[str, object] = {
    "crop_scale": [0.3, 1.0],
    "flip_p": 0.0,
    "saturation": 0.0,
    "hue": 0.0,
    "grayscale_p": 0.0,
}

#: The per-view blur/solarize probabilities of BYOL's asymmetric pair (Table 6).
ASYMMETRIC_PROBABILITIES: list[dict[str, object]] = [
    {"blur_p": 1.0, "solarize_p": 0.0},
    {"blur_p": 0.1, "solarize_p": 0.2},
]


def digits_views_section(name: str, views: list[dict[str, object]]) -> dict[str, object]:
    """A preset's ``method.views`` section for the embedded digits: the view component
    ``name`` with grey normalisation (mean = std = 0.5) and one view per entry of
    ``views``, each :data:`DIGITS_VIEW_CHANGES` updated with the entry."""
    return {
        "name": name,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "views": [{**DIGITS_VIEW_CHANGES, **view} for view in views],
    }
