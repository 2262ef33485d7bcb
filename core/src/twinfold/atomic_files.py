"""Durable atomic file writes: write a temporary file next to the target, fsync it,
rename it over the target, fsync the directory. A crash at any moment leaves either the
old file or the new one, plus at most a hidden temporary file (``.tmp-*``)."""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

TMP_PREFIX = ".tmp-"
"""Name prefix of the temporary files; a run removes leftovers at its next start."""


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (no-op where directories can't sync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path``, renamed over ``path`` when the block succeeds
    (then the directory is synced) and removed when it fails."""
    tmp = _temporary(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync, rename it over
    ``path``, fsync the directory. On any failure the temporary file is removed and
    ``path`` is left as it was."""
    with _replacing(path) as tmp, open(tmp, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`). A full disk is
    an ``OSError`` (ENOSPC) that names the path, the bytes needed and the bytes free."""
    try:
        atomic_write(path, lambda file: file.write(data))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        free = shutil.disk_usage(path.parent).free
        raise OSError(
            errno.ENOSPC,
            f"no space left on device writing {path}: it needs {len(data):,} bytes and "
            f"{free:,} are free",
        ) from None


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory first, so a
    full disk is reported as such, see :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_link(source: Path, link: Path) -> None:
    """Point ``link`` at ``source``'s content atomically: a hard link where the file
    system has them, else an atomic copy."""
    with _replacing(link) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as file:
                os.fsync(file.fileno())


__all__ = [
    "TMP_PREFIX",
    "atomic_link",
    "atomic_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
]
