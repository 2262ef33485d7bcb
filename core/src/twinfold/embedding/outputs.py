"""The files ``twinfold embed`` leaves: the matrix (``.npy`` or ``.safetensors``), a CSV
table with one line per matrix row, and a JSON sidecar; each written atomically, the
sidecar last."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from twinfold.atomic_files import atomic_write, atomic_write_bytes, atomic_write_text
from twinfold.embedding.inputs import EmbedData
from twinfold.embedding.partial import PartialEmbedding
from twinfold.errors import ConfigError

FORMAT = "twinfold-embeddings/1"
SUFFIXES = (".npy", ".safetensors")
DEFAULT_NAME = "embeddings.npy"
TENSOR_KEY = "embeddings"
"""The name of the matrix inside a ``.safetensors`` output."""


@dataclass(frozen=True)
class EmbedPaths:
    matrix: Path
    table: Path  # .csv beside the matrix
    sidecar: Path  # .json beside the matrix

    @property
    def partial(self) -> Path:
        """The work folder of an embedding in progress (see :mod:`.partial`)."""
        return self.matrix.with_name(f".{self.matrix.name}.partial")

    def all(self) -> tuple[Path, Path, Path]:
        return self.matrix, self.table, self.sidecar


def _writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            [("OUT", f"cannot create the folder '{folder}' ({exc.strerror}); choose another OUT")]
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            [("OUT", f"the folder '{folder}' is not writable; choose an OUT in a writable folder")]
        )


def embed_paths(out: Path | str, *, force: bool = False) -> EmbedPaths:
    """Where ``twinfold embed ... OUT`` writes: ``OUT`` when it ends in ``.npy`` or
    ``.safetensors``, ``OUT/embeddings.npy`` for an existing directory, else ``OUT`` with
    ``.npy`` added; the ``.csv`` and ``.json`` beside it. Existing outputs are a
    :class:`ConfigError` unless ``force`` or an interrupted call left its unfinished
    embedding for them (it had the permission); so is a folder that cannot be written."""
    matrix = Path(out)
    if matrix.is_dir():
        matrix = matrix / DEFAULT_NAME
    elif matrix.suffix not in SUFFIXES:
        matrix = matrix.with_name(matrix.name + ".npy")
    paths = EmbedPaths(matrix, matrix.with_suffix(".csv"), matrix.with_suffix(".json"))
    taken = [p for p in paths.all() if p.exists()]
    if any(p.is_dir() for p in taken):
        raise ConfigError([("OUT", f"{taken[0]} is a directory; name a file to write")])
    if taken and not force and not paths.partial.is_dir():
        names = ", ".join(str(p) for p in taken)
        raise ConfigError([("OUT", f"{names} already exist(s); pass --force to overwrite")])
    _writable(matrix.parent)
    return paths


def _features(partial: PartialEmbedding) -> Iterator[np.ndarray]:
    for chunk in partial.chunks(features=True):
        assert chunk.features is not None
        yield np.ascontiguousarray(chunk.features, dtype="<f4")


def _write_npy(path: Path, partial: PartialEmbedding, rows: int, dim: int) -> None:
    """A float32 ``.npy`` streamed chunk by chunk (never the whole matrix in memory)."""

    def write(file: IO[bytes]) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(file, header)
        for features in _features(partial):
            file.write(features.tobytes())

    atomic_write(path, write)


def _write_safetensors(path: Path, partial: PartialEmbedding, dim: int) -> None:
    """The matrix under the key ``embeddings`` (assembled in memory)."""
    from safetensors.numpy import save

    matrix = np.concatenate([np.zeros((0, dim), "<f4"), *_features(partial)])
    atomic_write_bytes(path, save({TENSOR_KEY: matrix}, metadata={"format": FORMAT}))


def _table(data: EmbedData, embedded: list[int]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", data.column, "label", "class"])
    for row, i in enumerate(embedded):
        label = data.labels[i]
        name = "" if label is None or not data.classes else data.classes[label]
        writer.writerow([row, data.items[i], "" if label is None else label, name])
    return buffer.getvalue()


def write_outputs(
    paths: EmbedPaths, partial: PartialEmbedding, data: EmbedData, meta: dict[str, Any]
) -> dict[str, Any]:
    """The matrix, the table and the sidecar from the chunks of ``partial`` (the
    sidecar last: when it is there, all three are complete); returns the sidecar."""
    chunks = list(partial.chunks(features=False))
    dim = chunks[0].dim
    embedded = [int(r) for c in chunks for r in c.rows]
    skipped = [{data.column: data.items[r], "error": why} for c in chunks for r, why in c.skipped]
    if paths.matrix.suffix == ".npy":
        _write_npy(paths.matrix, partial, len(embedded), dim)
    else:
        _write_safetensors(paths.matrix, partial, dim)
    atomic_write_text(paths.table, _table(data, embedded))
    sidecar = {
        "format": FORMAT,
        "matrix": paths.matrix.name,
        "table": paths.table.name,
        "rows": len(embedded),
        "dim": dim,
        "dtype": "float32",
        **meta,
        "classes": data.classes,
        "skipped": skipped,
    }
    atomic_write_text(paths.sidecar, json.dumps(sidecar, indent=2))
    return sidecar
