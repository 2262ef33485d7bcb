"""Colour ops on float images ``[B, 3, H, W]`` in [0, 1] with one factor per sample
(BYOL, Grill et al. 2020, Table 6: colour jitter, grayscale, solarization). Formulas are
those of ``torchvision.transforms.v2.functional`` on float images.

The ``*_`` functions work in place (the engine's own buffers); the others return new
tensors."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""torchvision's (ITU-R 601) luma weights of R, G, B."""

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
"""Indices of the four colour-jitter ops, in torchvision's ``ColorJitter`` numbering."""


def _per_sample(factor: Tensor, like: Tensor) -> Tensor:
    return factor.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def luma(images: Tensor) -> Tensor:
    """Grayscale ``[B, 1, H, W]``: ``0.2989 R + 0.587 G + 0.114 B`` (torchvision's order
    of operations, so the result is bit-identical)."""
    r, g, b = images.unbind(dim=1)
    gray = r.mul(GRAY_WEIGHTS[0]).add_(g, alpha=GRAY_WEIGHTS[1]).add_(b, alpha=GRAY_WEIGHTS[2])
    return gray.unsqueeze(1)


def grayscale(images: Tensor) -> Tensor:
    """Grayscale repeated over three channels (``rgb_to_grayscale(num_output_channels=3)``)."""
    return luma(images).expand_as(images).contiguous()


def adjust_brightness_(images: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor * image, 0, 1)``."""
    return images.mul_(_per_sample(factor, images)).clamp_(0.0, 1.0)


def _blend_(images: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """``clamp(factor * images + (1 - factor) * other, 0, 1)``, torchvision's ``_blend``."""
    f = _per_sample(factor, images)
    return images.mul_(f).addcmul_(other, 1.0 - f).clamp_(0.0, 1.0)


def adjust_contrast_(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale (expanded to the images' shape:
    ``addcmul_`` with two per-sample operands broadcast takes a scalar loop, ~10x slower;
    the values are the same)."""
    mean = luma(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend_(images, mean.expand_as(images).contiguous(), factor)


def adjust_saturation_(images: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its grayscale."""
    return _blend_(images, luma(images), factor)


def adjust_hue_(images: Tensor, factor: Tensor) -> Tensor:
    """Rotate the HSV hue by ``factor`` (in turns, [-0.5, 0.5]); saturation and value
    stay. RGB to hue as torchvision (Pillow's formula: red wins ties, then green); back
    with the closed form ``R = min + C * q(3)``, ``G = max - C * q(2)``,
    ``B = max - C * q(4)``, ``q(c) = clamp(|h - c| - 1, 0, 1)``, for ``h = 6 * hue`` in
    [0, 6), max = V and C = max - min = V * S (no division by V).

    Branch-free arithmetic only (``where``, comparisons and ``remainder`` are an order of
    magnitude slower on CPU): ``sign(max - x)`` is exactly 0 where channel x is the max."""
    r, g, b = images.unbind(dim=1)
    maxc = torch.maximum(r, g)
    torch.maximum(maxc, b, out=maxc)
    minc = torch.minimum(r, g)
    torch.minimum(minc, b, out=minc)
    chroma = maxc - minc
    not_r = torch.sign(maxc - r)  # 0 where red is the max, else 1
    not_g = torch.sign(maxc - g)
    # h * C in sixths of a turn: (g - b) where red is the max; else (b - r) + 2C where
    # green is; else (r - g) + 4C. Any h is right where C == 0.
    green_branch = (b - r).add_(chroma, alpha=2)
    blue_branch = (r - g).add_(chroma, alpha=4)
    blue_branch.sub_(green_branch).mul_(not_g).add_(green_branch)
    red_branch = g - b
    h = blue_branch.sub_(red_branch).mul_(not_r).add_(red_branch)
    h.div_(chroma.clamp(min=1e-12)).add_(6.0 * _per_sample(factor, images).view(-1, 1, 1))
    h.sub_(torch.floor(h * (1 / 6)).mul_(6.0))  # into [0, 6)
    q = torch.empty_like(h)
    for channel, centre in ((r, 3.0), (g, 2.0), (b, 4.0)):
        torch.sub(h, centre, out=q).abs_().sub_(1.0).clamp_(0.0, 1.0)
        if centre == 3.0:
            torch.addcmul(minc, chroma, q, out=channel)
        else:
            torch.addcmul(maxc, chroma, q, value=-1.0, out=channel)
    return images.clamp_(0.0, 1.0)


def adjust_brightness(images: Tensor, factor: Tensor) -> Tensor:
    """:func:`adjust_brightness_` on a copy (``v2.functional.adjust_brightness`` per sample)."""
    return adjust_brightness_(images.clone(), factor)


def adjust_contrast(images: Tensor, factor: Tensor) -> Tensor:
    """:func:`adjust_contrast_` on a copy (``v2.functional.adjust_contrast`` per sample)."""
    return adjust_contrast_(images.clone(), factor)


def adjust_saturation(images: Tensor, factor: Tensor) -> Tensor:
    """:func:`adjust_saturation_` on a copy (``v2.functional.adjust_saturation`` per sample)."""
    return adjust_saturation_(images.clone(), factor)


def adjust_hue(images: Tensor, factor: Tensor) -> Tensor:
    """:func:`adjust_hue_` on a copy (``v2.functional.adjust_hue`` per sample)."""
    return adjust_hue_(images.clone(), factor)


ADJUST_: dict[int, Callable[[Tensor, Tensor], Tensor]] = {
    BRIGHTNESS: adjust_brightness_,
    CONTRAST: adjust_contrast_,
    SATURATION: adjust_saturation_,
    HUE: adjust_hue_,
}


def color_jitter(
    images: Tensor, order: Tensor, factors: Tensor, apply: Tensor, enabled: tuple[bool, ...]
) -> Tensor:
    """:func:`color_jitter_` on a copy."""
    return color_jitter_(images.clone(), order, factors, apply, enabled)


def color_jitter_(
    images: Tensor, order: Tensor, factors: Tensor, apply: Tensor, enabled: tuple[bool, ...]
) -> Tensor:
    """In place: torchvision's ``ColorJitter`` with per-sample parameters: sample ``i``
    (where ``apply[i]``) runs the four ops in the order ``order[i]`` (a permutation of
    brightness, contrast, saturation, hue), op ``j`` with ``factors[i, j]``. Ops with
    ``enabled[j]`` false are skipped, as torchvision skips a zero-width range.

    The jittered samples are grouped by their order (at most 24 groups) and each group
    runs its four ops in place on a contiguous slice, so each op runs once per sample: a
    group whose samples are neighbours in ``images`` on its own rows, the other groups
    gathered once into one buffer and copied back."""
    chosen = apply.nonzero().squeeze(1)
    if chosen.numel() == 0 or not any(enabled):
        return images
    order, factors = order[chosen], factors[chosen]  # on the parameters' device
    code = (order * torch.tensor([64, 16, 4, 1], device=order.device)).sum(dim=1)
    code, sort = torch.sort(code, stable=True)
    _, counts = torch.unique_consecutive(code, return_counts=True)
    rows = chosen[sort].tolist()  # ascending within each group (stable sort)
    gathered: list[tuple[int, int]] = []
    start = 0
    for count in counts.tolist():
        if rows[start + count - 1] - rows[start] == count - 1:  # neighbours: in place
            _jitter_group(images.narrow(0, rows[start], count), order, factors,
                          sort[start : start + count], enabled)  # fmt: skip
        else:
            gathered.append((start, count))
        start += count
    if gathered:
        picked = [i for s, c in gathered for i in range(s, s + c)]
        index = torch.tensor([rows[i] for i in picked], device=images.device)
        x, offset = images.index_select(0, index), 0
        for s, c in gathered:
            _jitter_group(x[offset : offset + c], order, factors, sort[s : s + c], enabled)
            offset += c
        images.index_copy_(0, index, x)
    return images


def _jitter_group(
    x: Tensor, order: Tensor, factors: Tensor, group: Tensor, enabled: tuple[bool, ...]
) -> None:
    """The jitter ops of one order group on its samples ``x`` (in place); ``group``
    indexes the group's rows of ``order`` and ``factors``."""
    for op in order[group[0]].tolist():
        if enabled[op]:
            ADJUST_[op](x, factors[group, op])


def solarize(images: Tensor, threshold: float) -> Tensor:
    """Invert pixels at or above ``threshold``: ``x >= t ? 1 - x : x``, computed as
    ``x + invert * (1 - 2x)`` with ``invert = 1 - sign(relu(t - x))`` (exactly 1 at or
    above the threshold, else 0: branch-free, see :func:`adjust_hue_`)."""
    invert = torch.relu(threshold - images).sign_().neg_().add_(1.0)
    return (images * -2.0).add_(1.0).mul_(invert).add_(images)
