"""Start from a registered preset and swap one component: ``byol-small`` with a ResNet-18
(small-image stem) instead of its small CNN. Everything else (heads, EMA target, loss,
views, optimizer, schedule) stays the preset's. Run:
``python examples/preset_swap_encoder.py --epochs 2``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import twinfold
from twinfold import RunConfig
from twinfold.builtins.encoders import ResNetConfig
from twinfold.loop import TrainResult


def build_config(
    preset: str = "byol-small",
    encoder: ResNetConfig | None = None,
    overrides: Sequence[str] = (),
) -> RunConfig:
    """The preset's config with ``method.encoder`` replaced. The projector's input width
    follows the new encoder (the method reads ``encoder.out_dim``), so nothing else
    changes. ``overrides`` are dotted ``key=value`` strings, as on the command line."""
    cfg = twinfold.load_config({"preset": preset}, overrides=list(overrides))
    # configs validate on assignment: a wrong type fails here, naming the field
    cfg.method.encoder = encoder or ResNetConfig(arch="resnet18", small_stem=True)
    return cfg


def main(argv: Sequence[str] | None = None) -> TrainResult:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="byol-small")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    cfg = build_config(args.preset, overrides=[f"trainer.epochs={args.epochs}", *args.set])
    print(f"encoder: {cfg.method.encoder!r}")
    result = twinfold.train(cfg)
    print(f"run directory: {result.run_dir}")
    print({k: round(v, 4) for k, v in result.metrics.items()})
    return result


if __name__ == "__main__":
    main()
