"""Files that must never crash the process: a malformed PNG that ends the process inside
torchvision's libpng, thousands of mangled images of every format, a decompression bomb,
and symbolic links leading out of the image folder."""

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from twinfold.config import DataConfig
from twinfold.data import ImageDecodeError
from twinfold.data.build import build_sources
from twinfold.data.folder import FolderSource, decode_bytes, decode_file
from twinfold.errors import ConfigError

FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    """A PNG chunk: length, type, data, CRC-32 of type and data (PNG spec, section 5.3)."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(width: int, height: int, idat: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
            + _chunk(b"IEND", b""))


def _encoded(fmt: str, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    lossless = {"lossless": True} if fmt == "WEBP" else {}
    Image.fromarray(pixels).save(buffer, format=fmt, **lossless)
    return buffer.getvalue()


def test_a_png_with_too_little_image_data_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """63 bytes with valid CRCs whose IDAT holds 6 of the 12,352 bytes the header promises:
    torchvision's libpng ends the process on it (SIGSEGV), so twinfold decodes PNG with
    Pillow."""
    rows = b"".join(b"\x00" + bytes(3 * 64) for _ in range(64))
    path = tmp_path / "short.png"
    path.write_bytes(_png(64, 64, zlib.compress(rows)[:6]))
    with pytest.raises(ImageDecodeError, match=r"short\.png.*truncated"):
        decode_file(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_mangled_images_raise_or_decode_never_crash(fmt: str) -> None:
    """Truncations and byte flips of a valid file: each one decodes to uint8 [3, H, W] or
    raises a Python error; none ends the process."""
    good, rng = _encoded(fmt), random.Random(fmt)
    outcomes = {"decoded": 0, "refused": 0}
    for i in range(60):
        data = bytearray(good)
        if i % 2:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(8, len(data))] = rng.randrange(256)
        else:
            data = data[: rng.randrange(0, len(data))]
        try:
            image = decode_bytes(bytes(data))
        except (ValueError, OSError, RuntimeError, SyntaxError, EOFError):
            outcomes["refused"] += 1
            continue
        assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
        outcomes["decoded"] += 1
    assert outcomes["refused"] >= 10, outcomes  # the mangling did reach the decoder


def test_every_format_still_decodes_to_its_pixels() -> None:
    expected = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    ).permute(2, 0, 1)
    for fmt in FORMATS:
        image = decode_bytes(_encoded(fmt))
        assert image.shape == (3, 40, 50), fmt
        if fmt != "JPEG":  # lossless (GIF: 256 colours, compared loosely)
            tolerance = 40 if fmt == "GIF" else 0
            assert (image.int() - expected.int()).abs().float().mean() <= tolerance, fmt


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """A PNG whose header says 16000 x 16000 (as a valid one of about 250 KB does, which
    decodes to 768 MB) is refused from the header alone: the message names the file,
    its size, the limit and the setting. The pixel data here is a stub, never read."""
    bomb = tmp_path / "bomb" / "bomb.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_png(16000, 16000, zlib.compress(b"\x00" + bytes(48000))))
    source = FolderSource(bomb.parent)
    with pytest.raises(ImageDecodeError, match=r"bomb\.png.*16000x16000.*data\.max_image_pixels"):
        source.load(0)
    small = tmp_path / "small"
    small.mkdir()
    (small / "a.png").write_bytes(_encoded("PNG"))
    assert FolderSource(small, max_pixels=2000).load(0).shape == (3, 40, 50)
    with pytest.raises(ImageDecodeError, match=r"40 = 2,000 pixels, over the limit of 1,999"):
        FolderSource(small, max_pixels=1999).load(0)
    cfg = DataConfig(dataset="folder", root=small, max_image_pixels=1999)
    with pytest.raises(ImageDecodeError, match="over the limit"):
        build_sources(cfg).train.load(0)


def _linked_folder(tmp_path: Path) -> tuple[Path, Path]:
    """root/cat holds a real image, a link to an image inside root and a link to one
    outside; root/dog is a link to a class folder outside."""
    outside = tmp_path / "elsewhere"
    (outside / "dogs").mkdir(parents=True)
    (outside / "secret.png").write_bytes(_encoded("PNG", 1))
    (outside / "dogs" / "d.png").write_bytes(_encoded("PNG", 2))
    root = tmp_path / "root"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(_encoded("PNG", 3))
    (root / "cat" / "b.png").symlink_to(root / "cat" / "a.png")
    return root, outside


def test_symbolic_links_out_of_the_folder_are_refused_unless_asked(tmp_path: Path) -> None:
    root, outside = _linked_folder(tmp_path)
    assert len(FolderSource(root)) == 2  # a link that stays inside is fine
    (root / "cat" / "c.png").symlink_to(outside / "secret.png")
    with pytest.raises(ConfigError, match=r"c\.png.*secret\.png.*data\.symlinks=follow"):
        FolderSource(root)
    (root / "cat" / "c.png").unlink()
    (root / "dog").symlink_to(outside / "dogs")
    with pytest.raises(ConfigError, match=r"dog/d\.png.*outside"):
        build_sources(DataConfig(dataset="folder", root=root, holdout_fraction=0.5))
    followed = FolderSource(root, symlinks="follow")
    assert followed.classes == ["cat", "dog"] and len(followed) == 3
    assert followed.load(2).shape == (3, 40, 50)
