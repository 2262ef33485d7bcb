"""DINO for twinfold (Caron et al. 2021, "Emerging properties in self-supervised vision
transformers"): loss with a synchronised centre, head, multi-crop views and presets. The
EMA teacher is the ``ema`` target rule of twinfold-byol, used by name."""

from twinfold_dino.head import DINOHead, DINOHeadConfig
from twinfold_dino.loss import DINOLoss, DINOLossConfig, teacher_temperature
from twinfold_dino.views import DINOViewsConfig, dino_views, multi_crop

__all__ = [
    "DINOHead",
    "DINOHeadConfig",
    "DINOLoss",
    "DINOLossConfig",
    "DINOViewsConfig",
    "dino_views",
    "multi_crop",
    "teacher_temperature",
]
