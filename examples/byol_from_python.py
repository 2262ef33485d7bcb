"""Compose BYOL from the config classes in Python (no YAML) and train it on the embedded
digits. Run: ``python examples/byol_from_python.py --epochs 2``."""

from __future__ import annotations

import argparse

import twinfold
from twinfold import RunConfig
from twinfold.builtins.encoders import SmallCNNConfig
from twinfold.config import DataConfig, MethodConfig, OptimizerConfig, RunSettings, TrainerConfig
from twinfold_byol.heads import BYOLPredictorConfig, BYOLProjectorConfig
from twinfold_byol.loss import BYOLLossConfig
from twinfold_byol.targets import EMATargetConfig
from twinfold_byol.views import BYOLViewsConfig


def build_config(epochs: int, output_dir: str) -> RunConfig:
    return RunConfig(
        data=DataConfig(dataset="digits", image_size=16, batch_size=128),
        method=MethodConfig(
            encoder=SmallCNNConfig(widths=[16, 32, 64]),
            projector=BYOLProjectorConfig(hidden_dims=[256], out_dim=64),
            predictor=BYOLPredictorConfig(hidden_dims=[256], out_dim=64),
            target=EMATargetConfig(tau_base=0.99),
            loss=BYOLLossConfig(),
            views=BYOLViewsConfig(),
        ),
        optimizer=OptimizerConfig(name="adamw", lr=2e-3, weight_decay=1e-4),
        trainer=TrainerConfig(accelerator="cpu", epochs=epochs),
        run=RunSettings(output_dir=output_dir),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--output-dir", default="runs")
    args = parser.parse_args()
    result = twinfold.train(build_config(args.epochs, args.output_dir))
    print(f"run directory: {result.run_dir}")
    print({k: round(v, 4) for k, v in result.metrics.items()})


if __name__ == "__main__":
    main()
