"""Backbone features of a labelled dataset."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn


@torch.no_grad()
def extract_features(
    backbone: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device
) -> tuple[Tensor, Tensor]:
    """Run ``backbone`` in eval mode over ``(images, labels)`` batches, in the dtype of
    its parameters (float32 for a run trained in mixed precision, whose master weights
    are float32, so its numbers do not depend on the training precision); returns CPU
    float32 features ``[N, D]`` and labels ``[N]``. Restores the module's training flag."""
    was_training = backbone.training
    dtype = next((p.dtype for p in backbone.parameters()), torch.float32)
    backbone.eval()
    feats, labels = [], []
    try:
        for images, y in batches:
            feats.append(backbone(images.to(device, dtype)).float().cpu())
            labels.append(y.cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)
