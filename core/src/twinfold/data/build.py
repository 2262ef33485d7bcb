"""From a :class:`DataConfig` to the training source and the kNN evaluation sources."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twinfold.config.models import DataConfig
from twinfold.data.base import ImageSource, Subset, split_source
from twinfold.data.digits import digits_splits
from twinfold.data.folder import FolderSource
from twinfold.data.torchvision_sets import TorchvisionSource
from twinfold.errors import ConfigError


@dataclass
class DataSources:
    """Training images; the labelled kNN memory bank and held-out queries, or None when
    there are no labels."""

    train: ImageSource
    eval_train: ImageSource | None
    eval_test: ImageSource | None


def _labelled_pair(
    bank: ImageSource, held: ImageSource, what: str
) -> tuple[ImageSource | None, ImageSource | None]:
    if len(bank) and len(held):
        return bank, held
    warnings.warn(f"no kNN evaluation: {what} is too small to split", stacklevel=3)
    return None, None


def folder_limits(cfg: DataConfig) -> dict[str, Any]:
    """The :class:`FolderSource` arguments for huge images and symbolic links."""
    return {"max_pixels": cfg.max_image_pixels, "symlinks": cfg.symlinks}


def _file_rules(cfg: DataConfig) -> dict[str, Any]:
    """How an image folder treats unreadable files, huge images and symbolic links."""
    return {"skip_bad": cfg.skip_bad_images, **folder_limits(cfg)}


def _folder_sources(cfg: DataConfig) -> DataSources:
    assert cfg.root is not None  # DataConfig requires it for 'folder'
    return _split_sources(FolderSource(cfg.root, **_file_rules(cfg)), cfg)


def _streaming_sources(cfg: DataConfig) -> DataSources:
    from twinfold.data.streaming import StreamingSource  # imports nothing of LitData yet

    assert cfg.root is not None  # DataConfig requires it for 'streaming'
    return _split_sources(StreamingSource(cfg.root, max_pixels=cfg.max_image_pixels), cfg)


def _split_sources(root: ImageSource, cfg: DataConfig) -> DataSources:
    """A labelled ``root`` split into train and held-out parts, or with ``eval_root``
    that folder for the kNN queries (and the bank too when ``root`` is unlabelled)."""
    if cfg.eval_root is None:
        if not root.labelled:
            return DataSources(root, None, None)
        train, held = split_source(root, cfg.holdout_fraction)
        return DataSources(train, *_labelled_pair(train, held, f"data.root '{cfg.root}'"))
    evals = FolderSource(cfg.eval_root, field="data.eval_root", **_file_rules(cfg))
    if not evals.labelled:
        raise ConfigError(
            [("data.eval_root", f"'{cfg.eval_root}' needs one sub-folder of images per class")]
        )
    if root.labelled:  # bank: all training images; queries: the evaluation folder
        if root.classes != evals.classes:
            raise ConfigError(
                [
                    (
                        "data.eval_root",
                        f"its classes {evals.classes} differ from those of data.root "
                        f"{root.classes}",
                    )
                ]
            )
        return DataSources(root, root, evals)
    bank, held = split_source(evals, cfg.holdout_fraction)
    return DataSources(root, *_labelled_pair(bank, held, f"data.eval_root '{cfg.eval_root}'"))


def build_sources(cfg: DataConfig) -> DataSources:
    """The sources ``cfg`` describes. Paths are checked here, before any training.

    * digits: fixed stratified split; the train part is also the kNN bank.
    * folder: a labelled root is split like the digits; with ``eval_root`` that folder
      holds the kNN queries (and, when the root is unlabelled, the bank as well).
    * streaming: the shards of ``twinfold data pack``, split as a folder is.
    * cifar10 / cifar100: train split for training and bank, test split for queries;
      stl10: the unlabelled split for training, train / test for evaluation.
    """
    if cfg.dataset == "digits":
        train, held = digits_splits(cfg.image_size, cfg.holdout_fraction)
        return DataSources(train, train, held)
    if cfg.dataset == "folder":
        return _folder_sources(cfg)
    if cfg.dataset == "streaming":
        return _streaming_sources(cfg)
    root = cfg.root if cfg.root is not None else "data"
    if cfg.dataset == "stl10":
        return DataSources(
            TorchvisionSource("stl10", root, "unlabeled", cfg.download),
            TorchvisionSource("stl10", root, "train", cfg.download),
            TorchvisionSource("stl10", root, "test", cfg.download),
        )
    train = TorchvisionSource(cfg.dataset, root, "train", cfg.download)
    return DataSources(train, train, TorchvisionSource(cfg.dataset, root, "test", cfg.download))


def log_skipped_files(sources: DataSources, log: Path) -> None:
    """Make every image folder behind ``sources`` append the files it skips to ``log``."""
    for source in (sources.train, sources.eval_train, sources.eval_test):
        while isinstance(source, Subset):
            source = source.base
        if isinstance(source, FolderSource):
            source.skip_log = log
