"""Datasets over image sources: multi-view (training) and plain (evaluation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from twinfold.components import ViewPipeline
from twinfold.data.sources import ImageSource


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one sample of one epoch (numpy SeedSequence)."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


class MultiViewDataset(Dataset[list[Tensor]]):
    """Item ``i`` is the list of augmented views of image ``i``. The views depend only on
    (seed, epoch, i): the same whatever the number of processes, ranks or workers."""

    def __init__(self, source: ImageSource, pipeline: ViewPipeline, seed: int) -> None:
        self.source, self.pipeline, self.seed = source, pipeline, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> list[Tensor]:
        image = self.source.load(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.pipeline(image)


class PlainDataset(Dataset[tuple[Tensor, int]]):
    """``(un-augmented normalised image, label)``; label -1 when unlabelled."""

    def __init__(self, source: ImageSource, pipeline: ViewPipeline) -> None:
        self.source, self.pipeline = source, pipeline

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        label = self.source.label(index)
        return self.pipeline.plain(self.source.load(index)), -1 if label is None else label
