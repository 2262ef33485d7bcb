"""Batched, on-device view augmentation with per-sample random parameters (the
SimCLR / BYOL recipe of :mod:`twinfold.builtins.views`, for a whole uint8 batch)."""

from twinfold.augment.views import BatchedView, BatchedViews, ViewParams

__all__ = ["BatchedView", "BatchedViews", "ViewParams"]
