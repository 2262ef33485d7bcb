"""Which first-party distribution provides each component name, so that a lookup of a name
whose plugin is not installed can say what to install (``pip install twinfold-timm``)
instead of only "unknown encoder 'timm'". ``tests/test_registry.py`` checks this table
against the plugins installed from ``plugins/``."""

from __future__ import annotations

PROVIDERS: dict[str, dict[str, tuple[str, ...]]] = {
    "twinfold-byol": {
        "augmentation": ("byol-views",),
        "head": ("byol-predictor", "byol-projector"),
        "loss": ("byol",),
        "preset": ("byol", "byol-small"),
        "target": ("ema", "scaled-copy"),
    },
    "twinfold-simsiam": {
        "augmentation": ("simsiam-views",),
        "head": ("simsiam-predictor", "simsiam-projector"),
        "loss": ("simsiam",),
        "preset": ("simsiam", "simsiam-small"),
        "target": ("stop-gradient",),
    },
    "twinfold-barlow-twins": {
        "augmentation": ("barlow-twins-views",),
        "head": ("barlow-twins-projector",),
        "loss": ("barlow-twins",),
        "preset": ("barlow-twins", "barlow-twins-small"),
    },
    "twinfold-vicreg": {
        "augmentation": ("vicreg-views",),
        "head": ("vicreg-expander",),
        "loss": ("vicreg",),
        "preset": ("vicreg", "vicreg-small"),
    },
    "twinfold-dino": {
        "augmentation": ("dino-views",),
        "head": ("dino-head",),
        "loss": ("dino",),
        "preset": ("dino", "dino-small", "dino-vit-small"),
    },
    "twinfold-timm": {
        "encoder": ("timm",),
        "preset": ("vicreg-vit-small",),
    },
}
"""distribution -> component kind -> names it registers."""

SOURCE_DIRS = {
    dist: "plugins/" + dist.removeprefix("twinfold-").replace("-", "_") for dist in PROVIDERS
}
"""Each distribution's folder in a source checkout."""


def provider(kind: str, name: str) -> str | None:
    """The first-party distribution that registers ``name`` as a ``kind``, if any."""
    return next((dist for dist, kinds in PROVIDERS.items() if name in kinds.get(kind, ())), None)


def install_hint(dist: str, name: str) -> str:
    """What to install to get ``name`` from the first-party distribution ``dist``."""
    return (
        f" '{name}' is provided by the {dist} plugin, which is not installed: "
        f"pip install {dist} (from a source checkout: pip install -e {SOURCE_DIRS[dist]})."
    )
