"""Registration records: what a plugin's hooks yield (architecture: "Registration record")."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twinfold.components import ComponentConfig


@dataclass(frozen=True)
class Component:
    """A component: its config class (whose ``name`` default is the component's name),
    the factory that builds it from a validated config, and a one-line summary."""

    config: type[ComponentConfig]
    factory: Callable[[Any], Any]
    summary: str

    @property
    def name(self) -> str:
        return self.config.component_name()


@dataclass(frozen=True)
class Preset:
    """A named default composition of a whole run.

    ``config`` is a partial run config (``method``, ``optimizer``, ``schedule``,
    ``data``, ...); a user's config is merged on top of it. ``deviations`` lists every
    place where a preset named after a paper departs from that paper's recipe.
    """

    name: str
    summary: str
    config: Mapping[str, Any]
    deviations: tuple[str, ...] = ()
    paper: str | None = None


@dataclass(frozen=True)
class Registered:
    """A record as the registry holds it: stamped with its kind and provider."""

    kind: str
    """The kind's name (a key of :data:`twinfold.hookspecs.KINDS`)."""
    name: str
    record: Component | Preset
    plugin: str
    """The entry point's name (``twinfold`` for the builtins; the key of
    ``Registry(plugins=...)`` for a plugin registered by hand)."""
    distribution: str
    """The distribution that declares the entry point (for a plugin registered by hand,
    its key in ``Registry(plugins=...)``, with the version ``local``)."""
    version: str

    @property
    def summary(self) -> str:
        return self.record.summary

    @property
    def provider(self) -> str:
        return f"{self.distribution} {self.version} (plugin '{self.plugin}')"


@dataclass
class BrokenPlugin:
    """An entry point that failed to load; kept so ``twinfold plugins`` can list it."""

    entry_point: str
    distribution: str
    error: str
    details: dict[str, str] = field(default_factory=dict)
    fix: str = ""
    """What to do about it: reinstall the distribution, or block the entry point."""
