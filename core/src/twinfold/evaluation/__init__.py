"""Evaluation of backbones: weighted kNN (and feature extraction)."""

from twinfold.evaluation.features import extract_features
from twinfold.evaluation.knn import knn_predict, knn_top1

__all__ = ["extract_features", "knn_predict", "knn_top1"]
