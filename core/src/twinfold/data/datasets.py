"""Datasets over image sources: multi-view (training) and plain (evaluation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from twinfold.components import ViewPipeline
from twinfold.data.base import ImageSource
from twinfold.data.encoded import EncodedJPEG


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 64-bit seed for one sample of one epoch: numpy's SeedSequence with
    the run seed as entropy and ``(epoch, index)`` as spawn key."""
    sequence = np.random.SeedSequence(seed % (1 << 64), spawn_key=(epoch, index))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


class MultiViewDataset(Dataset[list[Tensor]]):
    """Item ``i`` is the list of augmented views of image ``i``.

    The pipeline draws from torch's global generator, which is seeded from
    (seed, epoch, i) inside a fork of its state: views depend only on those three, not
    on the order of access, the number of processes or data-loader workers, and the
    caller's generator state is left as it was."""

    def __init__(self, source: ImageSource, pipeline: ViewPipeline, seed: int) -> None:
        self.source, self.pipeline, self.seed = source, pipeline, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose views ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> list[Tensor]:
        image = self.source.load(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.pipeline(image)


class SeededImageDataset(Dataset[tuple[Any, ...]]):
    """Item ``i`` is ``(image, i, seed)``: the decoded uint8 ``[3, H, W]`` image (gray
    ``[1, H, W]`` expanded to RGB) and the seed of its views in the current epoch,
    :func:`sample_seed` ``(seed, epoch, i)``; for augmenting whole batches on the device
    (``data.view_engine = "batched"``, see :class:`twinfold.data.loaders.BatchedViewsCollate`).

    With ``reduction`` (``reduction(seed, height, width)`` -> 1, 2, 4 or 8; the batched
    engine's :meth:`~twinfold.augment.BatchedViews.jpeg_reduction`) a JPEG may be decoded
    that many times smaller per side, and the item gains a fourth element: the image's
    full (height, width), which its crop boxes are drawn for. With ``encoded``
    (``data.decode_on: device``) a JPEG stays encoded (an
    :class:`~twinfold.data.encoded.EncodedJPEG`) and the fourth element is its size."""

    def __init__(
        self,
        source: ImageSource,
        seed: int,
        reduction: Callable[[int, int, int], int] | None = None,
        encoded: bool = False,
    ) -> None:
        self.source, self.seed, self.reduction, self.encoded = source, seed, reduction, encoded
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose seeds ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        seed = sample_seed(self.seed, self.epoch, index)
        if self.encoded:
            item = self.source.load_encoded(index)
            if isinstance(item, EncodedJPEG):
                return item, index, seed, (item.height, item.width)
            image = self._checked(item)
            return image, index, seed, tuple(image.shape[-2:])
        if self.reduction is None:
            return self._checked(self.source.load(index)), index, seed
        asked: list[tuple[int, int, int]] = []  # (height, width, r) of each JPEG tried

        def plan(height: int, width: int) -> int:
            assert self.reduction is not None
            asked.append((height, width, self.reduction(seed, height, width)))
            return asked[-1][2]

        image = self._checked(self.source.load_reduced(index, plan))
        full = tuple(image.shape[-2:])
        if asked:  # the last file tried is the one decoded, if it was a JPEG
            height, width, r = asked[-1]
            if full == (-(-height // r), -(-width // r)):
                full = (height, width)
        return image, index, seed, full

    @staticmethod
    def _checked(image: Tensor) -> Tensor:
        if image.dtype != torch.uint8:
            raise TypeError(f"image sources must give uint8 images, got {image.dtype}")
        if image.ndim == 3 and image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        return image


class PlainDataset(Dataset[tuple[Tensor, int]]):
    """``(pipeline.plain(image), label)``: un-augmented, normalised; label -1 when the
    source is unlabelled."""

    def __init__(self, source: ImageSource, pipeline: ViewPipeline) -> None:
        self.source, self.pipeline = source, pipeline

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        label = self.source.label(index)
        return self.pipeline.plain(self.source.load(index)), -1 if label is None else label
