"""``data.decode_on: device``: a batch's JPEGs decoded on the training device, then each
image cropped and resized to its views' boxes there (what the workers do otherwise).

A JPEG the device's decoder refuses is read again by its source on the CPU, under the
source's own policy: decoded there (a JPEG feature the device decoder lacks), skipped
for the next readable image of its class (``data.skip_bad_images``, the sample's view
parameters drawn again for that image's size), or an error naming the file."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from twinfold.augment.collate import EncodedImages
from twinfold.augment.views import BatchedViews, ViewParams
from twinfold.data.base import ImageSource
from twinfold.data.encoded import EncodedJPEG, decode_jpegs


def decode_images(batch: EncodedImages, device: torch.device) -> list[Tensor | None]:
    """Every image of ``batch`` on ``device``: the JPEGs decoded there in one call (one
    at a time after a failure, to find the culprits: None for each refused one)."""
    out: list[Tensor | None] = [
        None if isinstance(im, EncodedJPEG) else im.to(device) for im in batch.images
    ]
    jpegs = [i for i, im in enumerate(batch.images) if isinstance(im, EncodedJPEG)]
    if not jpegs:
        return out
    buffers = [batch.images[i].data for i in jpegs]
    try:
        decoded: list[Tensor | None] = list(decode_jpegs(buffers, device))
    except RuntimeError:
        decoded = [_decode_one(b, device) for b in buffers]
    for i, image in zip(jpegs, decoded, strict=True):
        out[i] = image
    return out


def _decode_one(buffer: Tensor, device: torch.device) -> Tensor | None:
    try:
        return decode_jpegs([buffer], device)[0]
    except RuntimeError:
        return None


def _with_sample(params: list[ViewParams], i: int, new: list[ViewParams]) -> list[ViewParams]:
    """``params`` with sample ``i``'s parameters replaced by ``new`` (one sample's)."""
    n = params[0].boxes.shape[0]
    before, after = torch.arange(i), torch.arange(i + 1, n)
    return [
        ViewParams.cat([p.select(before), q, p.select(after)])
        for p, q in zip(params, new, strict=True)
    ]


def decode_and_crop(
    engine: BatchedViews,
    batch: tuple[EncodedImages, Tensor, Sequence[ViewParams]],
    device: torch.device,
    source: ImageSource,
) -> tuple[list[Tensor], Tensor, list[ViewParams]]:
    """The batch as the workers would have collated it for images of differing sizes
    (per-view uint8 crops, indices, full-image parameters), with the crops made on
    ``device``; refused JPEGs read again by ``source`` (see the module's docstring)."""
    encoded, indices, params = batch
    params = list(params)
    images = decode_images(encoded, device)
    for i, image in enumerate(images):
        if image is None:  # raises ImageDecodeError naming the file when it cannot
            refused = encoded.images[i]  # an EncodedJPEG: its boxes were drawn for its header
            again = source.load(int(indices[i]))
            images[i] = again.expand(3, -1, -1).to(device)
            size = (int(again.shape[-2]), int(again.shape[-1]))
            if size != (refused.height, refused.width):  # skipped for another image
                params = _with_sample(
                    params, i, engine.sample_per_sample_sizes([encoded.seeds[i]], [size])
                )
    ready = [im for im in images if im is not None]
    crops, full = engine.crop_per_sample(ready, params)
    return crops, indices, full
