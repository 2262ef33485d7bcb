"""Reading configs from YAML files or mappings, with overrides, into a RunConfig."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinfold.config.errors import problems_from_validation
from twinfold.config.merge import apply_overrides, deep_merge
from twinfold.config.models import RunConfig
from twinfold.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with the safe loader (no Python tags)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([("", f"config file '{path}' does not exist")], source=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError([("", f"not valid (safe) YAML: {exc}")], source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([("", "the top level must be a mapping")], source=str(path))
    return data


def load_config(
    source: str | Path | Mapping[str, Any] | RunConfig | None = None,
    overrides: Iterable[str] = (),
    *,
    registry: Any = None,
) -> RunConfig:
    """Validate a run config from a YAML path, a mapping or a RunConfig, plus
    ``key.path=value`` overrides. Raises :class:`ConfigError` listing every problem."""
    label = str(source) if isinstance(source, str | Path) else None
    if isinstance(source, RunConfig):
        data = source.model_dump(mode="json")
    elif isinstance(source, Mapping):
        data = dict(source)
    elif source is None:
        data = {}
    else:
        data = read_yaml(source)
    try:
        data = apply_overrides(data, overrides)
    except ValueError as exc:
        raise ConfigError([("--set", str(exc))], source=label) from None
    if "method" not in data and "preset" not in data:
        raise ConfigError(
            [("preset", "give a preset (e.g. 'byol-small') or a full 'method' composition")],
            source=label,
        )
    context = {"registry": registry} if registry is not None else None
    try:
        return RunConfig.model_validate(data, context=context)
    except ValidationError as exc:
        hints = _with_preset(data, registry)
        raise ConfigError(problems_from_validation(exc, RunConfig, hints), source=label) from None


def _with_preset(data: dict[str, Any], registry: Any) -> dict[str, Any]:
    """``data`` merged onto its preset (if any), to give hints about nested keys."""
    from twinfold.registry import default_registry

    try:
        preset = (registry or default_registry()).preset(data["preset"])
    except Exception:
        return data
    return deep_merge(dict(preset.config), data)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    data = json.loads(config.model_dump_json())
    return yaml.safe_dump(data, sort_keys=False)
