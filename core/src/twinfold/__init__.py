"""twinfold: non-contrastive self-supervised learning with pluggable methods.

The small, stable Python API::

    import twinfold
    twinfold.available("loss")                  # registered loss names
    loss = twinfold.create("loss", "byol")      # validated and built
    cfg = twinfold.load_config({"preset": "byol-small"}, overrides=["trainer.epochs=2"])
    result = twinfold.train(cfg)                # run directory and final metrics
    twinfold.embed(result.run_dir, "digits:test", "emb.npy")  # + emb.csv, emb.json

The names below are imported on first use (``import twinfold`` loads neither torch nor
pydantic), so the command line can install its stop-signal handlers before anything heavy
is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from twinfold.version import __version__ as __version__

if TYPE_CHECKING:
    from twinfold.components import (
        AugmentationConfig,
        BranchOutput,
        ComponentConfig,
        EncoderConfig,
        HeadConfig,
        Loss,
        LossConfig,
        StepProgress,
        TargetRule,
        TargetRuleConfig,
        ViewPipeline,
    )
    from twinfold.config import RunConfig, load_config
    from twinfold.embedding import EmbedResult, embed
    from twinfold.errors import (
        CheckpointError,
        ConfigError,
        ConflictError,
        NonFiniteLossError,
        PluginError,
        PluginLoadError,
        TwinfoldError,
        UnknownComponentError,
    )
    from twinfold.hookspecs import Kind, hookimpl
    from twinfold.loop import TrainResult
    from twinfold.records import Component, Preset
    from twinfold.registry import Registry, default_registry

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "AugmentationConfig",
            "BranchOutput",
            "ComponentConfig",
            "EncoderConfig",
            "HeadConfig",
            "Loss",
            "LossConfig",
            "StepProgress",
            "TargetRule",
            "TargetRuleConfig",
            "ViewPipeline",
        ),
        "twinfold.components",
    ),
    **dict.fromkeys(("RunConfig", "load_config"), "twinfold.config"),
    **dict.fromkeys(("EmbedResult", "embed"), "twinfold.embedding"),
    **dict.fromkeys(
        (
            "CheckpointError",
            "ConfigError",
            "ConflictError",
            "NonFiniteLossError",
            "PluginError",
            "PluginLoadError",
            "TwinfoldError",
            "UnknownComponentError",
        ),
        "twinfold.errors",
    ),
    **dict.fromkeys(("Kind", "hookimpl"), "twinfold.hookspecs"),
    **dict.fromkeys(("Component", "Preset"), "twinfold.records"),
    **dict.fromkeys(("Registry", "default_registry"), "twinfold.registry"),
}
"""Public name -> the module that defines it."""


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twinfold' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


def available(kind: str) -> list[str]:
    """Names registered for ``kind`` ('encoder', 'head', 'loss', 'target',
    'augmentation', 'preset')."""
    from twinfold.registry import default_registry

    return default_registry().available(kind)


def create(kind: str, name: str, **params: Any) -> Any:
    """Validate ``params`` with the component's config class and build the component,
    e.g. ``create("loss", "byol")``. Views need their output size, which a run fills
    from ``data.image_size``: ``create("augmentation", "byol-views", image_size=32)``."""
    from twinfold.registry import default_registry

    return default_registry().create(kind, name, **params)


def train(config: RunConfig | dict[str, Any] | str, **kwargs: Any) -> TrainResult:
    """Run a config (a RunConfig, mapping or YAML path); returns a TrainResult."""
    from twinfold.config import RunConfig, load_config
    from twinfold.loop import train as _train

    if not isinstance(config, RunConfig):
        config = load_config(config)
    return _train(config, **kwargs)


__all__ = [
    "AugmentationConfig",
    "BranchOutput",
    "CheckpointError",
    "Component",
    "ComponentConfig",
    "ConfigError",
    "ConflictError",
    "EmbedResult",
    "EncoderConfig",
    "HeadConfig",
    "Kind",
    "Loss",
    "LossConfig",
    "NonFiniteLossError",
    "PluginError",
    "PluginLoadError",
    "Preset",
    "Registry",
    "RunConfig",
    "StepProgress",
    "TargetRule",
    "TargetRuleConfig",
    "TwinfoldError",
    "UnknownComponentError",
    "ViewPipeline",
    "available",
    "create",
    "default_registry",
    "embed",
    "hookimpl",
    "load_config",
    "train",
]
