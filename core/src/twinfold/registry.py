"""The component registry: a pluggy manager, entry-point discovery and conflict checks.

The core's builtins are registered first, through the same hooks as any plugin. Entry
points of the ``twinfold`` group are then walked one by one (not with pluggy's silent
loader) so that a failure names its entry point and distribution, and a (kind, name)
claimed twice names both providers.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
import os
import re
import threading
import traceback
import warnings
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import pluggy
from pydantic import ValidationError

from twinfold import hookspecs
from twinfold.components import ComponentConfig
from twinfold.entry_points import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP
from twinfold.entry_points import plugin_entry_points
from twinfold.errors import (
    ConfigError,
    ConflictError,
    PluginError,
    PluginLoadError,
    UnknownComponentError,
)
from twinfold.first_party import install_hint, provider
from twinfold.hookspecs import KINDS, ComponentKind
from twinfold.records import BrokenPlugin, Component, Preset, Registered
from twinfold.validation import problems_from_validation

ENV_NO_PLUGINS = "TWINFOLD_NO_PLUGINS"
ENV_BLOCK = "TWINFOLD_BLOCK_PLUGINS"


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to load; components it provides are unavailable."""


def normalize(name: str) -> str:
    """Normalise a plugin or distribution name (PEP 503 style)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "unknown"


class Registry:
    """All components and presets known to one process.

    Args:
        entry_points: load plugins from the ``twinfold`` entry-point group.
        blocked: entry-point or distribution names never to import.
        paths: search these directories for distributions instead of ``sys.path``.
        plugins: extra plugin objects to register after the entry points, as
            ``{name: module_or_object}`` (handy in tests and notebooks).
        strict: raise :class:`PluginLoadError` at once when an entry point fails,
            instead of recording it as broken with a warning.
        kinds: the component kinds (default :data:`twinfold.hookspecs.KINDS`);
            ``specs`` holds the hook specs of any kind added there.
    """

    def __init__(
        self,
        *,
        entry_points: bool = True,
        blocked: Iterable[str] = (),
        paths: Sequence[str] | None = None,
        plugins: Mapping[str, object] | None = None,
        strict: bool = False,
        kinds: Mapping[str, ComponentKind] = KINDS,
        specs: Sequence[ModuleType] = (),
    ) -> None:
        self.kinds = dict(kinds)
        self.blocked = {normalize(b) for b in blocked if b}
        self.strict = strict
        self.broken: list[BrokenPlugin] = []
        self.skipped: list[str] = []
        self.conflicts: list[str] = []
        self._records: dict[tuple[str, str], Registered] = {}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        for module in (hookspecs, *specs):
            self.pm.add_hookspecs(module)

        from twinfold.builtins import plugin as builtins_plugin

        self._add_plugin("twinfold", builtins_plugin, "twinfold", _version("twinfold"))
        if entry_points:
            self._load_entry_points(paths)
        for name, obj in (plugins or {}).items():
            self._add_plugin(name, obj, name, "local")
        if self.conflicts:
            raise ConflictError("\n".join(self.conflicts))

    # ------------------------------------------------------------------ discovery
    def _load_entry_points(self, paths: Sequence[str] | None) -> None:
        for found in plugin_entry_points(paths):
            ep, dist_name = found.entry_point, found.distribution
            if normalize(ep.name) in self.blocked or normalize(dist_name) in self.blocked:
                self.skipped.append(f"{ep.name} ({dist_name})")
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                self._broken(ep.name, dist_name, ep.value, exc)
                continue
            self._add_plugin(ep.name, obj, dist_name, found.version)

    def _broken(self, ep_name: str, dist: str, target: str, exc: BaseException) -> None:
        fix = (
            f"Fix or reinstall '{dist}', or block it with {ENV_BLOCK}={ep_name} "
            f"(CLI: twinfold --block {ep_name} ...)."
        )
        message = (
            f"plugin entry point '{ep_name} = {target}' of distribution '{dist}' failed to "
            f"load: {type(exc).__name__}: {exc}. {fix}"
        )
        if self.strict:
            raise PluginLoadError(message) from exc
        tb = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        self.broken.append(BrokenPlugin(ep_name, dist, tb, {"target": target}, fix))
        warnings.warn(message, PluginLoadWarning, stacklevel=3)

    def _add_plugin(self, name: str, obj: object, dist: str, version: str) -> None:
        if self.pm.is_registered(obj) or self.pm.has_plugin(name):
            raise PluginError(f"plugin '{name}' ({dist}) is registered twice")
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:
            self._broken(name, dist, repr(obj), exc)
            return
        collected: list[Registered] = []
        try:
            for kind in self.kinds.values():
                for impl in getattr(self.pm.hook, kind.hook_name).get_hookimpls():
                    if impl.plugin is not obj:
                        continue
                    for rec in impl.function() or ():
                        collected.append(self._stamp(kind, rec, name, dist, version))
        except Exception as exc:
            self.pm.unregister(obj)
            self._broken(name, dist, repr(obj), exc)
            return
        for item in collected:
            key = (item.kind, item.name)
            if key in self._records:
                other = self._records[key]
                self.conflicts.append(
                    f"{item.kind} '{item.name}' is registered by both "
                    f"{other.provider} and {item.provider}. Uninstall one of them or block "
                    f"one with {ENV_BLOCK}=<plugin> (CLI: --block <plugin>)."
                )
                continue
            self._records[key] = item

    @staticmethod
    def _stamp(
        kind: ComponentKind, rec: object, plugin: str, dist: str, version: str
    ) -> Registered:
        base = kind.config_base
        if base is None:
            if not isinstance(rec, Preset):
                raise PluginError(f"{kind.hook_name} of '{plugin}' yielded {rec!r}, not a Preset")
            return Registered(kind.name, rec.name, rec, plugin, dist, version)
        if not isinstance(rec, Component):
            raise PluginError(
                f"{kind.hook_name} of '{plugin}' yielded {rec!r}, not a twinfold.Component"
            )
        if not (isinstance(rec.config, type) and issubclass(rec.config, base)):
            raise PluginError(
                f"{kind.name} registered by '{plugin}' has config class {rec.config!r}; "
                f"it must subclass {base.__module__}.{base.__name__}"
            )
        return Registered(kind.name, rec.name, rec, plugin, dist, version)

    # ------------------------------------------------------------------ lookups
    def records(self, kind: str | None = None) -> list[Registered]:
        """Every registered record (or those of one kind), sorted by kind and name; each
        says which plugin, distribution and version provide it (tests can check that a
        component arrives through the installed entry point)."""
        wanted = None if kind is None else self._kind(kind)
        return sorted(
            (r for r in self._records.values() if wanted is None or r.kind == wanted),
            key=lambda r: (r.kind, r.name),
        )

    def available(self, kind: str) -> list[str]:
        """Registered names of one kind, sorted."""
        return [r.name for r in self.records(self._kind(kind))]

    def get(self, kind: str, name: str) -> Registered:
        kind = self._kind(kind)
        found = self._records.get((kind, name))
        if found is not None:
            return found
        names = self.available(kind)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        msg = f"unknown {kind} '{name}'."
        if close:
            msg += f" Did you mean {' or '.join(repr(c) for c in close)}?"
        msg += f" Installed {kind} names: {', '.join(names) or '(none)'}."
        dist = provider(kind, name)
        if dist is not None and not any(f"({dist})" in s for s in self.skipped):
            msg += install_hint(dist, name)
        if self.broken:
            msg += " Plugins that failed to load: " + "; ".join(
                f"{b.entry_point} ({b.distribution}): {b.error}" for b in self.broken
            )
        if self.skipped:
            msg += f" Blocked plugins: {', '.join(self.skipped)}."
        raise UnknownComponentError(msg)

    def preset(self, name: str) -> Preset:
        rec = self.get("preset", name).record
        assert isinstance(rec, Preset)
        return rec

    def config_class(self, kind: str, name: str) -> type[ComponentConfig]:
        kind = self._kind(kind)
        if self.kinds[kind].config_base is None:
            raise PluginError(f"{kind} records have no config class; use Registry.get")
        rec = self.get(kind, name).record
        assert isinstance(rec, Component)
        return rec.config

    def validate(self, kind: str, data: Mapping[str, Any]) -> ComponentConfig:
        """Validate a ``{"name": ..., **params}`` mapping with the named config class."""
        name = data.get("name")
        if not isinstance(name, str):
            raise UnknownComponentError(
                f"a {self._kind(kind)} config needs a 'name'; installed: "
                f"{', '.join(self.available(kind))}"
            )
        return self.config_class(kind, name).model_validate(dict(data))

    def build(self, config: ComponentConfig) -> Any:
        """Build the component described by a validated config instance."""
        kind = self.kind_of(config)
        rec = self.get(kind, config.name)
        assert isinstance(rec.record, Component)
        if not isinstance(config, rec.record.config):
            raise PluginError(
                f"{kind} '{config.name}' is registered by {rec.provider} with config "
                f"class {rec.record.config.__qualname__}, but got a "
                f"{type(config).__qualname__}"
            )
        try:
            return rec.record.factory(config)
        except (ValueError, TypeError, KeyError, AssertionError) as exc:
            raise ConfigError(
                [
                    (
                        f"{kind} '{config.name}'",
                        f"its factory (from {rec.provider}) refused the config: "
                        f"{type(exc).__name__}: {exc}",
                    )
                ]
            ) from exc

    def create(self, kind: str, name: str, **params: Any) -> Any:
        """Validate ``params`` with the component's config class and build it. A views
        component needs ``image_size`` here (a run fills it from ``data.image_size``)."""
        cls = self.config_class(kind, name)
        try:
            config = cls(name=name, **params)
        except ValidationError as exc:
            raise ConfigError(problems_from_validation(exc), source=f"{kind} '{name}'") from None
        return self.build(config)

    def kind_of(self, config: ComponentConfig) -> str:
        """The kind whose config base ``config`` is an instance of."""
        for kind in self.kinds.values():
            if kind.config_base is not None and isinstance(config, kind.config_base):
                return kind.name
        raise PluginError(f"{type(config).__qualname__} subclasses no component config base")

    def _kind(self, kind: str) -> str:
        name = str(getattr(kind, "value", kind))
        if name not in self.kinds:
            raise UnknownComponentError(
                f"unknown component kind '{name}'; kinds: {', '.join(self.kinds)}"
            )
        return name


# ---------------------------------------------------------------------- default registry
_default: Registry | None = None
_default_key: tuple[bool, frozenset[str]] | None = None
_lock = threading.Lock()


def _env_settings() -> tuple[bool, frozenset[str]]:
    off = os.environ.get(ENV_NO_PLUGINS, "").strip().lower() in {"1", "true", "yes", "on"}
    blocked = frozenset(
        normalize(b) for b in re.split(r"[,\s]+", os.environ.get(ENV_BLOCK, "")) if b
    )
    return off, blocked


def default_registry() -> Registry:
    """The process-wide registry, built once from the environment settings
    (``TWINFOLD_NO_PLUGINS``, ``TWINFOLD_BLOCK_PLUGINS``) and rebuilt if they change."""
    global _default, _default_key
    key = _env_settings()
    with _lock:
        if _default is None or key != _default_key:
            _default = Registry(entry_points=not key[0], blocked=key[1])
            _default_key = key
        return _default


def set_default_registry(registry: Registry | None) -> None:
    """Replace (or with ``None`` forget) the process-wide registry."""
    global _default, _default_key
    with _lock:
        _default = registry
        _default_key = _env_settings() if registry is not None else None
