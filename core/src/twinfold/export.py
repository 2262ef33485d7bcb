"""Backbone export and loading: a safetensors file plus a JSON sidecar that says what
architecture the weights belong to, the run config, and the package versions.

ResNet and ``torchvision`` backbones keep torchvision's key names, so the file loads into
``torchvision.models.<arch>()`` (with the small stem and the classifier layer replaced by
``Identity()`` as recorded in the sidecar) with strict key checking;
:func:`torchvision_backbone` builds that model. An encoder with an ``export_recipe()``
method adds its own entries to the sidecar (the timm plugin's ``timm`` entry).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import nn

from twinfold.atomic_files import atomic_write_bytes, atomic_write_text
from twinfold.config import RunConfig
from twinfold.config.models import SLOTS
from twinfold.errors import CheckpointError, ConfigError
from twinfold.registry import Registry, default_registry

FORMAT = "twinfold-backbone/1"


def sidecar_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


def exportable_backbone(encoder: nn.Module) -> nn.Module:
    """The module whose state dict is exported: an encoder's ``backbone`` attribute
    when it has one (the ResNet encoder keeps torchvision's key names there), else the
    encoder itself."""
    return getattr(encoder, "backbone", encoder)


def _versions(cfg: RunConfig, registry: Registry) -> dict[str, str]:
    """Installed versions of the core packages and of every component's distribution."""
    names = {"twinfold", "torch", "torchvision", "lightning-fabric"}
    for slot, kind in SLOTS.items():
        comp = getattr(cfg.method, slot)
        if comp is not None:
            names.add(registry.get(kind, comp.name).distribution)
    out = {}
    for name in sorted(names):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _recipes(encoder: nn.Module, encoder_cfg: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's rebuild entries: ``torchvision`` (None for other libraries) and
    whatever the encoder's own ``export_recipe()`` adds."""
    recipes: dict[str, Any] = {"torchvision": _resnet_recipe(encoder_cfg)}
    own = getattr(encoder, "export_recipe", None)
    if callable(own):
        recipes.update(own())
    return recipes


def _resnet_recipe(encoder_cfg: dict[str, Any]) -> dict[str, Any] | None:
    if encoder_cfg.get("name") != "resnet":
        return None
    replace = {"fc": "Identity"}
    if encoder_cfg.get("small_stem"):
        replace.update(
            {
                "conv1": "Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)",
                "maxpool": "Identity",
            }
        )
    return {"builder": f"torchvision.models.{encoder_cfg['arch']}", "replace": replace}


def export_path(out: Path | str, *, force: bool = False) -> Path:
    """Where ``twinfold export OUT`` writes: ``OUT`` with ``.safetensors`` added when
    missing, or ``OUT/backbone.safetensors`` for an existing directory. An existing
    weights file or sidecar there is a :class:`ConfigError` unless ``force``."""
    out = Path(out)
    if out.is_dir():
        out = out / "backbone.safetensors"
    elif out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    taken = [p for p in (out, sidecar_path(out)) if p.exists()]
    if any(p.is_dir() for p in taken):
        raise ConfigError([("OUT", f"{taken[0]} is a directory; name a file to write")])
    if taken and not force:
        names = " and ".join(str(p) for p in taken)
        raise ConfigError(
            [("OUT", f"{names} already exist(s); pass --force to overwrite, or another OUT")]
        )
    return out


def write_backbone(
    encoder: nn.Module,
    cfg: RunConfig,
    out: Path | str,
    extra: dict[str, Any] | None = None,
    registry: Registry | None = None,
) -> Path:
    """Write ``out`` (safetensors) and its ``.json`` sidecar, each atomically; the
    sidecar names the versions of the distributions of ``registry``'s components
    (default: the process-wide registry)."""
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    module = exportable_backbone(encoder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    encoder_cfg = cfg.method.encoder.model_dump(mode="json")
    meta = {
        "format": FORMAT,
        "encoder": encoder_cfg,
        "feature_dim": getattr(encoder, "out_dim", None),
        **_recipes(encoder, encoder_cfg),
        "image_size": cfg.data.image_size,
        "normalize": {
            "mean": getattr(cfg.method.views, "mean", None),
            "std": getattr(cfg.method.views, "std", None),
        },
        "versions": _versions(cfg, registry or default_registry()),
        "config": json.loads(cfg.model_dump_json()),
        **(extra or {}),
    }
    atomic_write_bytes(out, save(state, metadata={"format": FORMAT}))
    atomic_write_text(sidecar_path(out), json.dumps(meta, indent=2))
    return out


def read_sidecar(weights: Path | str) -> dict[str, Any]:
    side = sidecar_path(Path(weights))
    if not side.is_file():
        raise CheckpointError(f"{side} is missing; it is written next to the weights by export")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {side}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f'{side} is not the sidecar of a twinfold export (no "format": "{FORMAT}"); '
            "export the backbone again with twinfold export"
        )
    return meta


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mismatched shapes", shapes),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"{source} does not fit {type(module).__name__}: "
            + "; ".join(parts)
            + ". Build the architecture named in the sidecar JSON (see twinfold.export)."
        )
    module.load_state_dict(state, strict=True)


def torchvision_backbone(meta: dict[str, Any]) -> nn.Module:
    """The plain torchvision model described by a sidecar (``resnet`` and ``torchvision``
    encoders), its classifier layer replaced by ``Identity``."""
    import torchvision

    from twinfold.builtins.encoders import strip_classifier

    recipe = meta.get("torchvision")
    if not recipe:
        raise CheckpointError(
            f"encoder '{meta['encoder'].get('name')}' is not a torchvision model; "
            "use twinfold.export.load_backbone"
        )
    arch = recipe["builder"].rsplit(".", 1)[1]
    if "kwargs" in recipe:  # the torchvision encoder
        net = torchvision.models.get_model(arch, weights=None, **recipe["kwargs"])
        strip_classifier(net)
        return net
    net = getattr(torchvision.models, arch)(weights=None)
    if "conv1" in recipe["replace"]:
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


def load_backbone(
    weights: Path | str, model: nn.Module | None = None, registry: Registry | None = None
) -> nn.Module:
    """Load exported weights with strict key checking into ``model``, or into the
    encoder the sidecar describes (built through the registry). Returns it in eval mode."""
    weights = Path(weights)
    if not weights.is_file():
        raise CheckpointError(f"{weights} does not exist")
    if model is None:
        meta = read_sidecar(weights)
        registry = registry or default_registry()
        encoder = registry.build(registry.validate("encoder", meta["encoder"]))
        model = exportable_backbone(encoder)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(
            f"cannot read {weights} as safetensors ({exc}); export the backbone again"
        ) from None
    load_state_strict(model, state, weights)
    return model.eval()
