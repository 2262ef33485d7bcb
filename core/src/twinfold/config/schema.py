"""JSON schema of the run config with the installed components, for editors."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, create_model

from twinfold.config import models
from twinfold.registry import Registry, default_registry


def _union(registry: Registry, kind: str) -> Any:
    classes = tuple(registry.config_class(kind, n) for n in registry.available(kind))
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """The JSON schema of :class:`RunConfig` where each component slot is the union of
    the installed config classes, discriminated by ``name``."""
    registry = registry or default_registry()
    slots: dict[str, Any] = {}
    for slot, kind in models.SLOTS.items():
        field = models.MethodConfig.model_fields[slot]
        union = _union(registry, kind)
        slots[slot] = (union, ...) if field.is_required() else (union | None, field.default)
    method = create_model("MethodConfig", __base__=models.StrictModel, **slots)
    presets = tuple(registry.available("preset")) or ("",)
    run = create_model(
        "RunConfig",
        __base__=models.StrictModel,
        preset=(Literal[presets] | None, None),  # type: ignore[valid-type]
        data=(models.DataConfig, Field(default_factory=models.DataConfig)),
        method=(method | None, None),
        optimizer=(models.OptimizerConfig, Field(default_factory=models.OptimizerConfig)),
        schedule=(models.ScheduleConfig, Field(default_factory=models.ScheduleConfig)),
        trainer=(models.TrainerConfig, Field(default_factory=models.TrainerConfig)),
        run=(models.RunSettings, Field(default_factory=models.RunSettings)),
        evaluation=(models.EvaluationConfig, Field(default_factory=models.EvaluationConfig)),
    )
    schema = run.model_json_schema()
    schema["description"] = "twinfold run config (installed components only)"
    return schema
