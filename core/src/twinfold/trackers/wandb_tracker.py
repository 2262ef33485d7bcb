"""Weights & Biases as a Fabric logger, on ``wandb.init`` (``run.trackers: [wandb]``):
the resolved config as the run's config, every metrics row at its step, and at the end
the plots as images and the run's files as a ``model`` artifact. Offline unless an API
key is configured (``run.wandb.mode``); files in ``<run>/wandb``. A resumed run continues
the W&B run whose id ``trackers.json`` in the run directory holds."""

from __future__ import annotations

import netrc
import os
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from lightning_fabric.loggers import Logger

from twinfold.trackers import fix_hint, remember_run, remembered_run

if TYPE_CHECKING:
    from twinfold.config import RunConfig


def has_api_key() -> bool:
    """Whether W&B has credentials: ``WANDB_API_KEY``, or a netrc entry for its host
    (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(setting: str) -> str | None:
    """``run.wandb.mode`` resolved: ``auto`` is None when ``WANDB_MODE`` is set (W&B reads
    it), else ``online`` with an API key and ``offline`` without."""
    if setting != "auto":
        return setting
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if has_api_key() else "offline"


class WandbTracker(Logger):
    """One W&B run per twinfold run (rank 0 only)."""

    fix = fix_hint("wandb")

    def __init__(self, cfg: RunConfig, run_dir: Path, resumed_from: int = 0) -> None:
        import wandb

        settings = cfg.run.wandb
        stored = remembered_run(run_dir, "wandb") if resumed_from else None
        run_id = str(stored["id"]) if stored and stored.get("id") else None  # None: a new one
        self.mode = resolve_mode(settings.mode)
        project = settings.project or os.environ.get("WANDB_PROJECT") or "twinfold"
        self.run = wandb.init(
            project=project,
            entity=settings.entity,
            name=settings.run_name or run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            mode=self.mode,  # type: ignore[arg-type]
            tags=settings.tags or None,
            config=cfg.model_dump(mode="json"),
            settings=wandb.Settings(console="off", silent=True),
            reinit="create_new",
        )
        self.last_step = resumed_from
        remember_run(run_dir, "wandb", {"id": self.run.id, "project": project})

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def version(self) -> str:
        return self.run.id

    def log_hyperparams(
        self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any
    ) -> None:
        values = vars(params) if isinstance(params, Namespace) else params
        self.run.config.update(values, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.last_step = self.last_step if step is None else step
        self.run.log(dict(metrics), step=self.last_step)

    def log_artifacts(self, files: list[Path]) -> None:
        """The plots as images at the last step, and every file in one ``model``
        artifact (the exported backbone under ``backbone/``)."""
        import wandb

        plots = {f"plots/{p.stem}": wandb.Image(str(p)) for p in files if p.suffix == ".png"}
        if plots:
            self.run.log(plots, step=self.last_step)
        artifact = wandb.Artifact(f"twinfold-{self.run.id}", type="model")
        for path in files:
            folder = "backbone/" if path.stem == "backbone" else ""
            artifact.add_file(str(path), name=folder + path.name)
        self.run.log_artifact(artifact)

    def finalize(self, status: str) -> None:
        if status == "preempted":
            self.run.mark_preempting()
        self.run.finish(exit_code=0 if status == "success" else 1)
