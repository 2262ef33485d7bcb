"""Image folders: flat (unlabelled) or one sub-folder per class, decoded from disk."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.v2.functional import to_dtype

from twinfold.data.base import ImageDecodeError, ImageSource
from twinfold.data.encoded import EncodedJPEG, decode_jpegs
from twinfold.errors import ConfigError

SymlinkPolicy = Literal["inside", "follow"]
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_SKIP_HINT = "set data.skip_bad_images=true to skip unreadable files"
_T = TypeVar("_T")


MAX_PIXELS = 100_000_000
"""Default ``data.max_image_pixels``: about 300 MB once decoded to RGB."""


@contextlib.contextmanager
def _no_pillow_bomb_check() -> Iterator[None]:
    """Pillow's own decompression-bomb limit off while a header is read: the caller
    applies ``max_pixels`` (which may be set above Pillow's) with its own message."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _decode_jpeg(data: bytes) -> Tensor:
    """libjpeg-turbo through TorchCodec when it is installed, else through torchvision
    (whose codecs 0.29 deprecates; both decode the same pixels): a corrupt stream raises
    a Python error."""
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_jpegs([buffer], "cpu")[0]


ReductionPlan = Callable[[int, int], int]
"""``plan(height, width)`` -> by how much (1, 2, 4 or 8) a JPEG of that size may be
decoded smaller (see :func:`decode_bytes`)."""
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Header:
    """What an image's header says, read before any pixel is decoded."""

    format: str | None
    height: int
    width: int
    upright: bool
    """False for a JPEG whose EXIF orientation asks for a rotation or a flip."""

    @property
    def plain_jpeg(self) -> bool:
        """A JPEG decoded as stored (no EXIF rotation): decodable in the DCT domain or
        on a device, and its header size is its decoded size."""
        return self.format == "JPEG" and self.upright


def _read_header(img: Any, max_pixels: int) -> Header:
    """The header of an opened Pillow image; more than ``max_pixels`` pixels raise
    ``ValueError`` before any pixel is decoded."""
    width, height = img.size
    if width * height > max_pixels:
        raise ValueError(
            f"{width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (data.max_image_pixels; raise it for images this large)"
        )
    upright = img.format != "JPEG" or img.getexif().get(_EXIF_ORIENTATION, 1) == 1
    return Header(img.format, height, width, upright)


def decode_bytes(
    data: bytes, max_pixels: int = MAX_PIXELS, plan: ReductionPlan | None = None
) -> Tensor:
    """Decode an encoded image to uint8 ``[3, H, W]`` (an animation's first frame).

    The header is read first and an image of more than ``max_pixels`` pixels is refused
    before any pixel is decoded. JPEG goes to libjpeg-turbo (:func:`decode_jpegs`),
    every other format to Pillow: torchvision's libpng ends the process on some
    malformed PNGs (a too-short IDAT chunk) instead of raising. Any problem raises
    ``ValueError``, Pillow's ``OSError`` or the decoder's ``RuntimeError``.

    With ``plan``, a JPEG (without EXIF rotation) whose ``plan(height, width)`` is
    ``r > 1`` is decoded ``r`` times smaller per side in the DCT domain (Pillow's
    ``draft``; libjpeg-turbo then skips most of the inverse DCT and the colour work)."""
    image = _decode(data, max_pixels, plan, keep_as=None)
    assert isinstance(image, Tensor)
    return image


def decode_or_keep(data: bytes, max_pixels: int, name: str) -> Tensor | EncodedJPEG:
    """For decoding on the training device (``data.decode_on: device``): a plain JPEG
    (:attr:`Header.plain_jpeg`) is kept encoded, its header checked; any other image is
    decoded here as :func:`decode_bytes` decodes it."""
    return _decode(data, max_pixels, None, keep_as=name)


def _decode(
    data: bytes, max_pixels: int, plan: ReductionPlan | None, keep_as: str | None
) -> Tensor | EncodedJPEG:
    """:func:`decode_bytes`, or with ``keep_as`` (the image's name) a plain JPEG kept
    encoded; the image is opened once, its header read first."""
    from PIL import Image, ImageOps

    if not data:
        raise ValueError("the file is empty")
    with _no_pillow_bomb_check(), Image.open(io.BytesIO(data)) as img:
        header = _read_header(img, max_pixels)
        if keep_as is not None and header.plain_jpeg:
            encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            return EncodedJPEG(encoded, header.height, header.width, keep_as)
        reduction = 1
        if plan is not None and header.plain_jpeg:
            reduction = plan(header.height, header.width)
        if header.format == "JPEG" and reduction == 1:
            image = _decode_jpeg(data)
        else:
            if reduction > 1:
                img.draft("RGB", (header.width // reduction, header.height // reduction))
            rgb = np.array(ImageOps.exif_transpose(img).convert("RGB"))
            image = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    return image if image.dtype == torch.uint8 else to_dtype(image, torch.uint8, scale=True)


def decode_file(
    path: Path, max_pixels: int = MAX_PIXELS, plan: ReductionPlan | None = None
) -> Tensor:
    """Decode an image file (:func:`decode_bytes`). Raises :class:`ImageDecodeError`
    naming the file when it is empty, unreadable, truncated, too large or not an image."""
    return _named(path, lambda data: decode_bytes(data, max_pixels, plan))


def decode_or_keep_file(path: Path, max_pixels: int = MAX_PIXELS) -> Tensor | EncodedJPEG:
    """:func:`decode_or_keep` of a file, errors as :func:`decode_file` raises them."""
    return _named(path, lambda data: decode_or_keep(data, max_pixels, f"'{path}'"))


def _named(path: Path, decode: Callable[[bytes], _T]) -> _T:
    try:
        return decode(path.read_bytes())
    except Exception as exc:
        raise _decode_error(f"'{path}'", exc) from None


def _decode_error(name: str, exc: Exception) -> ImageDecodeError:
    """The error for an image (``name``: the file, quoted) that failed to decode."""
    reason = re.sub(r"^.*?\.cpp:\d+,\s*", "", str(exc)).strip() or type(exc).__name__
    if "cannot identify image file" in reason:  # Pillow's words for an unknown format
        reason = "not an image in a known format"
    return ImageDecodeError(
        f"cannot decode image {name}: {reason}. Remove or replace the file, or {_SKIP_HINT}.",
        reason,
    )


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _images(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p, folder) and p.is_file()
    )


class FolderSource(ImageSource):
    """The images under ``root`` (jpg, jpeg, png, bmp, gif, webp, tif, tiff; any case).

    With sub-folders holding images, each sub-folder (searched recursively) is a class,
    in sorted order, and loose files in ``root`` are ignored; otherwise the files in
    ``root`` are unlabelled. A missing or empty folder is a :class:`ConfigError` on
    ``field``. An unreadable file raises :class:`ImageDecodeError`; with ``skip_bad``
    the next readable image of the same class (cyclically) replaces it, and the file is
    recorded in ``bad_files``. That record is per process (data-loader workers keep their
    own); with ``skip_log`` set, every process also appends the file's path there, so the
    log holds the files skipped by all ranks and workers (see :func:`count_skipped`)."""

    fixed_size = False

    def __init__(
        self,
        root: str | Path,
        *,
        skip_bad: bool = False,
        field: str = "data.root",
        max_pixels: int = MAX_PIXELS,
        symlinks: SymlinkPolicy = "inside",
    ):
        self.root, self.skip_bad, self.field = Path(root), skip_bad, field
        self.max_pixels = max_pixels
        self.bad_files: set[Path] = set()
        self.skip_log: Path | None = None  # skipped files are also appended here
        if not self.root.exists():
            self._fail(f"image folder '{self.root}' does not exist; set {field} to a folder")
        if not self.root.is_dir():
            self._fail(f"'{self.root}' is not a directory; set {field} to the folder around it")
        subdirs = sorted(d for d in self.root.iterdir() if d.is_dir() and _visible(d, self.root))
        groups = [(d.name, files) for d in subdirs if (files := _images(d, recursive=True))]
        if groups:
            self.classes = [name for name, _ in groups]
            self.files = [f for _, files in groups for f in files]
            self._labels: list[int | None] = [c for c, (_, fs) in enumerate(groups) for _ in fs]
            if loose := _images(self.root, recursive=False):
                warnings.warn(
                    f"{len(loose)} image(s) directly in {self.root} are ignored: the folder "
                    "has class sub-folders",
                    stacklevel=2,
                )
        else:
            self.classes = []
            self.files = _images(self.root, recursive=False)
            self._labels = [None] * len(self.files)
        if not self.files:
            self._fail(
                f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in '{self.root}' or in "
                f"sub-folders of it; put images there or set {field} to the folder that "
                "holds them"
            )
        if symlinks == "inside":
            self._refuse_links_out({d.name for d in subdirs if d.is_symlink()})
        self._members: dict[int | None, list[int]] = {}
        self._position: list[int] = []  # index of each file within its class
        for i, y in enumerate(self._labels):
            self._position.append(len(self._members.setdefault(y, [])))
            self._members[y].append(i)

    def _refuse_links_out(self, linked: set[str]) -> None:
        """``data.symlinks=inside``: no file may be reached through a symbolic link (to the
        file or to its class folder) whose target lies outside the root. ``linked``: the
        names of the class folders that are links."""
        real_root = self.root.resolve()
        for path in self.files:
            through_link = path.is_symlink() or path.relative_to(self.root).parts[0] in linked
            if through_link and not path.resolve().is_relative_to(real_root):
                self._fail(
                    f"'{path}' is a symbolic link (or in a linked folder) to "
                    f"'{path.resolve()}', outside '{self.root}'; set data.symlinks=follow to "
                    "read files linked from elsewhere, or copy them in"
                )

    def _fail(self, message: str) -> None:
        raise ConfigError([(self.field, message)])

    @property
    def skipped(self) -> int:
        """How many unreadable files this process has skipped."""
        return len(self.bad_files)

    def __len__(self) -> int:
        return len(self.files)

    def label(self, index: int) -> int | None:
        return self._labels[index]

    def labels(self) -> list[int | None]:
        return list(self._labels)

    def load(self, index: int) -> Tensor:
        return self.load_reduced(index, None)

    def load_reduced(self, index: int, plan: ReductionPlan | None) -> Tensor:
        return self._first_readable(index, lambda path: decode_file(path, self.max_pixels, plan))

    def load_encoded(self, index: int) -> Tensor | EncodedJPEG:
        return self._first_readable(index, lambda path: decode_or_keep_file(path, self.max_pixels))

    def _first_readable(self, index: int, read: Callable[[Path], _T]) -> _T:
        """``read(file of index)``; with ``skip_bad``, an unreadable file is recorded
        (warned, counted, logged) and the next readable image of its class read instead."""
        if not self.skip_bad:
            return read(self.files[index])
        y = self._labels[index]
        members, start = self._members[y], self._position[index]
        for k in range(len(members)):
            path = self.files[members[(start + k) % len(members)]]
            if path in self.bad_files:
                continue
            try:
                return read(path)
            except ImageDecodeError as exc:
                self._record_bad(path, exc)
        group = "" if y is None else f" of class '{self.classes[y]}'"
        raise ImageDecodeError(f"no readable image{group} in '{self.root}'")

    def _record_bad(self, path: Path, exc: ImageDecodeError) -> None:
        """Remember an unreadable file: skipped from now on, warned and logged."""
        self.bad_files.add(path)
        warnings.warn(f"skipping: {exc}", stacklevel=3)
        if self.skip_log is not None:  # one short O_APPEND write: safe across workers
            with self.skip_log.open("a", encoding="utf-8") as log:
                log.write(f"{path}\n")

    def scan(self) -> int:
        """Decode every file once; returns ``skipped`` (without ``skip_bad``, the first
        unreadable file raises)."""
        for i in range(len(self)):
            self.load(i)
        return self.skipped

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        bad = f", {self.skipped} unreadable skipped" if self.bad_files else ""
        return f"image folder {self.root} ({len(self)} images, {kind}{bad})"


def count_skipped(log: Path) -> int:
    """How many distinct files a skip log (``FolderSource.skip_log``) names."""
    if not log.is_file():
        return 0
    return len({line for line in log.read_text(encoding="utf-8").splitlines() if line})
