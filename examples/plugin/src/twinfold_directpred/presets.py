"""DirectPred's preset. It composes the predictor of this package with components of
another plugin (twinfold-byol: projector, EMA target, loss, views) by registry name only."""

from __future__ import annotations

from twinfold import Preset
from twinfold.builtins.recipes import ASYMMETRIC_PROBABILITIES, digits_views_section

PAPER = (
    "Tian, Chen & Ganguli 2021, Understanding self-supervised learning dynamics without "
    "contrastive pairs (ICML, arXiv:2102.06810)"
)


DIRECTPRED_SMALL = Preset(
    name="directpred-small",
    summary="DirectPred (BYOL with a directly set linear predictor) on the embedded digits",
    paper=PAPER,
    config={
        "data": {"dataset": "digits", "image_size": 16, "batch_size": 256},
        "method": {
            "encoder": {"name": "small-cnn", "widths": [32, 64, 128], "blocks_per_stage": 1},
            "projector": {"name": "byol-projector", "hidden_dims": [512], "out_dim": 128},
            "predictor": {"name": "directpred", "rho": 0.3, "eps": 0.01, "freq": 1},
            "target": {"name": "ema", "tau_base": 0.99},
            "loss": {"name": "byol"},
            "views": digits_views_section("byol-views", ASYMMETRIC_PROBABILITIES),
        },
        "optimizer": {"name": "lars", "lr": 0.45, "weight_decay": 1e-6},
        "schedule": {"warmup_epochs": 2, "final_lr_ratio": 0.0},
        "trainer": {"epochs": 40, "accelerator": "cpu", "log_every": 5},
    },
    deviations=(
        "Not the paper's setting (BYOL on STL-10 / ImageNet with a linear DirectPred "
        "predictor): embedded 8x8 digits upscaled to 16 px, a small residual CNN, a "
        "512-wide projector with 128-d outputs, batch 256, 40 epochs, LARS with base lr "
        "0.45, tau_base 0.99.",
        "Views: BYOL's asymmetric pair with crop area (0.3, 1), no flip, no hue/saturation "
        "jitter and no grayscale (digits are grey and not mirror-symmetric).",
    ),
)
