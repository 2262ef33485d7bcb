"""Deep merge of config mappings and ``a.b=value`` overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` onto ``base``. A mapping whose ``name`` differs from the one
    in ``base`` replaces it whole (a different component keeps none of the old params)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        old = out.get(key)
        if (
            isinstance(old, Mapping)
            and isinstance(value, Mapping)
            and ("name" not in value or value.get("name") == old.get("name"))
        ):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optimizer.lr=0.1"`` -> ``(["optimizer", "lr"], 0.1)``; the value is YAML."""
    if "=" not in text:
        raise ValueError(f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ValueError(f"override '{text}' has an empty key segment")
    return parts, yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    out = copy.deepcopy(dict(data))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out
