"""The run directory's layout: resolved config, metrics, checkpoints, exported
weights, summary (where each file lives; :mod:`twinfold.resume` decides which
directory a run uses)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from twinfold.atomic_files import atomic_write_text
from twinfold.config import RunConfig, dump_config

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CHECKPOINT_DIR = "checkpoints"
BACKBONE_FILE = "backbone.safetensors"
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


def write_config(run: RunDir, cfg: RunConfig) -> None:
    """``config.yaml``: the resolved config, every default filled in (atomically)."""
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, dump_config(cfg))
