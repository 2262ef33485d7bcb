"""SimSiam for twinfold (Chen & He 2021, "Exploring Simple Siamese Representation
Learning")."""

from twinfold_simsiam.heads import SimSiamPredictorConfig, SimSiamProjectorConfig
from twinfold_simsiam.loss import SimSiamLoss, SimSiamLossConfig
from twinfold_simsiam.targets import StopGradient, StopGradientConfig
from twinfold_simsiam.views import SimSiamViewsConfig

__all__ = [
    "SimSiamLoss",
    "SimSiamLossConfig",
    "SimSiamPredictorConfig",
    "SimSiamProjectorConfig",
    "SimSiamViewsConfig",
    "StopGradient",
    "StopGradientConfig",
]
