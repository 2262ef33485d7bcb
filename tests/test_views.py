"""The per-sample view pipeline against torchvision's functional ops: each op with fixed
parameters, probabilities 0 and 1, the contract's op order, seeding, and the statistics
of sampled crops, flips and blur sigmas."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF

from twinfold.builtins.views import (
    IMAGENET_MEAN,
    IMAGENET_STD,
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


@pytest.fixture(autouse=True)
def one_thread():
    """Per-sample ops on tiny images: one intra-op thread (as in data-loader workers) is
    fastest, and far faster than two when the cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def image(size: int = 24, seed: int = 0, height: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height or size, size), dtype=torch.uint8, generator=g)


def pipeline(size: int, **view: object):
    """A ONE-view pipeline for testing the ops (configs need two views: built unvalidated)."""
    cfg = SimCLRViewsConfig.model_construct(
        image_size=size, mean=MEAN, std=STD, views=[ViewConfig(**{**IDENTITY, **view})]
    )
    return build_simclr_views(cfg)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), MEAN, STD)


def test_identity_view_is_a_resize_with_float_output() -> None:
    img = image(24)
    (out,) = pipeline(16)(img)
    torch.testing.assert_close(out, normalise(TF.resize(img, [16, 16], antialias=True)))
    assert out.dtype == torch.float32 and out.shape == (3, 16, 16)


def test_non_square_input_and_plain_view() -> None:
    img = image(16, height=24)  # [3, 24, 16]
    # no 1:1 crop of the full area fits: torchvision falls back to the central square
    (out,) = pipeline(12)(img)
    ref = TF.resize(TF.center_crop(img, [16, 16]), [12, 12], antialias=True)
    torch.testing.assert_close(out, normalise(ref))
    # plain: shorter side to 12, centre crop, float, normalise
    plain = pipeline(12).plain(img)
    ref = TF.center_crop(TF.resize(img, 12, antialias=True), [12, 12])
    torch.testing.assert_close(plain, normalise(ref))


def test_normalisation_numbers() -> None:
    flat = torch.full((3, 20, 20), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    torch.testing.assert_close(pipeline(8).plain(flat), torch.full((3, 8, 8), -1.2))
    default = build_simclr_views(SimCLRViewsConfig(image_size=8))
    expected = [(0.2 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    torch.testing.assert_close(default.plain(flat)[:, 0, 0], torch.tensor(expected))


def test_flip_grayscale_and_solarize_with_probability_one() -> None:
    img = image(16)
    torch.testing.assert_close(pipeline(16, flip_p=1.0)(img)[0], normalise(TF.horizontal_flip(img)))
    gray = pipeline(16, grayscale_p=1.0)(img)[0]
    assert gray.shape == (3, 16, 16)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    torch.testing.assert_close(gray, normalise(TF.rgb_to_grayscale(img, num_output_channels=3)))
    # the threshold is on [0, 1] intensities: the same as solarizing the float image
    solar = pipeline(16, solarize_p=1.0, solarize_threshold=0.3)(img)[0]
    as_float = TF.to_dtype(img, torch.float32, scale=True)
    torch.testing.assert_close(solar, TF.normalize(TF.solarize(as_float, 0.3), MEAN, STD))
    assert (solar != normalise(img)).any() and (solar == normalise(img)).any()


@pytest.mark.parametrize(
    ("size", "fraction", "kernel"),
    [(224, 0.1, 23), (32, 0.1, 3), (8, 0.1, 3), (96, 0.1, 9), (59, 0.1, 5), (60, 0.1, 7)],
)
def test_blur_kernel_is_the_nearest_odd_side(size: int, fraction: float, kernel: int) -> None:
    assert blur_kernel_size(size, fraction) == kernel


def test_blur_with_fixed_sigma_matches_torchvision() -> None:
    img = image(32)
    out = pipeline(32, blur_p=1.0, blur_sigma=(1.5, 1.5), blur_kernel_fraction=0.2)(img)[0]
    assert blur_kernel_size(32, 0.2) == 7
    torch.testing.assert_close(out, normalise(TF.gaussian_blur(img, [7, 7], [1.5, 1.5])))


def test_jitter_brightness_only_is_a_scaled_image() -> None:
    img = image(16)
    torch.manual_seed(0)
    out = pipeline(16, jitter_p=1.0, brightness=0.4, contrast=0, saturation=0, hue=0)(img)[0]
    pix = out * STD[0] + MEAN[0]  # undo the normalisation, find the brightness factor
    base = TF.to_dtype(img, torch.float32, scale=True)
    mask = (base > 0.05) & (pix < 0.99)
    factor = (pix[mask] / base[mask]).median().item()
    assert 0.6 <= factor <= 1.4 and abs(factor - 1) > 1e-3
    assert (out - normalise(TF.adjust_brightness(img, factor))).abs().max() < 0.05


def test_ops_run_in_the_contract_order_with_torchvision_semantics() -> None:
    """The whole view equals the chain built by hand from torchvision v2, draw for draw."""
    view = ViewConfig(solarize_p=0.3, blur_sigma=(0.1, 2.0))
    views = build_simclr_views(SimCLRViewsConfig(image_size=20, views=[view, view]))
    hand = v2.Compose(
        [
            v2.RandomResizedCrop(20, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            v2.RandomGrayscale(0.2),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5),
            v2.RandomSolarize(127.5, p=0.3),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    img = image(40)
    for seed in range(12):
        torch.manual_seed(seed)
        ours = views(img)
        torch.manual_seed(seed)
        ref = [hand(img), hand(img)]
        for a, b in zip(ours, ref, strict=True):
            torch.testing.assert_close(a, b)


def test_probability_zero_skips_the_op_and_draws_nothing() -> None:
    img = image(24)
    strong = dict(brightness=0.9, contrast=0.9, saturation=0.9, hue=0.5)
    skipped = pipeline(16, jitter_p=0.0, grayscale_p=0.0, blur_p=0.5, **strong)
    hand = v2.Compose(
        [
            v2.RandomResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), antialias=True),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 2.0))], p=0.5),
        ]
    )
    for seed in range(10):
        torch.manual_seed(seed)
        ours = skipped(img)[0]
        torch.manual_seed(seed)
        torch.testing.assert_close(ours, normalise(hand(img)))


def test_probability_one_always_applies() -> None:
    img = image(24)
    plain = pipeline(16)(img)[0]
    jitter = pipeline(16, jitter_p=1.0, brightness=0.5, contrast=0, saturation=0, hue=0)
    blur = pipeline(16, blur_p=1.0, blur_sigma=(1.0, 2.0))
    torch.manual_seed(0)
    assert all(not torch.equal(jitter(img)[0], plain) for _ in range(30))
    assert all(not torch.equal(blur(img)[0], plain) for _ in range(30))


def test_input_checks_and_gray_input() -> None:
    gray = image(16)[:1]
    out = pipeline(16, jitter_p=1.0, hue=0.3)(gray)[0]
    assert out.shape == (3, 16, 16) and torch.equal(out[0], out[2])
    assert pipeline(16).plain(gray).shape == (3, 16, 16)
    with pytest.raises(TypeError, match="uint8"):
        pipeline(16)(gray.float())
    with pytest.raises(ValueError, match="C = 1 or 3"):
        pipeline(16)(torch.zeros(4, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_size must be set"):
        build_simclr_views(SimCLRViewsConfig())
    with pytest.raises(ValueError, match="at least one view"):
        build_simclr_views(SimCLRViewsConfig.model_construct(image_size=8, views=[]))


def test_same_seed_same_views_and_views_differ() -> None:
    three = SimCLRViewsConfig(image_size=16, views=[ViewConfig()] * 3)
    views = build_simclr_views(three)
    assert views.num_views == 3
    img = image(32)
    torch.manual_seed(5)
    a = views(img)
    torch.manual_seed(5)
    b = views(img)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    assert all(v.dtype == torch.float32 and v.shape == (3, 16, 16) for v in a)


def test_flip_frequency_and_crop_boxes_follow_the_config() -> None:
    img = torch.zeros(3, 64, 64, dtype=torch.uint8)
    img[:, :, :32] = 255  # left half white: a flip moves it to the right
    flip = pipeline(64, flip_p=0.3)
    torch.manual_seed(0)
    flips = sum(float(flip(img)[0][0, 0, -1] > 0) for _ in range(400)) / 400
    assert abs(flips - 0.3) < 0.07

    # pixel values encode source coordinates and reveal each crop's box
    side = 128
    ramp = (torch.arange(side) * 2).to(torch.uint8)
    zeros = torch.zeros(side, side, dtype=torch.uint8)
    coords = torch.stack([ramp.expand(side, side), ramp[:, None].expand(side, side), zeros])
    crop = pipeline(32, crop_scale=(0.25, 0.5), crop_ratio=(0.75, 4 / 3))
    torch.manual_seed(1)
    areas, ratios = [], []
    for _ in range(200):
        out = crop(coords)[0] * STD[0] + MEAN[0]
        xs, ys = out[0] * 255 / 2, out[1] * 255 / 2
        w = (xs.max() - xs.min()).item() + 1
        h = (ys.max() - ys.min()).item() + 1
        areas.append(w * h / side**2)
        ratios.append(w / h)
    assert 0.25 - 0.03 < min(areas) and max(areas) < 0.5 + 0.03
    assert 0.75 - 0.05 < min(ratios) and max(ratios) < 4 / 3 + 0.05
    assert min(areas) < 0.28 and max(areas) > 0.46  # the whole range is sampled
    assert abs(sum(areas) / len(areas) - 0.375) < 0.03  # uniform area


def test_blur_frequency_and_sigma_range() -> None:
    """Fit each blurred view's sigma on a grid: the samples cover the configured range."""
    img = torch.zeros(3, 32, 32, dtype=torch.uint8)
    img[:, 8:24, 10:22] = 255
    blur = pipeline(32, blur_p=0.5, blur_sigma=(0.5, 2.0), blur_kernel_fraction=0.3)
    k = blur_kernel_size(32, 0.3)
    assert k == 9
    grid = torch.arange(0.40, 2.21, 0.01)
    refs = torch.stack([normalise(TF.gaussian_blur(img, [k, k], [s.item()] * 2)) for s in grid])
    unblurred = normalise(img)
    torch.manual_seed(3)
    sigmas, n = [], 300
    for _ in range(n):
        out = blur(img)[0]
        if torch.equal(out, unblurred):
            continue
        sigmas.append(grid[(refs - out).abs().flatten(1).sum(1).argmin()].item())
    assert abs(len(sigmas) / n - 0.5) < 0.08
    assert 0.45 <= min(sigmas) < 0.6 and 1.9 < max(sigmas) <= 2.05
    assert abs(sum(sigmas) / len(sigmas) - 1.25) < 0.1


def test_a_view_with_its_own_size() -> None:
    """Multi-crop views: ``size`` overrides the pipeline's ``image_size`` for one view
    (its blur kernel follows its own side); ``plain`` keeps ``image_size``."""
    cfg = SimCLRViewsConfig(image_size=16, views=[ViewConfig(), ViewConfig(size=6)])
    views = build_simclr_views(cfg)
    out = views(image(24))
    assert [tuple(v.shape) for v in out] == [(3, 16, 16), (3, 6, 6)]
    assert tuple(views.plain(image(24)).shape) == (3, 16, 16)
    with pytest.raises(ValueError, match="size"):
        ViewConfig(size=0)
