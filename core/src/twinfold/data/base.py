"""The image-source protocol, subsets and the fixed, stratified train / held-out split."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from twinfold.data.encoded import EncodedJPEG
from twinfold.errors import TwinfoldError

SPLIT_SEED = 20240611
"""Seed of every train / held-out split: fixed, independent of the run seed."""


class ImageDecodeError(TwinfoldError):
    """An image file could not be read or decoded; ``reason`` says why (without the
    fix the message suggests, which depends on the command)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ImageSource(ABC):
    """Indexed images with optional labels. ``load`` returns uint8 ``[3, H, W]``."""

    classes: list[str]
    fixed_size: bool = True
    """Whether every image has the same size (false for image folders: a batched view
    engine then crops each image in the data-loader workers)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> Tensor:
        """The decoded image as a uint8 tensor ``[3, H, W]``."""

    def load_reduced(self, index: int, plan: Callable[[int, int], int] | None) -> Tensor:
        """:meth:`load`, where a JPEG may be decoded ``plan(height, width)`` times smaller
        per side (see :func:`twinfold.data.folder.decode_bytes`); sources that do not
        decode JPEGs ignore ``plan``."""
        return self.load(index)

    def load_encoded(self, index: int) -> Tensor | EncodedJPEG:
        """For decoding on the training device (``data.decode_on: device``): a JPEG kept
        encoded (its header checked), any other image decoded as :meth:`load`. Sources
        that do not read JPEG files decode everything."""
        return self.load(index)

    @abstractmethod
    def label(self, index: int) -> int | None:
        """The class index of image ``index``, or None when the source is unlabelled."""

    def labels(self) -> list[int | None]:
        """Every label, in index order (sources override this when it is cheaper)."""
        return [self.label(i) for i in range(len(self))]

    def describe(self) -> str:
        return f"{type(self).__name__} with {len(self)} images"

    @property
    def labelled(self) -> bool:
        return len(self) > 0 and self.label(0) is not None


class Subset(ImageSource):
    """The images of ``base`` at ``indices``; ``role`` names the split in descriptions."""

    def __init__(self, base: ImageSource, indices: Sequence[int], role: str) -> None:
        self.base, self.indices, self.role = base, list(indices), role
        self.classes = base.classes
        self.fixed_size = base.fixed_size

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Tensor:
        return self.base.load(self.indices[index])

    def load_reduced(self, index: int, plan: Callable[[int, int], int] | None) -> Tensor:
        return self.base.load_reduced(self.indices[index], plan)

    def load_encoded(self, index: int) -> Tensor | EncodedJPEG:
        return self.base.load_encoded(self.indices[index])

    def label(self, index: int) -> int | None:
        return self.base.label(self.indices[index])

    def describe(self) -> str:
        return f"{self.role} split ({len(self)} images) of {self.base.describe()}"


def split_indices(
    labels: Sequence[int | None], holdout_fraction: float
) -> tuple[list[int], list[int]]:
    """Sorted (train, held-out) indices, stratified by label.

    ``ceil(holdout_fraction * n)`` images are held out (as scikit-learn's
    ``train_test_split``), shared among the labels by largest remainder; within each
    label a fixed random permutation (seed :data:`SPLIT_SEED`) picks them."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in (0, 1), got {holdout_fraction}")
    groups: dict[int | None, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    keys = sorted(groups, key=lambda k: -1 if k is None else k)
    quota = {k: holdout_fraction * len(groups[k]) for k in keys}
    n_held = {k: math.floor(quota[k]) for k in keys}
    spare = math.ceil(round(holdout_fraction * len(labels), 9)) - sum(n_held.values())
    for k in sorted(keys, key=lambda k: n_held[k] - quota[k])[:spare]:  # stable sort
        n_held[k] += 1
    g = torch.Generator().manual_seed(SPLIT_SEED)
    train: list[int] = []
    held: list[int] = []
    for k in keys:
        idx = groups[k]
        perm = torch.randperm(len(idx), generator=g).tolist()
        held += [idx[p] for p in perm[: n_held[k]]]
        train += [idx[p] for p in perm[n_held[k] :]]
    return sorted(train), sorted(held)


def split_source(source: ImageSource, holdout_fraction: float) -> tuple[Subset, Subset]:
    """(train, held-out) subsets of ``source``, see :func:`split_indices`."""
    train, held = split_indices(source.labels(), holdout_fraction)
    return Subset(source, train, "train"), Subset(source, held, "held-out")
