"""The training batches of one process: the seeded dataset, the resumable sampler and
loader, and, when the views component offers one, its batched view engine (uint8 images
collated in the workers, views made on the training device)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from twinfold.augment.collate import EncodedImages, EncodedViewsCollate
from twinfold.components import BatchedViewEngine, ViewPipeline
from twinfold.config import RunConfig
from twinfold.data.base import ImageSource
from twinfold.data.datasets import MultiViewDataset, SeededImageDataset
from twinfold.data.device_decode import decode_and_crop
from twinfold.data.loaders import ResumableSampler, build_train_loader, collate_views


@dataclass
class TrainingData:
    """Call :meth:`start_epoch` before iterating :attr:`loader` each epoch, and turn each
    batch into views with :meth:`make_views`."""

    dataset: MultiViewDataset | SeededImageDataset
    loader: DataLoader
    sampler: ResumableSampler
    engine: BatchedViewEngine | None
    batch_size: int
    steps_per_epoch: int
    channels_last: bool

    def start_epoch(self, epoch: int, step: int) -> None:
        """Select ``epoch``; a run resumed at ``step`` within it skips its done batches."""
        skip = step - epoch * self.steps_per_epoch
        self.sampler.set_epoch(epoch, skip=skip * self.batch_size)
        self.dataset.set_epoch(epoch)

    def make_views(self, batch: Any, fabric: Any) -> list[Tensor]:
        """The views of a batch on the training device (made there by the engine; JPEGs
        handed over encoded, ``data.decode_on: device``, decoded and cropped there first)."""
        if self.engine is not None:
            if isinstance(batch[0], EncodedImages):
                source = self.dataset.source
                batch = decode_and_crop(self.engine, batch, fabric.device, source)  # type: ignore[arg-type]
            views = self.engine.make_views(batch, fabric.device)
        else:
            views = fabric.to_device(batch)
        if self.channels_last:
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
        return views


def _jpeg_reduction(
    engine: BatchedViewEngine, limit: int, fixed_size: bool
) -> Callable[[int, int, int], int] | None:
    """How much smaller a sample's JPEG may be decoded (``data.jpeg_reduction``): for
    images of differing sizes cropped in the workers, by engines that can say
    (``jpeg_reduction(seed, height, width, limit)``, as :class:`BatchedViews` does)."""
    ask = getattr(engine, "jpeg_reduction", None)
    if fixed_size or limit == 1 or ask is None:
        return None
    return functools.partial(ask, limit=limit)


def training_data(
    cfg: RunConfig,
    train: ImageSource,
    pipeline: ViewPipeline,
    *,
    batched: bool,
    batch_size: int,
    world_size: int,
    rank: int,
    pin_memory: bool = False,
) -> TrainingData:
    """This process's share of ``train``: views seeded per (run seed, epoch, sample), by
    ``pipeline`` per sample in the workers, or by its batched engine when ``batched``;
    ``pin_memory`` puts the batches in page-locked memory (CUDA: asynchronous copies)."""
    engine = pipeline.batched_engine() if batched else None
    dataset: MultiViewDataset | SeededImageDataset
    if engine is not None:
        reduction = _jpeg_reduction(engine, cfg.data.jpeg_reduction, train.fixed_size)
        encoded = cfg.data.decode_on == "device"  # checked by twinfold.plan.check_decode_on
        dataset = SeededImageDataset(train, cfg.run.seed, reduction, encoded=encoded)
        collate: Any = (
            EncodedViewsCollate(engine)
            if encoded
            else engine.collate_fn(fixed_size=train.fixed_size)
        )
    else:
        dataset = MultiViewDataset(train, pipeline, cfg.run.seed)
        collate = collate_views
    loader, sampler = build_train_loader(
        dataset,
        batch_size,
        world_size=world_size,
        rank=rank,
        seed=cfg.run.seed,
        num_workers=int(cfg.data.num_workers),  # resolved by twinfold.plan.prepare_run
        collate_fn=collate,
        pin_memory=pin_memory,
    )
    channels_last = bool(cfg.trainer.channels_last)
    return TrainingData(dataset, loader, sampler, engine, batch_size, len(loader), channels_last)


__all__ = ["TrainingData", "training_data"]
