"""kNN evaluation during and at the end of training: rank 0 computes, every rank gets
the number."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from twinfold.config import RunConfig
from twinfold.data import DataSources
from twinfold.evaluation.knn import knn_top1
from twinfold.evaluation.offline import LabelledFeatures, labelled_features


def held_out_knn(
    fabric: Any, cfg: RunConfig, backbone: nn.Module, sources: DataSources, pipeline: Any
) -> tuple[float | None, LabelledFeatures | None]:
    """Weighted kNN top-1 of ``backbone`` on the held-out split (None without labels),
    and rank 0's features (None on the other ranks). Runs without autocast, in the
    parameters' dtype, as ``twinfold eval`` computes it afterwards; the images are
    decoded in the training's ``data.num_workers`` workers (resolved: a number)."""
    if sources.eval_train is None or sources.eval_test is None:
        return None, None
    acc = torch.zeros(1)
    feats = None
    if fabric.is_global_zero:
        workers = cfg.data.num_workers if isinstance(cfg.data.num_workers, int) else 0
        feats = labelled_features(
            cfg,
            backbone,
            device=fabric.device,
            sources=sources,
            pipeline=pipeline,
            num_workers=workers,
        )
        acc[0] = knn_top1(
            feats.train,
            feats.train_labels,
            feats.test,
            feats.test_labels,
            k=cfg.evaluation.knn_k,
            temperature=cfg.evaluation.knn_temperature,
        )
    return float(fabric.broadcast(acc, src=0)[0]), feats


__all__ = ["held_out_knn"]
