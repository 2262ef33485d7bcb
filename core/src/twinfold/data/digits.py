"""scikit-learn's handwritten digits as an image source (shipped with scikit-learn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from twinfold.data.base import ImageSource, Subset, split_source


class DigitsSource(ImageSource):
    """The 1,797 real 8x8 digit images of scikit-learn (UCI optical digits, values 0..16;
    no download), as uint8, upscaled bilinearly (antialiased) to ``image_size`` and
    repeated to three channels. The whole set is cached in memory."""

    def __init__(self, image_size: int) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        small = torch.from_numpy(digits.images).float().mul(255 / 16).round().unsqueeze(1)
        big = F.interpolate(small, size=(image_size, image_size), mode="bilinear", antialias=True)
        self.images = big.round().clamp(0, 255).to(torch.uint8)  # [N, 1, S, S]
        self.targets = [int(y) for y in digits.target]
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


def digits_splits(image_size: int, holdout_fraction: float = 0.2) -> tuple[Subset, Subset]:
    """(train, held-out) digits, stratified by class with the fixed split seed."""
    return split_source(DigitsSource(image_size), holdout_fraction)
