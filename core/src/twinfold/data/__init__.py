"""Data: image sources, multi-view datasets and loaders."""

from __future__ import annotations

from dataclasses import dataclass

from twinfold.config.models import DataConfig
from twinfold.data.datasets import MultiViewDataset, PlainDataset, sample_seed
from twinfold.data.loaders import build_eval_loader, build_train_loader, collate_views
from twinfold.data.sources import (
    DigitsSource,
    FolderSource,
    ImageDecodeError,
    ImageSource,
    Subset,
    TorchvisionSource,
    digits_splits,
    split_indices,
)


@dataclass
class DataSources:
    """Training images, and the labelled kNN memory bank / held-out queries (or None)."""

    train: ImageSource
    eval_train: ImageSource | None
    eval_test: ImageSource | None


def build_sources(cfg: DataConfig) -> DataSources:
    """The sources a :class:`DataConfig` describes; fails before training on bad paths."""
    if cfg.dataset == "digits":
        train, held = digits_splits(cfg.image_size, cfg.holdout_fraction)
        return DataSources(train, train, held)
    if cfg.dataset == "folder":
        assert cfg.root is not None
        root = FolderSource(cfg.root, skip_bad=cfg.skip_bad_images)
        if cfg.eval_root is not None:
            labelled = FolderSource(
                cfg.eval_root, skip_bad=cfg.skip_bad_images, field="data.eval_root"
            )
            bank, held = _split(labelled, cfg.holdout_fraction)
            return DataSources(root, bank, held)
        if not root.labelled:
            return DataSources(root, None, None)
        train, held = _split(root, cfg.holdout_fraction)
        return DataSources(train, train, held)
    root = cfg.root or "data"
    if cfg.dataset == "stl10":
        return DataSources(
            TorchvisionSource("stl10", root, "unlabeled", cfg.download),
            TorchvisionSource("stl10", root, "train", cfg.download),
            TorchvisionSource("stl10", root, "test", cfg.download),
        )
    train_tv = TorchvisionSource(cfg.dataset, root, "train", cfg.download)
    return DataSources(
        train_tv, train_tv, TorchvisionSource(cfg.dataset, root, "test", cfg.download)
    )


def _split(source: ImageSource, fraction: float) -> tuple[Subset, Subset]:
    labels = [source.label(i) for i in range(len(source))]
    train, held = split_indices(labels, fraction)
    return Subset(source, train, "train"), Subset(source, held, "held-out")


__all__ = [
    "DataSources",
    "DigitsSource",
    "FolderSource",
    "ImageDecodeError",
    "ImageSource",
    "MultiViewDataset",
    "PlainDataset",
    "Subset",
    "TorchvisionSource",
    "build_eval_loader",
    "build_sources",
    "build_train_loader",
    "collate_views",
    "digits_splits",
    "sample_seed",
    "split_indices",
]
