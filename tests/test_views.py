"""The per-sample view pipeline against torchvision's functional ops, probabilities and
ranges, and seeding."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from twinfold.builtins.views import (
    SimCLRViewsConfig,
    ViewConfig,
    blur_kernel_size,
    build_simclr_views,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IDENTITY = dict(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    flip_p=0.0,
    jitter_p=0.0,
    grayscale_p=0.0,
    blur_p=0.0,
    solarize_p=0.0,
)


def image(size: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)


def pipeline(size: int, **view: object):
    cfg = SimCLRViewsConfig(
        image_size=size, mean=MEAN, std=STD, views=[ViewConfig(**{**IDENTITY, **view})]
    )
    return build_simclr_views(cfg)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), MEAN, STD)


def test_identity_view_is_a_resize() -> None:
    img = image(24)
    (out,) = pipeline(16)(img)
    ref = normalise(TF.resize(img, [16, 16], antialias=True))
    torch.testing.assert_close(out, ref)
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)


def test_flip_solarize_grayscale_with_probability_one() -> None:
    img = image(16)
    torch.testing.assert_close(pipeline(16, flip_p=1.0)(img)[0], normalise(TF.horizontal_flip(img)))
    torch.testing.assert_close(
        pipeline(16, solarize_p=1.0, solarize_threshold=0.5)(img)[0],
        normalise(TF.solarize(img, 127.5)),
    )
    gray = pipeline(16, grayscale_p=1.0)(img)[0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    torch.testing.assert_close(gray, normalise(TF.rgb_to_grayscale(img, num_output_channels=3)))


def test_blur_with_fixed_sigma_matches_torchvision() -> None:
    img = image(32)
    out = pipeline(32, blur_p=1.0, blur_sigma=(1.5, 1.5), blur_kernel_fraction=0.2)(img)[0]
    k = blur_kernel_size(32, 0.2)
    assert k == 7
    torch.testing.assert_close(out, normalise(TF.gaussian_blur(img, [k, k], [1.5, 1.5])))
    assert blur_kernel_size(224, 0.1) == 23  # BYOL's kernel at ImageNet size


def test_jitter_brightness_only_is_a_scaled_image() -> None:
    img = image(16)
    torch.manual_seed(0)
    out = pipeline(16, jitter_p=1.0, brightness=0.4, contrast=0, saturation=0, hue=0)(img)[0]
    # undo normalisation and find the brightness factor; it must lie in [0.6, 1.4]
    pix = out * STD[0] + MEAN[0]
    base = TF.to_dtype(img, torch.float32, scale=True)
    mask = base > 0.05
    factor = (pix[mask] / base[mask]).median().item()
    assert 0.6 <= factor <= 1.4
    ref = normalise(TF.adjust_brightness(img, factor))
    assert (out - ref).abs().max() < 0.05


def test_probability_zero_skips_and_gray_input_becomes_rgb() -> None:
    gray = image(16)[:1]
    out = pipeline(16)(gray)[0]
    assert out.shape == (3, 16, 16)
    with pytest.raises(TypeError, match="uint8"):
        pipeline(16)(gray.float())


def test_same_seed_same_views_and_two_views_differ() -> None:
    views = build_simclr_views(SimCLRViewsConfig(image_size=16))
    img = image(32)
    torch.manual_seed(5)
    a = views(img)
    torch.manual_seed(5)
    b = views(img)
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])


def test_crop_area_and_probabilities_follow_the_config() -> None:
    """Statistics over seeded samples: flip frequency ~ p, crop areas inside the range."""
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:, :, :32] = 255  # left half white: a flip moves the white half to the right
    views = pipeline(64, flip_p=0.3)
    torch.manual_seed(0)
    flips = sum(float(views(img)[0][0, 0, -1] > 0) for _ in range(400)) / 400
    assert abs(flips - 0.3) < 0.07

    # coordinates encoded in the pixels reveal each crop's box in the source image
    side = 128
    ramp = (torch.arange(side) * 2).to(torch.uint8)
    coords = torch.stack(
        [
            ramp.expand(side, side),
            ramp[:, None].expand(side, side),
            torch.zeros(side, side, dtype=torch.uint8),
        ]
    )
    crop = pipeline(32, crop_scale=(0.25, 0.5), crop_ratio=(0.75, 4 / 3))
    torch.manual_seed(1)
    areas, ratios = [], []
    for _ in range(200):
        out = crop(coords)[0] * STD[0] + MEAN[0]  # back to [0, 1]
        xs, ys = out[0] * 255 / 2, out[1] * 255 / 2  # source pixel coordinates
        w = (xs.max() - xs.min()).item() + 1
        h = (ys.max() - ys.min()).item() + 1
        areas.append(w * h / side**2)
        ratios.append(w / h)
    assert 0.25 - 0.03 < min(areas) and max(areas) < 0.5 + 0.03
    assert 0.75 - 0.05 < min(ratios) and max(ratios) < 4 / 3 + 0.05
    assert max(areas) - min(areas) > 0.15  # the range is really sampled
