"""Image sources: the embedded digits, image folders and torchvision datasets.

A source decodes image ``i`` to a uint8 tensor ``[3, H, W]`` and knows its label (or
None). Splits are deterministic (a fixed split seed, independent of the run seed)."""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from twinfold.errors import ConfigError, TwinfoldError

SPLIT_SEED = 20240611
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageDecodeError(TwinfoldError):
    """An image file could not be read or decoded."""


class ImageSource(ABC):
    """Indexed images with optional labels."""

    classes: list[str]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int) -> Tensor:
        """The decoded image as uint8 ``[3, H, W]``."""

    @abstractmethod
    def label(self, index: int) -> int | None: ...

    def describe(self) -> str:
        return f"{type(self).__name__} with {len(self)} images"

    @property
    def labelled(self) -> bool:
        return len(self) > 0 and self.label(0) is not None


class Subset(ImageSource):
    """The images of ``base`` at ``indices``."""

    def __init__(self, base: ImageSource, indices: Sequence[int], role: str) -> None:
        self.base, self.indices, self.role = base, list(indices), role
        self.classes = base.classes

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Tensor:
        return self.base.load(self.indices[index])

    def label(self, index: int) -> int | None:
        return self.base.label(self.indices[index])

    def describe(self) -> str:
        return f"{self.role} split of {self.base.describe()}: {len(self)} images"


def split_indices(
    labels: Sequence[int | None], holdout_fraction: float
) -> tuple[list[int], list[int]]:
    """Deterministic split into (train, held-out), stratified by label when labelled."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    groups: dict[int | None, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    train, held = [], []
    for key in sorted(groups, key=lambda k: -1 if k is None else k):
        idx = groups[key]
        perm = torch.randperm(len(idx), generator=g).tolist()
        n_held = round(holdout_fraction * len(idx))
        held += [idx[p] for p in perm[:n_held]]
        train += [idx[p] for p in perm[n_held:]]
    return sorted(train), sorted(held)


class DigitsSource(ImageSource):
    """scikit-learn's handwritten digits (1,797 real 8x8 images of 10 classes; shipped
    with scikit-learn, no download), upscaled to ``image_size`` and repeated to RGB."""

    def __init__(self, image_size: int) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        raw = torch.from_numpy(digits.images).float()  # values 0..16
        small = (raw * 255 / 16).round().clamp(0, 255).unsqueeze(1)
        big = F.interpolate(
            small,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        self.images = big.round().clamp(0, 255).to(torch.uint8)
        self.labels = torch.from_numpy(digits.target).long()
        self.classes = [str(c) for c in range(10)]

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        return self.images[index].expand(3, -1, -1)

    def label(self, index: int) -> int | None:
        return int(self.labels[index])

    def describe(self) -> str:
        return f"scikit-learn digits, {len(self)} images at {self.images.shape[-1]} px"


def digits_splits(image_size: int, holdout_fraction: float) -> tuple[Subset, Subset]:
    """(train, held-out) splits of the digits, stratified, fixed."""
    source = DigitsSource(image_size)
    train, held = split_indices(source.labels.tolist(), holdout_fraction)
    return Subset(source, train, "train"), Subset(source, held, "held-out")


class FolderSource(ImageSource):
    """Images in a folder: flat (unlabelled) or one sub-folder per class (labelled).

    Files are decoded with Pillow (fully, so truncated files fail here). An unreadable file raises
    :class:`ImageDecodeError` naming it; with ``skip_bad`` it is replaced by the next
    readable image and recorded in ``bad_files``."""

    def __init__(self, root: str | Path, *, skip_bad: bool = False, field: str = "data.root"):
        self.root = Path(root)
        self.skip_bad = skip_bad
        self.bad_files: set[str] = set()
        if not self.root.exists():
            raise ConfigError(
                [
                    (
                        field,
                        f"image folder '{self.root}' does not exist; set "
                        f"{field} to a folder of images",
                    )
                ]
            )
        if not self.root.is_dir():
            raise ConfigError([(field, f"'{self.root}' is not a directory")])
        subdirs = sorted(d for d in self.root.iterdir() if d.is_dir())
        labelled = [(d, self._images(d)) for d in subdirs]
        labelled = [(d, files) for d, files in labelled if files]
        if labelled:
            self.classes = [d.name for d, _ in labelled]
            self.files = [f for _, files in labelled for f in files]
            self.labels: list[int | None] = [
                c for c, (_, files) in enumerate(labelled) for _ in files
            ]
            loose = self._images(self.root)
            if loose:
                warnings.warn(
                    f"{len(loose)} image(s) directly in {self.root} are ignored: the folder "
                    "has class sub-folders",
                    stacklevel=2,
                )
        else:
            self.classes = []
            self.files = self._images(self.root)
            self.labels = [None] * len(self.files)
        if not self.files:
            raise ConfigError(
                [
                    (
                        field,
                        f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in "
                        f"'{self.root}' or its class sub-folders",
                    )
                ]
            )

    @staticmethod
    def _images(folder: Path) -> list[Path]:
        return sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: Path) -> Tensor:
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"))
            return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()
        except Exception as exc:
            raise ImageDecodeError(
                f"cannot decode image '{path}': {type(exc).__name__}: {exc}. Remove or replace "
                "the file, or set data.skip_bad_images=true to skip unreadable files."
            ) from None

    def load(self, index: int) -> Tensor:
        if not self.skip_bad:
            return self._decode(self.files[index])
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            if str(path) in self.bad_files:
                continue
            try:
                return self._decode(path)
            except ImageDecodeError:
                self.bad_files.add(str(path))
        raise ImageDecodeError(f"no readable image in '{self.root}'")

    def label(self, index: int) -> int | None:
        return self.labels[index]

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        return f"image folder {self.root} ({len(self)} images, {kind})"


class TorchvisionSource(ImageSource):
    """CIFAR-10/100 or STL-10 through torchvision (downloads only with data.download)."""

    def __init__(self, dataset: str, root: str | Path, split: str, download: bool) -> None:
        import torchvision.datasets as tvd

        root = Path(root)
        try:
            if dataset in {"cifar10", "cifar100"}:
                cls = tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100
                ds = cls(str(root), train=split == "train", download=download)
                self.images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
                self.labels: list[int | None] = list(ds.targets)
            elif dataset == "stl10":
                ds = tvd.STL10(str(root), split=split, download=download)
                self.images = torch.from_numpy(ds.data)
                self.labels = [None if y < 0 else int(y) for y in ds.labels]
            else:
                raise ValueError(f"unknown torchvision dataset '{dataset}'")
        except RuntimeError as exc:
            raise ConfigError(
                [
                    (
                        "data.root",
                        f"{dataset} ({split}) not found under '{root}' "
                        f"({exc}); set data.download=true to let torchvision "
                        "download it, or point data.root at a copy",
                    )
                ]
            ) from None
        self.classes = list(getattr(ds, "classes", []))
        self.name, self.split = dataset, split

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        return self.images[index]

    def label(self, index: int) -> int | None:
        return self.labels[index]

    def describe(self) -> str:
        return f"torchvision {self.name} ({self.split}, {len(self)} images)"
