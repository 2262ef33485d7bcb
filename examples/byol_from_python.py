"""Compose BYOL from the config classes in Python (no YAML, no preset) and train it on the
embedded digits. Run: ``python examples/byol_from_python.py --epochs 2``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import twinfold
from twinfold import RunConfig
from twinfold.builtins.encoders import SmallCNNConfig
from twinfold.config import (
    DataConfig,
    EvaluationConfig,
    MethodConfig,
    OptimizerConfig,
    RunSettings,
    TrainerConfig,
)
from twinfold.loop import TrainResult
from twinfold_byol.heads import BYOLPredictorConfig, BYOLProjectorConfig
from twinfold_byol.loss import BYOLLossConfig
from twinfold_byol.targets import EMATargetConfig
from twinfold_byol.views import BYOLViewsConfig


def build_config(
    epochs: int,
    output_dir: str,
    max_steps: int | None = None,
    evaluate: bool = True,
    batch_size: int = 128,
) -> RunConfig:
    """Every component is a config class: an editor completes its fields and a wrong
    value fails here, with the field's name, before anything runs."""
    return RunConfig(
        data=DataConfig(dataset="digits", image_size=16, batch_size=batch_size),
        method=MethodConfig(
            encoder=SmallCNNConfig(widths=[16, 32, 64]),
            projector=BYOLProjectorConfig(hidden_dims=[256], out_dim=64),
            predictor=BYOLPredictorConfig(hidden_dims=[256], out_dim=64),
            target=EMATargetConfig(tau_base=0.99),
            loss=BYOLLossConfig(),
            views=BYOLViewsConfig(),
        ),
        optimizer=OptimizerConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
        trainer=TrainerConfig(accelerator="cpu", epochs=epochs, max_steps=max_steps),
        run=RunSettings(output_dir=output_dir),
        evaluation=EvaluationConfig(at_end=evaluate, compare_random_init=evaluate),
    )


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--no-eval", action="store_true", help="skip the kNN evaluation")
    parser.add_argument("--output-dir", default="runs")
    args = parser.parse_args(argv)
    cfg = build_config(
        args.epochs, args.output_dir, args.max_steps, not args.no_eval, args.batch_size
    )
    result = twinfold.train(cfg)
    print(f"run directory: {result.run_dir}")
    print({k: round(v, 4) for k, v in result.metrics.items()})
    return result


if __name__ == "__main__":
    main()
