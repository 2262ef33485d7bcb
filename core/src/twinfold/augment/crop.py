"""Random resized crop and horizontal flip for a whole batch (BYOL, Grill et al. 2020,
Table 6: "random crop" and "flip"; sampled as torchvision's ``RandomResizedCrop``).

Each sample's crop box is drawn like torchvision does it: up to ten tries of
``area ~ U(scale) * H * W`` and ``log(ratio) ~ U(log ratio)``, the first box that fits
wins, else the central crop clamped to the ratio range. The flip is folded into the
resampling, which is one kernel call for the whole batch: ``grid_sample`` (bilinear) where
every box is enlarged, and for boxes that must shrink with antialiasing, batched matrix
products ``Wy @ image @ Wx^T`` with one separable weight matrix per sample and axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

CROP_TRIES = 10
"""torchvision's number of tries before it falls back to the central crop."""


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> Tensor:
    """Per-sample integer crop boxes ``[batch, 4]`` as (top, left, height, width), int64,
    on the generator's device, drawn as ``torchvision.transforms.v2.RandomResizedCrop``."""
    if not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
        raise ValueError(
            f"crop_scale {scale} and crop_ratio {ratio} must be positive (min, max) ranges"
        )
    f64 = dict(dtype=torch.float64, device=generator.device)
    u = torch.rand(batch, CROP_TRIES, 2, generator=generator, **f64)
    position = torch.rand(batch, 2, generator=generator, **f64)
    return crop_boxes_from_uniforms(u, position, height, width, scale, ratio)


def crop_boxes_from_uniforms(
    u: Tensor,
    position: Tensor,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> Tensor:
    """:func:`sample_crop_boxes` from its uniform draws: float64 ``u`` ``[batch,
    CROP_TRIES, 2]`` (area, log-ratio per try) and ``position`` ``[batch, 2]`` (top,
    left); boxes on their device."""
    device = u.device
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    # torch.round and Python's round both round half to even
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first fitting try
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.floor(position[:, 0] * (height - h + 1)).clamp(max=height - h)
    left = torch.floor(position[:, 1] * (width - w + 1)).clamp(max=width - w)

    fb_top, fb_left, fb_h, fb_w = central_crop(height, width, ratio)
    found = fits.any(dim=1)
    boxes = torch.stack([top, left, h, w], dim=1).to(torch.int64)
    fallback = torch.tensor([fb_top, fb_left, fb_h, fb_w], dtype=torch.int64, device=device)
    return torch.where(found[:, None], boxes, fallback)


def crop_box_size(
    tries: Sequence[Sequence[float]],
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int]:
    """The (height, width) of the box :func:`crop_boxes_from_uniforms` draws from one
    sample's ``tries`` (``CROP_TRIES`` pairs of uniforms), in plain Python floats: about
    50 times faster for one sample than the tensor version, for decisions made per
    sample before decoding (``tests/test_jpeg_reduction.py`` checks the two agree)."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for u_area, u_ratio in tries:
        area = height * width * (scale[0] + (scale[1] - scale[0]) * u_area)
        aspect = math.exp(log_lo + (log_hi - log_lo) * u_ratio)
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return h, w
    _, _, h, w = central_crop(height, width, ratio)
    return h, w


def central_crop(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """torchvision's fallback box (top, left, height, width): the whole image, narrowed to
    the nearest aspect ratio in range."""
    in_ratio = width / height
    w, h = width, height
    if in_ratio < min(ratio):
        h = round(w / min(ratio))
    elif in_ratio > max(ratio):
        w = round(h * max(ratio))
    return (height - h) // 2, (width - w) // 2, h, w


def axis_weights(
    start: Tensor, length: Tensor, in_size: int, out_size: int, antialias: bool
) -> Tensor:
    """Per-sample resampling matrices ``[B, out_size, in_size]`` of a crop of pixels
    ``[start, start + length)`` to ``out_size`` pixels along one axis.

    Half-pixel-centred triangle filter as torch's bilinear ``interpolate``
    (``align_corners=False``); with ``antialias`` the filter is widened by the
    downscaling factor as torch's ``antialias=True`` (PIL's scheme). Pixels outside the
    crop get no weight and each row is renormalised, which equals torch's edge clamping.
    """
    start = start.to(torch.float32)
    length = length.to(torch.float32)
    device = start.device
    step = length / out_size  # [B] source pixels per output pixel
    support = step.clamp(min=1.0) if antialias else torch.ones_like(step)
    out_pos = torch.arange(out_size, device=device, dtype=torch.float32) + 0.5
    centre = start[:, None] + step[:, None] * out_pos  # [B, out]
    pixel = torch.arange(in_size, device=device, dtype=torch.float32) + 0.5  # [in]
    distance = (pixel - centre[:, :, None]).abs() / support[:, None, None]
    weights = (1.0 - distance).clamp_(min=0.0)
    inside = (pixel >= start[:, None]) & (pixel < (start + length)[:, None])  # [B, in]
    weights = weights * inside[:, None, :]
    return weights / weights.sum(dim=-1, keepdim=True)


def grid_coords(start: Tensor, length: Tensor, in_size: int, out_size: int) -> Tensor:
    """``grid_sample`` coordinates ``[B, out_size]`` of plain bilinear resizing of the crop
    ``[start, start + length)``: half-pixel centres, clamped to the crop's edge pixels as
    torch's ``interpolate`` clamps to the image it resizes."""
    start = start.to(torch.float32)[:, None]
    length = length.to(torch.float32)[:, None]
    out_pos = torch.arange(out_size, device=start.device, dtype=torch.float32) + 0.5
    source = start + out_pos * (length / out_size) - 0.5
    source = torch.minimum(torch.maximum(source, start), start + length - 1)
    return (2 * source + 1) / in_size - 1  # align_corners=False normalisation


def _sample_grid(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None) -> Tensor:
    batch, _, height, width = images.shape
    top, left, box_h, box_w = boxes.unbind(dim=1)
    gx = grid_coords(left, box_w, width, size)
    if flip is not None:
        gx = torch.where(flip[:, None], gx.flip(1), gx)
    gy = grid_coords(top, box_h, height, size)
    grid = torch.stack(
        (gx[:, None, :].expand(batch, size, size), gy[:, :, None].expand(batch, size, size)),
        dim=-1,
    )
    return F.grid_sample(
        images.to(torch.float32), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _matrix_resample(
    images: Tensor, boxes: Tensor, size: int, flip: Tensor | None, antialias: bool
) -> Tensor:
    batch, channels, height, width = images.shape
    top, left, box_h, box_w = boxes.unbind(dim=1)
    wy = axis_weights(top, box_h, height, size, antialias)  # [B, S, H]
    wx = axis_weights(left, box_w, width, size, antialias)  # [B, S, W]
    if flip is not None:
        wx = torch.where(flip[:, None, None], wx.flip(1), wx)
    x = images.to(torch.float32).reshape(batch, channels * height, width)
    cols = torch.bmm(x, wx.transpose(1, 2)).view(batch, channels, height, size)  # [B,C,H,S]
    return torch.matmul(wy.unsqueeze(1), cols)  # [B, 1, S, H] @ [B, C, H, S]


def _whole_images(images: Tensor, boxes: Tensor, size: int) -> bool:
    """Whether every box is the whole ``size x size`` image (crops already resized)."""
    height, width = images.shape[-2:]
    if height != size or width != size:
        return False
    return bool((boxes == torch.tensor([0, 0, size, size], device=boxes.device)).all())


def _flip_copy(images: Tensor, flip: Tensor | None) -> Tensor:
    """float32 copy of ``images`` with the samples where ``flip`` is true mirrored: on a
    CPU each before its conversion (a quarter of the bytes to move for uint8), elsewhere
    all at once (one kernel)."""
    out = images.to(torch.float32, copy=True, memory_format=torch.contiguous_format)
    if flip is None:
        return out
    chosen = flip.nonzero().squeeze(1)
    if out.device.type != "cpu":
        chosen = chosen.to(out.device)
        return out.index_copy_(0, chosen, out.index_select(0, chosen).flip(3))
    for i in chosen.tolist():
        out[i].copy_(images[i].flip(-1))
    return out


def resized_crop(
    images: Tensor,
    boxes: Tensor,
    size: int,
    *,
    flip: Tensor | None = None,
    antialias: bool = True,
    scale: float = 1.0,
) -> Tensor:
    """Crop each image of ``[B, C, H, W]`` to its box (top, left, height, width), resize
    it to ``size x size`` (bilinear) and mirror the samples where ``flip`` is true.

    Returns float32 ``[B, C, size, size]`` multiplied by ``scale`` (``1 / 255`` turns
    uint8 into [0, 1]). Matches ``v2.functional.resized_crop`` (then ``horizontal_flip``)
    per sample on float images, up to float rounding. Samples whose box is enlarged on
    both axes (or all, without ``antialias``) take one ``grid_sample`` call (4 taps per
    pixel); boxes shrunk on some axis take the antialiasing weight matrices. Where every
    box is the whole image and already ``size`` wide (crops made elsewhere), the images
    are copied exactly (``grid_sample``'s identity map is off by up to 6e-8 relative at
    sizes that are no power of two).
    """
    if _whole_images(images, boxes, size):
        return _flip_copy(images, flip).mul_(scale)
    if antialias:  # decided where the parameters live (no device sync for CPU ones)
        chosen = ((boxes[:, 2] > size) | (boxes[:, 3] > size)).nonzero().squeeze(1)
    else:
        chosen = boxes.new_zeros(0)
    device = images.device
    boxes, chosen = boxes.to(device), chosen.to(device)
    flip = None if flip is None else flip.to(device)
    if chosen.numel() == boxes.shape[0]:
        out = _matrix_resample(images, boxes, size, flip, antialias)
    else:
        out = _sample_grid(images, boxes, size, flip)
        if chosen.numel():
            sub = (t.index_select(0, chosen) for t in (images, boxes))
            sub_flip = None if flip is None else flip.index_select(0, chosen)
            out.index_copy_(0, chosen, _matrix_resample(*sub, size, sub_flip, antialias))
    return out.mul_(scale) if scale != 1.0 else out
