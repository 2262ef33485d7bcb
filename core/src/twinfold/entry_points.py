"""The installed distributions that provide twinfold plugins, read from their metadata
without importing them: no torch, so ``twinfold --version`` answers at once. The registry
walks the same entry points when it loads the plugins."""

from __future__ import annotations

import importlib.metadata as md
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ENTRY_POINT_GROUP = "twinfold"


@dataclass(frozen=True)
class PluginEntryPoint:
    """One entry point of the ``twinfold`` group and the distribution that declares it."""

    distribution: str
    version: str
    entry_point: md.EntryPoint


def plugin_entry_points(paths: Sequence[str] | None = None) -> Iterator[PluginEntryPoint]:
    """Every ``twinfold`` entry point of the distributions on ``paths`` (default:
    ``sys.path``), once per (distribution, entry-point name), in the order
    ``importlib.metadata`` finds the distributions (the first one on the path wins)."""
    dists = md.distributions(path=list(paths)) if paths is not None else md.distributions()
    seen: set[tuple[str, str]] = set()
    for dist in dists:
        name = dist.metadata["Name"] or "unknown"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or (name, ep.name) in seen:
                continue
            seen.add((name, ep.name))
            yield PluginEntryPoint(name, dist.version, ep)


def installed_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``"not installed"``."""
    try:
        return md.version(distribution)
    except md.PackageNotFoundError:
        return "not installed"


def versions_report(core_version: str) -> str:
    """What ``twinfold --version`` prints: the core, one line per plugin distribution
    (with its entry-point names), then the Python and main dependency versions."""
    plugins: dict[tuple[str, str], list[str]] = {}
    for found in plugin_entry_points():
        plugins.setdefault((found.distribution, found.version), []).append(found.entry_point.name)
    lines = [f"twinfold {core_version}"]
    for (dist, version), names in sorted(plugins.items()):
        label = "plugin" if len(names) == 1 else "plugins"
        lines.append(f"{dist} {version} ({label} {', '.join(sorted(names))})")
    if not plugins:
        lines.append("(no plugin distributions installed)")
    python = ".".join(map(str, sys.version_info[:3]))
    deps = ", ".join(
        f"{d} {installed_version(d)}" for d in ("torch", "torchvision", "lightning-fabric")
    )
    lines.append(f"Python {python}, {deps}")
    return "\n".join(lines)
