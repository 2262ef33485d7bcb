"""Weighted kNN classifier on L2-normalised features (Wu et al. 2018, eq. 6):
each of the k nearest training samples (cosine similarity s) votes for its class with
weight exp(s / T)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    *,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """Predicted labels of ``test_features``; memory stays O(chunk x train size)."""
    if train_features.shape[0] == 0:
        raise ValueError("kNN needs at least one training feature")
    if k > train_features.shape[0]:
        raise ValueError(
            f"k={k} is larger than the kNN memory bank ({train_features.shape[0]} samples); "
            "use a smaller evaluation.knn_k"
        )
    num_classes = num_classes or int(train_labels.max().item()) + 1
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    preds = []
    for start in range(0, test_features.shape[0], chunk_size):
        query = F.normalize(test_features[start : start + chunk_size].float(), dim=1)
        sims, idx = (query @ bank.T).topk(k, dim=1)
        weights = (sims / temperature).exp()
        votes = torch.zeros(query.shape[0], num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, labels[idx], weights)
        preds.append(votes.argmax(dim=1))
    return torch.cat(preds)


def knn_top1(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    **kwargs: object,
) -> float:
    """Top-1 accuracy (0..1) of :func:`knn_predict`."""
    pred = knn_predict(train_features, train_labels, test_features, **kwargs)  # type: ignore[arg-type]
    return (pred == test_labels.long()).float().mean().item()
