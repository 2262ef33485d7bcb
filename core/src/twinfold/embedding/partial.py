"""An embedding in progress, kept next to its output so a killed ``twinfold embed``
continues where it stopped: ``.<OUT name>.partial/`` holds ``manifest.json`` (what the
rows are embeddings of: weights, images, transform, precision) and one
``rows-<start>-<end>.npz`` per finished chunk of rows, each written atomically."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinfold.atomic_files import atomic_write, atomic_write_text

MANIFEST = "manifest.json"
_CHUNK = re.compile(r"rows-(\d+)-(\d+)\.npz")


@dataclass
class Chunk:
    """Rows ``start`` .. ``end - 1``: the features of those that were read (``rows``),
    and the rows skipped as unreadable with the reason."""

    start: int
    end: int
    dim: int
    features: np.ndarray | None  # float32 [len(rows), dim]; None when not loaded
    rows: np.ndarray  # int64
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _chunk_name(start: int, end: int) -> str:
    return f"rows-{start:012d}-{end:012d}.npz"


def _save(chunk: Chunk, path: Path) -> None:
    skipped_rows = np.array([r for r, _ in chunk.skipped], dtype=np.int64)
    reasons = np.array([why for _, why in chunk.skipped], dtype=np.str_)
    atomic_write(
        path,
        lambda f: np.savez(
            f,
            dim=np.int64(chunk.dim),
            features=chunk.features,
            rows=chunk.rows,
            skipped_rows=skipped_rows,
            skipped_reasons=reasons,
        ),
    )


def _load(path: Path, start: int, end: int, features: bool) -> Chunk:
    """The chunk in ``path``; its features only when asked for (the rows and reasons
    are small, the features not)."""
    with np.load(path, allow_pickle=False) as z:
        skipped = [(int(r), str(why)) for r, why in zip(z["skipped_rows"], z["skipped_reasons"])]
        feats = z["features"] if features else None
        return Chunk(start, end, int(z["dim"]), feats, z["rows"], skipped)


class PartialEmbedding:
    """The chunks done so far, valid only for the ``manifest`` they were made under."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder, self.manifest = folder, manifest

    def _spans(self) -> list[tuple[int, int, Path]]:
        found = []
        for path in self.folder.glob("rows-*.npz"):
            if m := _CHUNK.fullmatch(path.name):
                found.append((int(m[1]), int(m[2]), path))
        return sorted(found)

    def _recorded(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def changes(self) -> list[str]:
        """The manifest keys that differ from the partial embedding on disk (empty when
        there is none or it matches)."""
        old = self._recorded()
        if old is None:
            return []
        keys = sorted(set(old) | set(self.manifest))
        return [k for k in keys if old.get(k) != self.manifest.get(k)]

    def start(self) -> int:
        """The first row not done: resumes chunks made under the same manifest, else
        clears the folder and starts at row 0."""
        if self._recorded() == self.manifest:
            done = 0
            for start, end, path in self._spans():
                if start != done:  # only a gap-free prefix counts
                    path.unlink()
                    continue
                done = end
            for tmp in self.folder.glob(".tmp-*"):  # a chunk killed while written
                tmp.unlink(missing_ok=True)
            return done
        self.remove()
        self.folder.mkdir(parents=True)
        atomic_write_text(self.folder / MANIFEST, json.dumps(self.manifest, indent=2))
        return 0

    def add(self, chunk: Chunk) -> None:
        _save(chunk, self.folder / _chunk_name(chunk.start, chunk.end))

    def chunks(self, features: bool = True) -> Iterator[Chunk]:
        """Every chunk done, in row order (read from disk one at a time)."""
        for start, end, path in self._spans():
            yield _load(path, start, end, features)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
