"""ViT presets: a tiny ViT with VICReg on the embedded digits (CPU minutes)."""

from __future__ import annotations

from twinfold import Preset
from twinfold.builtins.recipes import ASYMMETRIC_PROBABILITIES, digits_views_section

VICREG_PAPER = "Bardes, Ponce & LeCun 2022, VICReg (arXiv:2105.04906)"

TINY_VIT = {
    "name": "timm",
    "model": "vit_tiny_patch16_224",
    "img_size": 16,
    "patch_size": 4,
    "kwargs": {"depth": 4, "embed_dim": 96, "num_heads": 3},
}
"""A 4-block, 96-wide ViT on 16 px inputs cut into 4 px patches (16 tokens + class token)."""

VICREG_VIT_SMALL = Preset(
    name="vicreg-vit-small",
    summary="VICReg with a tiny ViT on the embedded digits, AdamW, a few CPU minutes",
    paper=VICREG_PAPER,
    config={
        "data": {"dataset": "digits", "image_size": 16, "batch_size": 256},
        "method": {
            "encoder": TINY_VIT,
            "projector": {"name": "vicreg-expander", "hidden_dims": [512, 512], "out_dim": 512},
            "target": {"name": "none"},
            "loss": {"name": "vicreg"},
            "views": digits_views_section("vicreg-views", ASYMMETRIC_PROBABILITIES),
        },
        "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05, "clip_grad_norm": 3.0},
        "schedule": {"warmup_epochs": 2, "final_lr_ratio": 0.01},
        "trainer": {"epochs": 10, "accelerator": "cpu", "log_every": 5},
        "evaluation": {"every_n_epochs": 5},
    },
    deviations=(
        "Not the paper's recipe (a ResNet-50 with LARS): a 4-block, 96-wide ViT "
        "(timm vit_tiny_patch16_224 with depth 4, embed_dim 96, 3 heads) on the embedded 8x8 "
        "digits upscaled to 16 px in 4 px patches, a 512-512-512 expander, batch 256, "
        "10 epochs.",
        "ViT optimisation instead of LARS: AdamW base lr 1e-3 x B/256, weight decay 0.05 "
        "(none on biases, norms, position embedding and class token), 2 warm-up epochs, "
        "cosine to 0.01x, gradients clipped to norm 3.",
        "Views: crop area (0.3, 1), no flip, no hue/saturation jitter and no grayscale "
        "(digits are grey and not mirror-symmetric).",
    ),
)
