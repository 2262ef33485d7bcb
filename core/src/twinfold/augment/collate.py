"""Collate functions of the batched view engine (:class:`~twinfold.augment.BatchedViews`):
they run in the data-loader workers and turn ``(uint8 image, index, seed)`` samples
into a uint8 batch plus each sample's view parameters, drawn from its own seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from twinfold.augment.views import BatchedViews, ViewParams


class BatchedViewsCollate:
    """Collates :class:`~twinfold.data.datasets.SeededImageDataset` items to
    ``(images uint8 [B, 3, H, W], indices int64 [B], params)``, ``params`` holding one
    :class:`~twinfold.augment.ViewParams` per view, drawn per sample from its seed
    (:meth:`BatchedViews.sample_per_sample`), so a sample's views do not depend on the
    batch it lands in. Runs in the data-loader workers (in the training process with
    ``data.num_workers=0``); the loop applies the engine to the batch on the device."""

    def __init__(self, engine: BatchedViews) -> None:
        self.engine = engine

    def __call__(
        self, samples: list[tuple[Tensor, int, int]]
    ) -> tuple[Tensor, Tensor, list[ViewParams]]:
        images, indices, seeds = zip(*samples, strict=True)
        sizes = {tuple(im.shape) for im in images}
        if len(sizes) > 1:
            raise ValueError(
                f"data.view_engine='batched' needs images of one size, got {sorted(sizes)}; "
                "use CroppedViewsCollate (what dataset 'folder' uses) or "
                "data.view_engine='per-sample' for images of differing sizes"
            )
        height, width = images[0].shape[-2:]
        params = self.engine.sample_per_sample(seeds, height, width)
        return torch.stack(images), torch.tensor(indices, dtype=torch.long), params


class CroppedViewsCollate(BatchedViewsCollate):
    """For images of differing sizes (``dataset: folder``): draws each sample's view
    parameters from its seed like :class:`BatchedViewsCollate`, then crops and resizes
    every image to every view's box in the worker (uint8, per image), and collates
    ``(crops, indices, params)`` with ``crops`` one uint8 ``[B, 3, size, size]`` batch per
    view and full-image boxes in ``params``; the loop runs the flip and every later op
    on the device (:meth:`BatchedViews.apply_views`)."""

    def __call__(  # type: ignore[override]
        self, samples: list[tuple[Any, ...]]
    ) -> tuple[list[Tensor], Tensor, list[ViewParams]]:
        images = [s[0] for s in samples]
        indices = [s[1] for s in samples]
        seeds = [s[2] for s in samples]
        # a JPEG decoded smaller (a 4th item: its full size) gets the boxes of its full size
        sizes = [s[3] if len(s) > 3 else tuple(s[0].shape[-2:]) for s in samples]
        params = self.engine.sample_per_sample_sizes(seeds, sizes)
        crops, full = self.engine.crop_per_sample(images, params, sizes)
        return crops, torch.tensor(indices, dtype=torch.long), full


@dataclass
class EncodedImages:
    """A batch's images as the workers hand them over for decoding on the training
    device (``data.decode_on: device``): each an
    :class:`~twinfold.data.encoded.EncodedJPEG` or, for other formats, the uint8 image
    the worker decoded; ``seeds`` in batch order."""

    images: list[Any]
    seeds: list[int]

    def pin_memory(self) -> EncodedImages:
        """The decoder reads the bytes on the CPU: nothing to pin."""
        return self


class EncodedViewsCollate(BatchedViewsCollate):
    """For ``data.decode_on: device``: each sample's view parameters drawn from its seed
    for its full size (as :class:`CroppedViewsCollate` draws them), the images left as
    the dataset gives them; :meth:`twinfold.training_data.TrainingData.make_views`
    decodes and crops them on the device."""

    def __call__(  # type: ignore[override]
        self, samples: list[tuple[Any, ...]]
    ) -> tuple[EncodedImages, Tensor, list[ViewParams]]:
        images, indices, seeds, sizes = (list(column) for column in zip(*samples, strict=True))
        params = self.engine.sample_per_sample_sizes(seeds, sizes)
        batch = EncodedImages(images, seeds)
        return batch, torch.tensor(indices, dtype=torch.long), params
