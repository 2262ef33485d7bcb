"""Data: image sources, multi-view and plain datasets, and loaders."""

from __future__ import annotations

from twinfold.data.base import ImageDecodeError, ImageSource, Subset, split_indices
from twinfold.data.build import DataSources, build_sources
from twinfold.data.datasets import (
    MultiViewDataset,
    PlainDataset,
    SeededImageDataset,
    sample_seed,
)
from twinfold.data.digits import DigitsSource, digits_splits
from twinfold.data.folder import FolderSource, decode_file
from twinfold.data.loaders import (
    BatchedViewsCollate,
    CroppedViewsCollate,
    ResumableSampler,
    build_eval_loader,
    build_train_loader,
    collate_views,
)
from twinfold.data.torchvision_sets import TorchvisionSource

__all__ = [
    "BatchedViewsCollate",
    "CroppedViewsCollate",
    "DataSources",
    "DigitsSource",
    "FolderSource",
    "ImageDecodeError",
    "ImageSource",
    "MultiViewDataset",
    "PlainDataset",
    "ResumableSampler",
    "SeededImageDataset",
    "Subset",
    "TorchvisionSource",
    "build_eval_loader",
    "build_sources",
    "build_train_loader",
    "collate_views",
    "decode_file",
    "digits_splits",
    "sample_seed",
    "split_indices",
]
