"""Open what a run left behind — a run directory, a checkpoint file, or an exported
backbone — as its config plus a backbone with the trained weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from twinfold.checkpoint_format import check_components, read_checkpoint
from twinfold.checkpoints import LAST
from twinfold.config import RunConfig, load_config
from twinfold.errors import CheckpointError, ConfigError
from twinfold.export import exportable_backbone, load_backbone, read_sidecar
from twinfold.method import build_method
from twinfold.registry import Registry, default_registry
from twinfold.rundir import BACKBONE_FILE, CHECKPOINT_DIR, CONFIG_FILE


@dataclass
class TrainedBackbone:
    config: RunConfig
    backbone: nn.Module  # the encoder (``out_dim`` attribute) in eval mode
    source: Path
    step: int | None = None


def _from_checkpoint(path: Path, registry: Registry) -> TrainedBackbone:
    state = read_checkpoint(path)
    check_components(state, registry, path)
    cfg = load_config(json.loads(state["config"]), registry=registry)
    method = build_method(cfg.method, registry)
    try:
        method.load_state_dict(state)
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{path} does not match its own config: {exc}") from None
    return TrainedBackbone(cfg, method.backbone.eval(), path, state["step"])


def _from_export(path: Path, registry: Registry) -> TrainedBackbone:
    meta = read_sidecar(path)
    cfg = load_config(meta["config"], registry=registry)
    encoder = registry.build(cfg.method.encoder)
    load_backbone(path, model=exportable_backbone(encoder))
    return TrainedBackbone(cfg, encoder.eval(), path, meta.get("step"))


def open_trained(path: Path | str, registry: Registry | None = None) -> TrainedBackbone:
    """A run directory (its last checkpoint, else its exported backbone), a ``.ckpt``
    file, or an exported ``.safetensors`` file."""
    registry = registry or default_registry()
    path = Path(path)
    if path.is_dir():
        ckpt = path / CHECKPOINT_DIR / LAST
        if ckpt.is_file():
            return _from_checkpoint(ckpt, registry)
        if (path / BACKBONE_FILE).is_file():
            return _from_export(path / BACKBONE_FILE, registry)
        hint = " (it has a config but no weights yet)" if (path / CONFIG_FILE).is_file() else ""
        raise CheckpointError(
            f"{path} holds no checkpoint ({CHECKPOINT_DIR}/{LAST}) and no "
            f"{BACKBONE_FILE}{hint}; pass a run directory, a .ckpt or a .safetensors file"
        )
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a run directory or a checkpoint")
    if path.suffix == ".safetensors":
        return _from_export(path, registry)
    return _from_checkpoint(path, registry)
def open_trained_argument(source: Path | str, registry: Registry) -> TrainedBackbone:
    """:func:`open_trained` for a command's RUN_OR_CHECKPOINT argument (``eval``,
    ``export``, ``embed``): every problem of the argument (missing, another kind of
    file, damaged) is a :class:`ConfigError` on it, exit status 2."""
    path = Path(source)
    if not path.exists():
        raise ConfigError(
            [
                (
                    "RUN_OR_CHECKPOINT",
                    f"'{path}' does not exist; pass a run directory, a .ckpt checkpoint "
                    "or an exported .safetensors file",
                )
            ]
        )
    if path.is_file() and path.suffix not in (".ckpt", ".safetensors"):
        raise ConfigError(
            [
                (
                    "RUN_OR_CHECKPOINT",
                    f"'{path}' is neither a checkpoint (.ckpt) nor an exported backbone "
                    "(.safetensors); pass one of those or a run directory",
                )
            ]
        )
    try:
        return open_trained(path, registry)
    except CheckpointError as exc:
        raise ConfigError([("RUN_OR_CHECKPOINT", str(exc))]) from None


