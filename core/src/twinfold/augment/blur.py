"""Separable Gaussian blur with one sigma per sample (BYOL, Grill et al. 2020, Table 6:
"Gaussian blurring", kernel 10% of the side, sigma in [0.1, 2]); the kernel and the
reflect padding are those of ``torchvision.transforms.v2.functional.gaussian_blur``."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def blur_kernel_size(image_size: int, fraction: float) -> int:
    """Odd kernel side nearest to ``fraction * image_size`` (ties go up), at least 3.

    BYOL (Grill et al. 2020, Table 6) blurs with a kernel of 10% of the side: 23 at 224.
    """
    half = math.floor((fraction * image_size - 1) / 2 + 0.5)
    return max(3, 2 * half + 1)


def gaussian_kernels(sigma: Tensor, kernel_size: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``[B, kernel_size]``, one per sigma, centred on
    the middle tap."""
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    offsets = torch.arange(kernel_size, device=sigma.device, dtype=torch.float32)
    offsets = offsets - (kernel_size - 1) / 2
    sigma = sigma.to(torch.float32)[:, None]
    return torch.softmax(-(offsets**2) / (2 * sigma**2), dim=1)


def blur_matrices(sigma: Tensor, kernel_size: int, size: int) -> Tensor:
    """``[B, size, size]`` matrices ``M`` with ``M @ column`` = the column convolved with
    sample ``b``'s kernel over reflect padding (``-1 -> 1``, ``size -> size - 2``)."""
    pad = kernel_size // 2
    if pad >= size:
        raise ValueError(
            f"blur kernel {kernel_size} needs images larger than {pad} pixels per side, "
            f"got {size}; lower blur_kernel_fraction"
        )
    kernels = gaussian_kernels(sigma, kernel_size)  # [B, k]
    device = kernels.device
    source = torch.arange(size, device=device)[:, None] + torch.arange(-pad, pad + 1, device=device)
    source = source.abs()
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # [S, k]
    batch = kernels.shape[0]
    matrices = torch.zeros(batch, size, size, device=device, dtype=torch.float32)
    taps = kernels[:, None, :].expand(batch, size, kernel_size)
    return matrices.scatter_add_(2, source.expand(batch, size, kernel_size), taps)


BLOCK = 32
"""Output pixels per block: each block multiplies only the band of inputs it needs."""


def _blocks(size: int, pad: int) -> list[tuple[int, int, int, int]]:
    """(first output, end output, first input, end input) of each block of an axis."""
    width = size if size <= 2 * BLOCK else BLOCK
    return [
        (a, min(a + width, size), max(0, a - pad), min(size, a + width + pad))
        for a in range(0, size, width)
    ]


def gaussian_blur(images: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image of float ``[B, C, H, W]`` with its own ``sigma[i]``: batched
    products with banded matrices, rows then columns, i.e. a separable convolution.
    Large images go in blocks of :data:`BLOCK` outputs that multiply only the
    ``BLOCK + kernel_size - 1`` inputs they need."""
    batch, channels, height, width = images.shape
    pad = kernel_size // 2
    sigma = sigma.to(images.device)
    mx = blur_matrices(sigma, kernel_size, width)
    my = mx if height == width else blur_matrices(sigma, kernel_size, height)
    flat = images.reshape(batch, channels * height, width)
    parts = [
        torch.bmm(flat[:, :, lo:hi], mx[:, a:b, lo:hi].transpose(1, 2))
        for a, b, lo, hi in _blocks(width, pad)
    ]
    rows = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)).view(images.shape)
    parts = [
        torch.matmul(my[:, None, a:b, lo:hi], rows[:, :, lo:hi, :])
        for a, b, lo, hi in _blocks(height, pad)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)
