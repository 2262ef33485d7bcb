"""Frozen-backbone features of the labelled evaluation splits a config describes (the
kNN memory bank / linear-probe training split and the held-out queries)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from twinfold.components import ViewPipeline
from twinfold.config import RunConfig
from twinfold.data import DataSources, PlainDataset, build_eval_loader, build_sources
from twinfold.errors import ConfigError
from twinfold.evaluation.features import extract_features
from twinfold.registry import Registry


@dataclass
class LabelledFeatures:
    train: Tensor
    train_labels: Tensor
    test: Tensor
    test_labels: Tensor


def eval_pipeline(cfg: RunConfig, registry: Registry) -> ViewPipeline:
    """The run's view pipeline (its ``plain`` transform is the evaluation transform)."""
    return registry.build(cfg.views_config())


def labelled_features(
    cfg: RunConfig,
    backbone: nn.Module,
    *,
    pipeline: ViewPipeline,
    device: torch.device | str = "cpu",
    batch_size: int = 512,
    sources: DataSources | None = None,
    num_workers: int = 0,
) -> LabelledFeatures:
    """Features of the evaluation splits of ``cfg.data`` (or of ``sources``), made with
    ``pipeline.plain`` (:func:`eval_pipeline`), images decoded in ``num_workers``
    data-loader workers; raises ConfigError without labels."""
    sources = sources or build_sources(cfg.data)
    if sources.eval_train is None or sources.eval_test is None:
        raise ConfigError(
            [
                (
                    "data",
                    f"dataset '{cfg.data.dataset}' has no labelled evaluation split; use "
                    "digits, a torchvision dataset, or an image folder with one sub-folder "
                    "per class (data.root or data.eval_root)",
                )
            ]
        )
    device = torch.device(device)
    bank = build_eval_loader(PlainDataset(sources.eval_train, pipeline), batch_size, num_workers)
    test = build_eval_loader(PlainDataset(sources.eval_test, pipeline), batch_size, num_workers)
    backbone = backbone.to(device)
    xb, yb = extract_features(backbone, bank, device)
    xt, yt = extract_features(backbone, test, device)
    return LabelledFeatures(xb, yb, xt, yt)
