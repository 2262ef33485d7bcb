"""What ``twinfold embed`` reads: the trained backbone (RUN_OR_CHECKPOINT) and the images
(DATA: an image folder, or ``DATASET:SPLIT`` of a dataset twinfold knows)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from twinfold.config import RunConfig
from twinfold.data import DigitsSource, FolderSource, ImageSource, TorchvisionSource
from twinfold.data.base import split_source
from twinfold.data.build import folder_limits
from twinfold.data.torchvision_sets import SPLITS
from twinfold.errors import ConfigError

DATASET_SPLITS: dict[str, tuple[str, ...]] = {
    "digits": ("train", "test", "all"),
    **SPLITS,
}
"""The ``DATASET:SPLIT`` names DATA accepts. digits: ``train`` / ``test`` are the fixed
split the run's kNN uses (``data.holdout_fraction``), ``all`` the 1,797 images."""


def _usage() -> str:
    names = ", ".join(f"{d}:{'|'.join(s)}" for d, s in DATASET_SPLITS.items())
    return f"an image folder, or one of {names}"


@dataclass
class EmbedData:
    """The images to embed, in row order, and what the table beside the matrix says
    about each: ``items`` are paths relative to the folder (``column`` ``path``) or
    indices into the dataset split's own numbering (``column`` ``index``)."""

    source: ImageSource
    spec: str
    column: str
    items: list[str]
    labels: list[int | None]
    classes: list[str]
    stamps: list[str]  # what identifies each item's content (path, size, mtime)

    def name(self, row: int) -> str:
        """Image ``row`` as a user finds it: its file, or its index in the split."""
        if self.column == "path":
            return str(Path(self.spec) / self.items[row])
        return f"image {self.items[row]} of {self.spec}"

    def digest(self) -> str:
        """SHA-256 of the items, labels and stamps: a resumed embedding checks it."""
        h = hashlib.sha256()
        for item, label, stamp in zip(self.items, self.labels, self.stamps, strict=True):
            h.update(f"{item}\t{label}\t{stamp}\n".encode())
        return h.hexdigest()


def _folder(root: Path, cfg: RunConfig) -> EmbedData:
    """The images under ``root``, read with the run's limits (``data.max_image_pixels``,
    ``data.symlinks``; ``--set`` changes them)."""
    source = FolderSource(root, field="DATA", **folder_limits(cfg.data))
    items = [f.relative_to(source.root).as_posix() for f in source.files]
    stamps = [f"{(s := f.stat()).st_size}:{s.st_mtime_ns}" for f in source.files]
    spec = str(source.root.resolve())
    return EmbedData(source, spec, "path", items, source.labels(), source.classes, stamps)


def _split(name: str, split: str, cfg: RunConfig) -> EmbedData:
    if name == "digits":
        digits = DigitsSource(cfg.data.image_size)
        if split == "all":
            source: ImageSource = digits
            indices = list(range(len(digits)))
        else:
            train, held = split_source(digits, cfg.data.holdout_fraction)
            source = train if split == "train" else held
            indices = source.indices
    else:
        root = cfg.data.root if cfg.data.root is not None else Path("data")
        source = TorchvisionSource(name, root, split, cfg.data.download)
        indices = list(range(len(source)))
    items = [str(i) for i in indices]
    spec = f"{name}:{split}"
    return EmbedData(source, spec, "index", items, source.labels(), source.classes, items)


def open_data(data: str, cfg: RunConfig) -> EmbedData:
    """DATA as images: an existing folder (with one sub-folder per class, labelled), or
    ``DATASET:SPLIT`` (torchvision sets from ``data.root``, as the run's data config
    says; ``--set data.root=...`` points elsewhere)."""
    path = Path(data)
    name, colon, split = data.partition(":")
    if colon and name in DATASET_SPLITS and not path.exists():
        if split not in DATASET_SPLITS[name]:
            choices = "|".join(DATASET_SPLITS[name])
            raise ConfigError([("DATA", f"'{data}': {name} has the splits {choices}")])
        return _split(name, split, cfg)
    if not path.exists():
        raise ConfigError([("DATA", f"'{data}' does not exist; DATA is {_usage()}")])
    if not path.is_dir():
        raise ConfigError(
            [("DATA", f"'{data}' is a file; DATA is {_usage()} (pass the folder around it)")]
        )
    return _folder(path, cfg)
