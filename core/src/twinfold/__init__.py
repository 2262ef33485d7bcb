"""twinfold: non-contrastive self-supervised learning with pluggable methods.

The small, stable Python API::

    import twinfold
    twinfold.available("loss")                  # registered loss names
    loss = twinfold.create("loss", "byol")      # validated and built
    cfg = twinfold.load_config({"preset": "byol-small"}, overrides=["trainer.epochs=2"])
    result = twinfold.train(cfg)                # run directory and final metrics
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twinfold.components import (
    AugmentationConfig,
    BranchOutput,
    ComponentConfig,
    EncoderConfig,
    HeadConfig,
    Loss,
    LossConfig,
    TargetRule,
    TargetRuleConfig,
    ViewPipeline,
)
from twinfold.config import RunConfig, load_config
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
from twinfold.records import Component, Preset
from twinfold.registry import Registry, default_registry
from twinfold.version import __version__ as __version__

if TYPE_CHECKING:
    from twinfold.loop import TrainResult

def available(kind: str) -> list[str]:
    """Names registered for ``kind`` ('encoder', 'head', 'loss', 'target',
    'augmentation', 'preset')."""
    return default_registry().available(kind)


def create(kind: str, name: str, **params: Any) -> Any:
    """Validate ``params`` with the component's config class and build the component."""
    return default_registry().create(kind, name, **params)


def train(config: RunConfig | dict[str, Any] | str, **kwargs: Any) -> TrainResult:
    """Run a config (a RunConfig, mapping or YAML path); returns a TrainResult."""
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
    "TargetRule",
    "TargetRuleConfig",
    "TwinfoldError",
    "UnknownComponentError",
    "ViewPipeline",
    "available",
    "create",
    "default_registry",
    "hookimpl",
    "load_config",
    "train",
]
