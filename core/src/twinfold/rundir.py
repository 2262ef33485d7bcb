"""The run directory: resolved config, metrics, checkpoints and exported weights."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from twinfold.config import RunConfig, dump_config
from twinfold.errors import ConfigError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
BACKBONE_FILE = "backbone.safetensors"
BACKBONE_META = "backbone.json"
SUMMARY_FILE = "summary.json"
SKIPPED_FILE = "skipped_images.txt"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.path / CHECKPOINT_DIR / LAST_CHECKPOINT

    @property
    def backbone(self) -> Path:
        return self.path / BACKBONE_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def skipped(self) -> Path:
        """Unreadable images skipped under ``data.skip_bad_images`` (one path a line)."""
        return self.path / SKIPPED_FILE


def default_run_name(cfg: RunConfig) -> str:
    stem = cfg.preset or f"{cfg.method.loss.name}-{cfg.method.encoder.name}"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolve_run_dir(cfg: RunConfig, name: str) -> RunDir:
    """The run directory, checked before anything is written: it must lie inside
    ``run.output_dir`` (no ``..``, absolute path or symbolic link out of it), and a
    non-empty directory is refused unless ``run.resume`` or ``run.overwrite`` is set."""
    from twinfold.checkpoints import Checkpoints

    root = Path(cfg.run.output_dir)
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise ConfigError(
            [("run.name", f"'{name}' would write outside {root}; use a plain directory name")]
        )
    if cfg.run.resume == "auto":
        cfg = resolve_resume(cfg)
    if cfg.run.resume:
        if Checkpoints(path / CHECKPOINT_DIR).latest() is None:
            raise ConfigError(
                [
                    (
                        "run.resume",
                        f"no checkpoint to resume at {path / CHECKPOINT_DIR}; "
                        "drop run.resume or name an existing run with run.name",
                    )
                ]
            )
    elif path.exists() and any(path.iterdir()) and not cfg.run.overwrite:
        raise ConfigError(
            [
                (
                    "run.name",
                    f"run directory {path} is not empty; set run.resume=true to "
                    "continue it, run.overwrite=true to replace it, or choose another run.name",
                )
            ]
        )
    return RunDir(path)


def resolve_resume(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``run.resume='auto'`` decided: true when the named run directory
    holds a checkpoint; otherwise false, and the directory (left by an attempt that
    wrote no checkpoint) may be reused."""
    if cfg.run.resume != "auto":
        return cfg
    from twinfold.checkpoints import Checkpoints

    found = cfg.run.name is not None and (
        Checkpoints(Path(cfg.run.output_dir) / cfg.run.name / CHECKPOINT_DIR).latest() is not None
    )
    update = {"resume": True} if found else {"resume": False, "overwrite": True}
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=update)})


def write_config(run: RunDir, cfg: RunConfig) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    tmp = run.config.with_suffix(".tmp")
    tmp.write_text(dump_config(cfg), encoding="utf-8")
    os.replace(tmp, run.config)


def exportable_backbone(encoder: nn.Module) -> nn.Module:
    """The module whose state dict is exported (torchvision key names for ResNets)."""
    return getattr(encoder, "backbone", encoder)


def export_backbone(run: RunDir, encoder: nn.Module, cfg: RunConfig, extra: dict[str, Any]) -> Path:
    """Write the backbone weights as safetensors plus a JSON sidecar."""
    module = exportable_backbone(encoder)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = run.backbone.with_suffix(".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, run.backbone)
    meta = {
        "encoder": cfg.method.encoder.model_dump(mode="json"),
        "out_dim": getattr(encoder, "out_dim", None),
        "torch": torch.__version__,
        **extra,
    }
    (run.path / BACKBONE_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return run.backbone
