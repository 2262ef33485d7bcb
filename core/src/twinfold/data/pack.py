"""``twinfold data pack SRC OUT``: an image folder into LitData shards (see
:mod:`twinfold.data.shards` for the layout)."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from twinfold.data.base import ImageDecodeError
from twinfold.data.folder import MAX_PIXELS, FolderSource, SymlinkPolicy, decode_file
from twinfold.data.shards import FORMAT, SIDECAR, import_litdata
from twinfold.errors import ConfigError

CHUNK_BYTES = 64 << 20
"""Default shard size: 64 MiB, LitData's usual order of magnitude."""


@dataclass
class PackResult:
    """What a pack wrote: ``images`` samples in ``shards`` files; ``skipped`` files."""

    out: Path
    images: int
    shards: int
    classes: list[str]
    skipped: list[str] = field(default_factory=list)


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError([("OUT", f"'{out}' is a file; give a directory for the shards")])
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(
            [
                (
                    "OUT",
                    f"'{out}' is not empty; choose another directory or pass --force to "
                    "replace its contents",
                )
            ]
        )


def _fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def pack_folder(
    src: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    skip_bad: bool = False,
    max_pixels: int = MAX_PIXELS,
    symlinks: SymlinkPolicy = "inside",
    chunk_bytes: int = CHUNK_BYTES,
    progress: bool = True,
) -> PackResult:
    """Pack the image folder ``src`` (flat, or one sub-folder per class) into shards in
    ``out``. Every file is decoded once to check it: an unreadable one raises
    :class:`ImageDecodeError` naming it, or with ``skip_bad`` is left out and listed.
    The shards are written to a hidden folder next to ``out`` and moved into place at
    the end, so an interrupted pack leaves ``out`` as it was; a non-empty ``out`` is
    replaced only with ``force``."""
    import_litdata("SRC")  # before any work
    from litdata.streaming.writer import BinaryWriter

    folder = FolderSource(src, field="SRC", max_pixels=max_pixels, symlinks=symlinks)
    out = Path(out)
    _check_out(out, force)
    work = _fresh_dir(out.with_name(f".{out.name}.packing"))
    try:
        labels, skipped = _write_samples(
            folder, BinaryWriter(str(work), chunk_bytes=chunk_bytes), skip_bad, max_pixels, progress
        )
        sidecar = {
            "format": FORMAT,
            "classes": folder.classes,
            "labels": labels,
            "skipped": skipped,
            "source": str(folder.root),
        }
        (work / SIDECAR).write_text(json.dumps(sidecar), encoding="utf-8")
        index = json.loads((work / "index.json").read_text(encoding="utf-8"))
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return PackResult(out, len(labels), len(index["chunks"]), folder.classes, skipped)


def _write_samples(
    folder: FolderSource, writer: Any, skip_bad: bool, max_pixels: int, progress: bool
) -> tuple[list[int], list[str]]:
    """Check and write every file of ``folder``: (labels written, names skipped)."""
    labels: list[int] = []
    skipped: list[str] = []
    files = tqdm(folder.files, desc="packing", unit="img", disable=not progress)
    for path, label in zip(files, folder.labels(), strict=True):
        name = path.relative_to(folder.root).as_posix()
        try:
            decode_file(path, max_pixels)
        except ImageDecodeError as exc:
            if not skip_bad:
                raise ImageDecodeError(
                    f"cannot pack '{path}': {exc.reason}. Remove or replace the file, or "
                    "pass --skip-bad-images to leave unreadable files out",
                    exc.reason,
                ) from None
            skipped.append(name)
            continue
        data = path.read_bytes()
        y = -1 if label is None else label
        writer[len(labels)] = {
            "image": data,
            "label": y,
            "name": name,
            "index": len(labels),
            "crc32": zlib.crc32(data),
        }
        labels.append(y)
    if not labels:
        raise ImageDecodeError(f"no readable image in '{folder.root}'; nothing to pack")
    writer.done()
    writer.merge()
    return labels, skipped
