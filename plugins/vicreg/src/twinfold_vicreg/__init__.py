"""VICReg for twinfold (Bardes et al. 2022, "Variance-Invariance-Covariance
Regularization for Self-Supervised Learning")."""

from twinfold_vicreg.heads import VICRegExpanderConfig
from twinfold_vicreg.loss import (
    VICRegLoss,
    VICRegLossConfig,
    covariance,
    gathered_centred,
    invariance,
    variance,
)
from twinfold_vicreg.views import VICRegViewsConfig

__all__ = [
    "VICRegExpanderConfig",
    "VICRegLoss",
    "VICRegLossConfig",
    "VICRegViewsConfig",
    "covariance",
    "gathered_centred",
    "invariance",
    "variance",
]
