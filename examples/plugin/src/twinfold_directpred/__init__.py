"""DirectPred for twinfold (Tian, Chen & Ganguli 2021): a third-party plugin example."""

from twinfold_directpred.predictor import (
    DirectPredConfig,
    DirectPredictor,
    correlation_update,
    directpred_weight,
)

__all__ = ["DirectPredConfig", "DirectPredictor", "correlation_update", "directpred_weight"]
