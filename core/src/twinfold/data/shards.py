"""The shard format of ``twinfold data pack``: LitData chunks (``chunk-*.bin`` and
``index.json``, written by LitData's ``BinaryWriter``) plus twinfold's own ``twinfold.json``.

Sample ``i`` of the shards is image ``i`` of the packed folder in
:class:`~twinfold.data.folder.FolderSource` order (unreadable files skipped), stored as
its encoded file bytes, never as pixels: ``{"image": bytes, "label": int (-1 when
unlabelled), "name": path relative to the folder, "index": i, "crc32": of the bytes}``.
``twinfold.json`` holds the class names and every label, so the train / held-out split
needs no pass over the shards. LitData is imported only here and only when called."""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from twinfold.errors import ConfigError

SIDECAR = "twinfold.json"
"""twinfold's file next to LitData's ``index.json``."""
FORMAT = 1
"""Version of the sample layout and of ``twinfold.json``."""
INSTALL_HINT = "install it with: pip install 'twinfold[streaming]' (or pip install litdata)"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(root: str | Path) -> bool:
    """Whether ``root`` is an object-store address (``s3://...``) rather than a path."""
    return isinstance(root, str) and bool(_URI.match(root))


def import_litdata(field: str) -> ModuleType:
    """LitData, or a :class:`ConfigError` on ``field`` saying how to install it."""
    try:
        import litdata
    except ImportError:
        message = f"sharded datasets need LitData, which is not installed; {INSTALL_HINT}"
        raise ConfigError([(field, message)]) from None
    return litdata


@dataclass(frozen=True)
class Chunk:
    """One shard: its file name, its first sample and its sample count and size."""

    filename: str
    first: int
    count: int
    nbytes: int


@dataclass(frozen=True)
class ShardIndex:
    """What ``index.json`` and ``twinfold.json`` say about a packed dataset."""

    chunks: list[Chunk]
    classes: list[str]
    labels: list[int | None]

    def chunk_of(self, index: int) -> Chunk:
        """The shard holding sample ``index``."""
        starts = [c.first for c in self.chunks]
        return self.chunks[bisect.bisect_right(starts, index) - 1]


def read_index(index_json: dict[str, Any], sidecar: dict[str, Any], where: str) -> ShardIndex:
    """The :class:`ShardIndex` of the two files' contents; ``where`` names the shards
    in errors (a :class:`ConfigError` on ``data.root``)."""
    if sidecar.get("format") != FORMAT:
        _fail(
            f"'{where}' holds shards of format {sidecar.get('format')!r}, this twinfold "
            f"reads format {FORMAT}; pack the folder again with 'twinfold data pack'"
        )
    chunks, first = [], 0
    for entry in index_json.get("chunks", []):
        chunks.append(Chunk(entry["filename"], first, entry["chunk_size"], entry["chunk_bytes"]))
        first += entry["chunk_size"]
    labels = [None if y < 0 else int(y) for y in sidecar["labels"]]
    if first != len(labels) or not labels:
        _fail(
            f"'{where}': index.json lists {first} samples, {SIDECAR} {len(labels)}; the "
            "shards are incomplete or mixed up, pack the folder again"
        )
    return ShardIndex(chunks, list(sidecar["classes"]), labels)


def load_local_index(root: Path) -> ShardIndex:
    """The index of shards in directory ``root``, after checking that every shard file
    is there with the size ``index.json`` gives it (a truncated copy is named)."""
    if not root.is_dir():
        _fail(
            f"'{root}' is not a directory; set data.root to the output directory of "
            "'twinfold data pack SRC OUT'"
        )
    files = [root / "index.json", root / SIDECAR]
    if missing := [f.name for f in files if not f.is_file()]:
        _fail(
            f"'{root}' holds no twinfold shards ({', '.join(missing)} missing); make them "
            "with 'twinfold data pack SRC OUT' and set data.root to OUT"
        )
    index = read_index(*(json.loads(f.read_text(encoding="utf-8")) for f in files), str(root))
    for chunk in index.chunks:
        path = root / chunk.filename
        size = path.stat().st_size if path.is_file() else None
        if size != chunk.nbytes:
            state = "missing" if size is None else f"{size} bytes, index.json says {chunk.nbytes}"
            _fail(
                f"shard '{path}' is corrupt ({state}); copy it again or pack the folder "
                "again with 'twinfold data pack'"
            )
    return index


def load_remote_index(uri: str, cache_dir: Path) -> ShardIndex:
    """The index of shards at an object-store ``uri``: both JSON files are fetched into
    ``cache_dir`` with LitData's downloader (credentials as LitData finds them)."""
    import_litdata("data.root")
    from litdata.streaming.downloader import get_downloader

    cache_dir.mkdir(parents=True, exist_ok=True)
    downloader = get_downloader(uri, str(cache_dir), [])
    contents = []
    for name in ("index.json", SIDECAR):
        local = cache_dir / name
        try:
            downloader.download_file(f"{uri.rstrip('/')}/{name}", str(local))
            contents.append(json.loads(local.read_text(encoding="utf-8")))
        except Exception as exc:
            _fail(
                f"cannot read '{uri.rstrip('/')}/{name}' ({exc}); check the address and "
                "the credentials, or copy the shards to a local directory"
            )
    return read_index(contents[0], contents[1], uri)


def _fail(message: str) -> None:
    raise ConfigError([("data.root", message)])
