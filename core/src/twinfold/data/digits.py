"""scikit-learn's handwritten digits as an image source (shipped with scikit-learn)."""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from twinfold.data.base import ImageSource, Subset, split_source


class DigitsSource(ImageSource):
    """The 1,797 real 8x8 digit images of scikit-learn (UCI optical digits, values 0..16;
    no download), as uint8, upscaled bilinearly (antialiased) to ``image_size`` and
    repeated to three channels. The whole set is cached in memory."""

    def __init__(self, image_size: int) -> None:
        self.images, targets = _upscaled_digits(image_size)  # [N, 1, S, S], shared: read-only
        self.targets = list(targets)
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        return self.images[index].repeat(3, 1, 1)

    def label(self, index: int) -> int | None:
        return self.targets[index]

    def labels(self) -> list[int | None]:
        return list(self.targets)

    def describe(self) -> str:
        side = self.images.shape[-1]
        return f"scikit-learn digits ({len(self)} images, 10 classes, {side} px)"


@lru_cache(maxsize=4)
def _upscaled_digits(image_size: int) -> tuple[Tensor, tuple[int, ...]]:
    """The digits as uint8 ``[N, 1, S, S]`` and their labels, once per process and size."""
    images, targets = _digits_arrays()
    small = torch.from_numpy(images).float().mul(255 / 16).round().unsqueeze(1)
    big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", antialias=True)
    return big.round().clamp(0, 255).to(torch.uint8), tuple(int(y) for y in targets)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images [1797, 8, 8] float64, targets [1797])`` as ``sklearn.datasets.load_digits``
    gives them, read from the file scikit-learn ships (``datasets/data/digits.csv.gz``: 64
    pixel values and the label per row) without importing scikit-learn, whose import
    costs seconds in every process a run starts; ``load_digits`` if the file moved."""
    spec = importlib.util.find_spec("sklearn")
    folders = spec.submodule_search_locations if spec is not None else None
    path = Path(next(iter(folders or [""]))) / "datasets" / "data" / "digits.csv.gz"
    if not folders or not path.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    with gzip.open(path, "rt", encoding="utf-8") as file:
        data = np.loadtxt(file, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def digits_splits(image_size: int, holdout_fraction: float = 0.2) -> tuple[Subset, Subset]:
    """(train, held-out) digits, stratified by class with the fixed split seed."""
    return split_source(DigitsSource(image_size), holdout_fraction)
