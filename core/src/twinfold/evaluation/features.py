"""Backbone features of a labelled dataset."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Run ``backbone`` in eval mode over ``(images, labels)`` batches; returns CPU
    features ``[N, D]`` and labels ``[N]``. Restores the module's training flag."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for images, y in batches:
            feats.append(backbone(images.to(device)).float().cpu())
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
