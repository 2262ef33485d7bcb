"""BYOL for twinfold (Grill et al. 2020, "Bootstrap your own latent")."""

from twinfold_byol.loss import BYOLLoss, BYOLLossConfig
from twinfold_byol.targets import (
    EMATarget,
    EMATargetConfig,
    ScaledCopyTarget,
    ScaledCopyTargetConfig,
    ema_tau,
)

__all__ = [
    "BYOLLoss",
    "BYOLLossConfig",
    "EMATarget",
    "EMATargetConfig",
    "ScaledCopyTarget",
    "ScaledCopyTargetConfig",
    "ema_tau",
]
