"""Barlow Twins for twinfold (Zbontar et al. 2021, "Barlow Twins: Self-Supervised
Learning via Redundancy Reduction")."""

from twinfold_barlow_twins.heads import BarlowTwinsProjectorConfig
from twinfold_barlow_twins.loss import (
    BarlowTwinsLoss,
    BarlowTwinsLossConfig,
    barlow_terms,
    cross_correlation,
    global_batch_norm,
)
from twinfold_barlow_twins.views import BarlowTwinsViewsConfig

__all__ = [
    "BarlowTwinsLoss",
    "BarlowTwinsLossConfig",
    "BarlowTwinsProjectorConfig",
    "BarlowTwinsViewsConfig",
    "barlow_terms",
    "cross_correlation",
    "global_batch_norm",
]
