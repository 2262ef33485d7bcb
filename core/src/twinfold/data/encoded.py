"""JPEG decoding, on the CPU or for a whole batch on the training device.

TorchCodec decodes when it is installed (``pip install 'twinfold[torchcodec]'``): on the
CPU with libjpeg-turbo, on CUDA with nvJPEG, a batch in one call. Without it, torchvision's
``decode_jpeg`` does the same; torchvision 0.29 deprecates its codecs in favour of
TorchCodec, and both give the same pixels on the CPU (``tests/test_device_decode.py``).
Both apply a JPEG's EXIF orientation on the CPU."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class EncodedJPEG:
    """A JPEG kept encoded in a data-loader worker, to be decoded on the training device
    (``data.decode_on: device``); its header was read and checked there."""

    data: Tensor
    """The file's bytes, uint8 ``[N]``."""
    height: int
    width: int
    name: str
    """The file (or shard sample), quoted, for error messages."""


@functools.cache
def _torchcodec_decode_jpeg() -> Callable[..., Any] | None:
    """TorchCodec's ``decode_jpeg``, or None when TorchCodec is not installed or does not
    load (a build for another torch)."""
    if importlib.util.find_spec("torchcodec") is None:
        return None
    try:
        from torchcodec.decoders import decode_jpeg
    except (ImportError, OSError, RuntimeError):
        return None
    return decode_jpeg


def decode_jpegs(buffers: list[Tensor], device: torch.device | str) -> list[Tensor]:
    """Decode uint8 JPEG byte tensors (on the CPU) to uint8 RGB ``[3, H, W]`` images on
    ``device``, a batch in one call: TorchCodec's ``decode_jpeg`` when installed, else
    torchvision's (nvJPEG on CUDA too). A corrupt stream raises ``RuntimeError``."""
    device = torch.device(device)
    torchcodec_decode = _torchcodec_decode_jpeg()
    if torchcodec_decode is not None:
        return list(torchcodec_decode(list(buffers), mode="RGB", device=device))
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its codecs for TorchCodec
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        if device.type == "cpu":
            return [
                decode_jpeg(b, mode=ImageReadMode.RGB, apply_exif_orientation=True) for b in buffers
            ]
        return list(decode_jpeg(list(buffers), mode=ImageReadMode.RGB, device=device))
