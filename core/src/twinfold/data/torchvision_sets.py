"""CIFAR-10/100 and STL-10 through torchvision, downloaded only when asked to."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from twinfold.data.base import ImageSource
from twinfold.errors import ConfigError

SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("unlabeled", "train", "test", "train+unlabeled"),
}


class TorchvisionSource(ImageSource):
    """One split of a torchvision dataset, held in memory as uint8 ``[N, 3, H, W]``.

    STL-10's unlabelled images get the label None. Missing data with ``download=False``
    (or a failed download) is a :class:`ConfigError` on ``data.root`` that says how to
    get the data."""

    def __init__(self, dataset: str, root: str | Path, split: str, download: bool) -> None:
        if split not in SPLITS.get(dataset, ()):
            raise ValueError(f"unknown split '{split}' of dataset '{dataset}'; known: {SPLITS}")
        import torchvision.datasets as tvd

        self.name, self.split, self.root = dataset, split, Path(root)
        try:
            if dataset == "stl10":
                ds = tvd.STL10(str(self.root), split=split, download=download)
                self.images = torch.from_numpy(ds.data)
                self._labels: list[int | None] = [None if y < 0 else int(y) for y in ds.labels]
            else:
                cls = tvd.CIFAR10 if dataset == "cifar10" else tvd.CIFAR100
                ds = cls(str(self.root), train=split == "train", download=download)
                self.images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
                self._labels = [int(y) for y in ds.targets]
        except (RuntimeError, OSError) as exc:
            how = (
                "the download failed; check the network or put a copy there"
                if download
                else "set data.download=true to let torchvision download it, or set "
                "data.root to the folder that holds it"
            )
            raise ConfigError(
                [("data.root", f"{dataset} ({split}) not found under '{self.root}' ({exc}); {how}")]
            ) from None
        self.classes = list(getattr(ds, "classes", []))

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        return self.images[index].contiguous()

    def label(self, index: int) -> int | None:
        return self._labels[index]

    def labels(self) -> list[int | None]:
        return list(self._labels)

    def describe(self) -> str:
        return f"torchvision {self.name} ({self.split}, {len(self)} images)"
