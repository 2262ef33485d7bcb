"""Exceptions raised by twinfold. Every message names the culprit and the fix."""

from __future__ import annotations


class TwinfoldError(Exception):
    """Base class of every error twinfold raises on purpose."""


class ConfigError(TwinfoldError):
    """A run or component configuration is invalid.

    ``problems`` holds one ``(dotted.path, message)`` pair per problem so that
    every error of a config is reported at once.
    """

    def __init__(self, problems: list[tuple[str, str]], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = [f"{len(problems)} problem(s) in the configuration{where}:"]
        lines += [f"  {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(TwinfoldError):
    """A plugin could not be loaded or is inconsistent."""


class PluginLoadError(PluginError):
    """An entry point of the ``twinfold`` group failed to import or register."""


class ConflictError(PluginError):
    """Two plugins register the same (kind, name)."""


class UnknownComponentError(TwinfoldError, KeyError):
    """A component name is not registered for its kind."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointError(TwinfoldError):
    """A checkpoint is missing, corrupt or belongs to another configuration."""


class NonFiniteLossError(TwinfoldError):
    """The loss or the gradients became NaN or infinite."""
