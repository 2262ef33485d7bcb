"""The resume policy, decided once before any process starts (:func:`decide_resume`):
which run directory a run writes to, whether it continues a checkpoint, and whether that
checkpoint may be continued with this config. The training processes only load what was
decided here."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinfold.checkpoint_format import check_components, read_checkpoint, verify_checksum
from twinfold.checkpoints import Checkpoints
from twinfold.config import RunConfig, load_config
from twinfold.errors import CheckpointError, ConfigError
from twinfold.fast_path import with_fast_settings
from twinfold.registry import Registry, default_registry
from twinfold.rundir import CHECKPOINT_DIR

MAY_CHANGE_ON_RESUME = (
    "preset",  # the resolved config is compared, not the preset's name
    "run.name",
    "run.output_dir",
    "run.resume",
    "run.overwrite",
    "run.force_resume",
    "run.keep_checkpoints",
    "run.checkpoint_every",
    "run.tensorboard",
    "run.trackers",
    "run.mlflow",
    "run.wandb",
    "run.plots",
    "trainer.stop_after",
    "trainer.log_every",
    "trainer.progress_bar",
    "trainer.collective_timeout_s",
    "data.num_workers",
    "evaluation",
)
"""Config keys (and key prefixes) that may differ between a checkpoint and the run that
resumes it: they decide where, how often and how verbosely, never what is computed."""


@dataclass  # not frozen: Fabric's spawn launcher copies the launch arguments field by field
class ResumeDecision:
    """The run directory's name (None: a fresh one named by the time at launch) and the
    checkpoint to continue (None: start at step 0)."""

    run_name: str | None
    checkpoint: Path | None
    step: int = 0


def run_directory(cfg: RunConfig, name: str) -> Path:
    """``run.output_dir / name``, which must lie inside ``run.output_dir`` (no ``..``,
    absolute path or symbolic link out of it)."""
    root = Path(cfg.run.output_dir)
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise ConfigError(
            [("run.name", f"'{name}' would write outside {root}; use a plain directory name")]
        )
    return path


def check_fresh(path: Path, cfg: RunConfig) -> None:
    """A run that does not resume may write to ``path`` only when it is absent or empty,
    or with ``run.overwrite``."""
    if path.exists() and any(path.iterdir()) and not cfg.run.overwrite:
        raise ConfigError(
            [
                (
                    "run.name",
                    f"run directory {path} is not empty; set run.resume=true to "
                    "continue it, run.overwrite=true to replace it, or choose another run.name",
                )
            ]
        )


def resolve_resume(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``run.resume='auto'`` decided: true when the named run directory
    holds a checkpoint; otherwise false, and the directory (left by an attempt that
    wrote no checkpoint) may be reused."""
    if cfg.run.resume != "auto":
        return cfg
    found = cfg.run.name is not None and (
        Checkpoints(Path(cfg.run.output_dir) / cfg.run.name / CHECKPOINT_DIR).latest() is not None
    )
    update = {"resume": True} if found else {"resume": False, "overwrite": True}
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=update)})


def decide_resume(cfg: RunConfig, registry: Registry) -> tuple[RunConfig, ResumeDecision]:
    """The one resume decision: ``cfg`` with ``run.resume`` resolved, and where to write
    and what to continue. A checkpoint to continue is read and checked here
    (:func:`check_resume`), so a refused one runs nothing."""
    fall_back = cfg.run.resume == "auto"
    cfg = resolve_resume(cfg)
    name = cfg.run.name
    if name is None:
        if cfg.run.resume:
            raise ConfigError(
                [("run.resume", "needs run.name: the name of the run directory to continue")]
            )
        return cfg, ResumeDecision(None, None)
    path = run_directory(cfg, name)
    if not cfg.run.resume:
        check_fresh(path, cfg)
        return cfg, ResumeDecision(name, None)
    latest = newest_intact(Checkpoints(path / CHECKPOINT_DIR), fall_back=fall_back)
    if latest is None:
        raise ConfigError(
            [
                (
                    "run.resume",
                    f"no checkpoint to resume at {path / CHECKPOINT_DIR}; "
                    "drop run.resume or name an existing run with run.name",
                )
            ]
        )
    state = check_resume(latest, cfg, registry, verified=True)  # hashed just above
    return cfg, ResumeDecision(name, latest, int(state["step"]))


def newest_intact(files: Checkpoints, *, fall_back: bool) -> Path | None:
    """The newest checkpoint whose checksum verifies (None when there is none). One
    that fails is an error, or with ``fall_back`` (``run.resume=auto``) a warning that
    names it, and the next older one is tried."""
    steps = [p for _, p in reversed(files.steps())]
    candidates = steps or ([files.last] if files.last.is_file() else [])
    failed: list[str] = []
    for path in candidates:
        try:
            verify_checksum(path)
        except CheckpointError as exc:
            if not fall_back:
                raise
            warnings.warn(f"{exc} Trying the next older checkpoint.", stacklevel=2)
            failed.append(path.name)
            continue
        return path
    if failed:
        raise CheckpointError(
            f"no checkpoint in {files.directory} passes its checksum ({', '.join(failed)}); "
            "start a new run (run.overwrite=true) or restore the files"
        )
    return None


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix]


def _may_change(key: str, allowed: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


def _with_current_defaults(saved: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """The saved config re-validated by this version, so a key added since (absent from
    the file) counts as its default (an ``auto`` step setting as resolved here) rather
    than as a change; unchanged if it no longer validates (the raw difference is then
    reported)."""
    try:
        resolved, _ = with_fast_settings(load_config(saved, registry=registry))
    except ConfigError:
        return saved
    return json.loads(resolved.model_dump_json())


def config_changes(
    saved_json: str, cfg: RunConfig, registry: Registry | None = None
) -> list[str]:
    """Dotted keys whose value differs between the checkpoint's config and ``cfg`` (whose
    step settings are resolved: :func:`twinfold.fast_path.with_fast_settings`), without
    those in :data:`MAY_CHANGE_ON_RESUME`. ``registry`` validates the saved config
    (default: the process-wide one)."""
    if "auto" in (cfg.trainer.precision, cfg.trainer.channels_last):
        raise ValueError("config_changes compares resolved configs; resolve cfg's step settings")
    saved = _with_current_defaults(json.loads(saved_json), registry or default_registry())
    now = json.loads(cfg.model_dump_json())
    return [k for k in _diff(saved, now, "") if not _may_change(k, MAY_CHANGE_ON_RESUME)]


def check_resume(
    path: Path, cfg: RunConfig, registry: Registry, *, verified: bool = False
) -> dict[str, Any]:
    """Read ``path`` and check that ``cfg`` may continue it: known components and no
    config change beyond :data:`MAY_CHANGE_ON_RESUME` unless ``run.force_resume``."""
    state = read_checkpoint(path, verified=verified)
    check_components(state, registry, path)
    changed = config_changes(state["config"], cfg, registry)
    if changed and not cfg.run.force_resume:
        raise CheckpointError(
            f"checkpoint {path} (step {state['step']}) was written with another config; "
            f"changed: {', '.join(changed)}. Restore those values, start a new run, or set "
            "run.force_resume=true to continue anyway (the result then differs from an "
            "uninterrupted run)."
        )
    return state


__all__ = [
    "MAY_CHANGE_ON_RESUME",
    "ResumeDecision",
    "check_resume",
    "config_changes",
    "decide_resume",
    "resolve_resume",
    "run_directory",
]
