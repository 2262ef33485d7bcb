"""``data.dataset: streaming``: images read by index from the shards of ``twinfold data
pack`` through LitData's ``StreamingDataset``, in a local directory or object store.

The source is random access, like an image folder: twinfold's own sampler, seeds and
resume logic decide which samples each rank reads and in which order, so a sample's
views depend only on (run seed, epoch, index), ranks read distinct samples and a resumed
run skips exactly the batches it did (see docs/data.md for why not LitData's own
iteration order)."""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor

from twinfold.data.base import ImageDecodeError, ImageSource
from twinfold.data.encoded import EncodedJPEG
from twinfold.data.folder import MAX_PIXELS, ReductionPlan, decode_bytes, decode_or_keep
from twinfold.data.shards import (
    ShardIndex,
    import_litdata,
    is_uri,
    load_local_index,
    load_remote_index,
)

_T = TypeVar("_T")


def default_cache_dir(uri: str) -> Path:
    """Where LitData keeps the shards it downloads from ``uri`` (one folder per URI)."""
    name = "".join(c if c.isalnum() else "-" for c in uri)
    return Path(tempfile.gettempdir()) / "twinfold-shards" / name


class StreamingSource(ImageSource):
    """The packed images at ``root`` (a directory or an ``s3://``-style URI), decoded as
    :func:`~twinfold.data.folder.decode_bytes` decodes files. Missing LitData, a missing
    or truncated shard is a :class:`~twinfold.errors.ConfigError` on ``data.root``; a
    sample whose bytes fail their CRC-32 or do not decode is an :class:`ImageDecodeError`
    naming the shard, the sample and the file it was packed from."""

    fixed_size = False

    def __init__(
        self, root: str | Path, *, max_pixels: int = MAX_PIXELS, cache_dir: Path | None = None
    ) -> None:
        import_litdata("data.root")
        self.root, self.max_pixels = root, max_pixels
        if is_uri(root):
            assert isinstance(root, str)
            self.cache_dir: Path | None = cache_dir or default_cache_dir(root)
            self.index: ShardIndex = load_remote_index(root, self.cache_dir)
        else:
            self.cache_dir = None
            self.index = load_local_index(Path(root))
        self.classes = self.index.classes
        self._reader: Any = None
        self._reader_pid = -1

    def __getstate__(self) -> dict[str, Any]:  # data-loader workers open their own reader
        return {**self.__dict__, "_reader": None, "_reader_pid": -1}

    def _dataset(self) -> Any:
        """LitData's dataset, opened once per process (never shared across a fork)."""
        if self._reader is None or self._reader_pid != os.getpid():
            litdata = import_litdata("data.root")
            cache = None if self.cache_dir is None else str(self.cache_dir)
            self._reader = litdata.StreamingDataset(str(self.root), cache_dir=cache)
            self._reader_pid = os.getpid()
        return self._reader

    def __len__(self) -> int:
        return len(self.index.labels)

    def label(self, index: int) -> int | None:
        return self.index.labels[index]

    def labels(self) -> list[int | None]:
        return list(self.index.labels)

    def read(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as packed, its bytes checked against their CRC-32."""
        shard = self.index.chunk_of(index).filename
        where = f"sample {index} in shard '{shard}' of '{self.root}'"
        try:
            sample = self._dataset()[index]
            data, name = bytes(sample["image"]), str(sample["name"])
            intact = sample["index"] == index and zlib.crc32(data) == sample["crc32"]
        except Exception as exc:
            raise self._corrupt(where, f"unreadable ({type(exc).__name__}: {exc})") from None
        if not intact:
            raise self._corrupt(where, "its bytes do not match their CRC-32")
        return {"image": data, "name": name}

    def load(self, index: int) -> Tensor:
        return self.load_reduced(index, None)

    def load_reduced(self, index: int, plan: ReductionPlan | None) -> Tensor:
        return self._decoded(index, lambda data, _: decode_bytes(data, self.max_pixels, plan))

    def load_encoded(self, index: int) -> Tensor | EncodedJPEG:
        return self._decoded(index, lambda data, name: decode_or_keep(data, self.max_pixels, name))

    def _decoded(self, index: int, decode: Callable[[bytes, str], _T]) -> _T:
        """``decode(bytes, name)`` of sample ``index``; errors name the sample and shard."""
        sample = self.read(index)
        shard = self.index.chunk_of(index).filename
        name = f"sample {index} ('{sample['name']}') in shard '{shard}' of '{self.root}'"
        try:
            return decode(sample["image"], name)
        except Exception as exc:
            raise ImageDecodeError(f"cannot decode {name}: {exc}", str(exc)) from None

    def _corrupt(self, where: str, why: str) -> ImageDecodeError:
        return ImageDecodeError(
            f"corrupt shard: {where} is {why}; copy the shard again or re-run 'twinfold data pack'",
            why,
        )

    def describe(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabelled"
        return f"shards {self.root} ({len(self)} images in {len(self.index.chunks)} shards, {kind})"
