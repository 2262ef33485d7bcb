"""Experiment trackers (``run.trackers``): MLflow and Weights & Biases, each a small
Lightning Fabric :class:`~lightning_fabric.loggers.Logger` on the tracker's own client,
in its own module, imported only when a run asks for it (the core never imports a
tracker package otherwise).

A tracker listed but not installed is a config error before the run starts (exit 2,
naming the ``pip install`` fix); a tracker that fails later (unreachable server,
unwritable store, an error mid-run) warns once and the run goes on without it."""

from __future__ import annotations

import importlib
import importlib.util
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from twinfold.atomic_files import atomic_write_text
from twinfold.config.models import TrackerName

if TYPE_CHECKING:
    from lightning_fabric.loggers import Logger

    from twinfold.config import RunConfig

RUN_IDS_FILE = "trackers.json"
"""In the run directory: the tracker run each tracker logs to, so a resumed run
continues it."""


@dataclass(frozen=True)
class Tracker:
    """A tracker's name, the package it needs, and the class that logs to it."""

    name: str
    package: str
    logger: str
    """``module:Class`` of the Fabric logger."""

    @property
    def install(self) -> str:
        return f"pip install 'twinfold[{self.name}]'"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def logger_class(self) -> type[Logger]:
        module, cls = self.logger.split(":")
        return getattr(importlib.import_module(module), cls)


TRACKERS: dict[str, Tracker] = {
    "mlflow": Tracker("mlflow", "mlflow", "twinfold.trackers.mlflow_tracker:MlflowTracker"),
    "wandb": Tracker("wandb", "wandb", "twinfold.trackers.wandb_tracker:WandbTracker"),
}
assert set(TRACKERS) == set(get_args(TrackerName)), "one entry per run.trackers name"


def missing_trackers(cfg: RunConfig) -> list[tuple[str, str]]:
    """A ``(run.trackers, message)`` problem per listed tracker that is not installed."""
    return [
        ("run.trackers", f"'{name}' is not installed: {TRACKERS[name].install}, or remove it")
        for name in cfg.run.trackers
        if not TRACKERS[name].installed()
    ]


def open_trackers(cfg: RunConfig, run_dir: Path, resumed_from: int) -> list[Logger]:
    """The loggers of ``run.trackers`` for the run in ``run_dir`` (rank 0 only), each
    with the config logged; one that cannot start warns and is left out."""
    opened: list[Logger] = []
    for name in cfg.run.trackers:
        tracker = TRACKERS[name]
        try:
            opened.append(tracker.logger_class()(cfg, run_dir, resumed_from))
        except Exception as exc:  # a tracker must never stop a run
            warn_failed(name, exc, fix_hint(name))
    return opened


def fix_hint(name: str) -> str:
    """What to do about a tracker that failed."""
    return (
        f"check the run.{name} settings (and that the {name} store or server is reachable), "
        f"or remove {name} from run.trackers"
    )


def warn_failed(name: str, exc: BaseException, fix: str, stacklevel: int = 3) -> None:
    """The one warning of a tracker that failed: what happened, and the fix."""
    warnings.warn(
        f"tracker {name} failed ({type(exc).__name__}: {exc}); the run goes on without it "
        f"(metrics.csv has every row). Fix: {fix}",
        RuntimeWarning,
        stacklevel=stacklevel,
    )


def flat_params(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as ``{"dotted.key": "value"}``: strings as they are, anything
    else (numbers, booleans, null, lists) as JSON."""
    out: dict[str, str] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, dotted + "."))
        else:
            out[dotted] = value if isinstance(value, str) else json.dumps(value)
    return out


def remembered_run(run_dir: Path, name: str) -> dict[str, Any] | None:
    """What ``name`` stored about its run in ``run_dir`` (None when nothing)."""
    path = run_dir / RUN_IDS_FILE
    try:
        found = json.loads(path.read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def remember_run(run_dir: Path, name: str, info: dict[str, Any]) -> None:
    """Store ``info`` (the tracker's run id, ...) for ``name`` in ``trackers.json``."""
    path = run_dir / RUN_IDS_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    known[name] = info
    atomic_write_text(path, json.dumps(known, indent=2) + "\n")


__all__ = [
    "RUN_IDS_FILE",
    "TRACKERS",
    "Tracker",
    "flat_params",
    "missing_trackers",
    "open_trackers",
]
