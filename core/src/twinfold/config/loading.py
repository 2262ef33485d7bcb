"""Reading configs from YAML files or mappings, with overrides, into a RunConfig."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from twinfold.config.merge import apply_overrides, deep_merge
from twinfold.config.models import RunConfig
from twinfold.errors import ConfigError, UnknownComponentError
from twinfold.registry import Registry, default_registry
from twinfold.validation import problems_from_validation


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
    registry: Registry | None = None,
) -> RunConfig:
    """Validate a run config from a YAML path, a mapping or a RunConfig, plus
    ``key.path=value`` overrides, with the components of ``registry`` (default: the
    process-wide one). Raises :class:`ConfigError` listing every problem."""
    registry = registry or default_registry()
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
    try:
        return RunConfig.model_validate(data, context={"registry": registry})
    except ValidationError as exc:
        hints = _with_preset(data, registry)
        problems = problems_from_validation(exc, RunConfig, hints, registry=registry)
        raise ConfigError(problems, source=label) from None


def _with_preset(data: dict[str, Any], registry: Registry) -> dict[str, Any]:
    """``data`` merged onto its preset (if it names a registered one), to give hints
    about nested keys."""
    name = data.get("preset")
    if not isinstance(name, str):
        return data
    try:
        preset = registry.preset(name)
    except UnknownComponentError:
        return data
    return deep_merge(dict(preset.config), data)


def dump_config(config: RunConfig) -> str:
    """The resolved config as YAML (every default filled in)."""
    data = json.loads(config.model_dump_json())
    return yaml.safe_dump(data, sort_keys=False)
