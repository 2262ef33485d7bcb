"""Run configuration: models, loading, errors and schema."""

from twinfold.config.loading import dump_config, load_config, read_yaml
from twinfold.config.models import (
    DataConfig,
    EvaluationConfig,
    MethodConfig,
    OptimizerConfig,
    RunConfig,
    RunSettings,
    ScheduleConfig,
    TrainerConfig,
)

__all__ = [
    "DataConfig",
    "EvaluationConfig",
    "MethodConfig",
    "OptimizerConfig",
    "RunConfig",
    "RunSettings",
    "ScheduleConfig",
    "TrainerConfig",
    "dump_config",
    "load_config",
    "read_yaml",
]
