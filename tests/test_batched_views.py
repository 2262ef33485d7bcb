"""The batched view engine against torchvision v2's functional ops applied per sample
(each op with fixed parameters, then whole views), against the per-sample pipeline, and
the statistics of its sampled parameters.

Tolerances: on float32 images every op computes torchvision's formula, so the results
agree to float rounding (ATOL = 1e-5 on [0, 1] values; 1e-4 after normalisation, which
divides by std ~0.22). torchvision's uint8 kernels resample in fixed point and round or
truncate to uint8 after each op, so against them we allow 1/255 per rounding step.

Statistical tests draw 20,000 samples; a frequency must lie within 4 standard deviations
of its probability (a false failure has probability ~6e-5 per check) and a two-sample
Kolmogorov-Smirnov statistic below the 1e-6 critical value."""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2 as v2
import torchvision.transforms.v2.functional as TF

from twinfold.augment import BatchedView, BatchedViews, ViewParams
from twinfold.augment.blur import gaussian_blur
from twinfold.augment.color import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    grayscale,
    solarize,
)
from twinfold.augment.crop import resized_crop, sample_crop_boxes
from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig, build_simclr_views
from twinfold_byol.views import BYOLViewsConfig

ATOL = 1e-5
N = 20_000
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
TV_OPS = {
    BRIGHTNESS: TF.adjust_brightness,
    CONTRAST: TF.adjust_contrast,
    SATURATION: TF.adjust_saturation,
    HUE: TF.adjust_hue,
}


def images(batch: int = 8, height: int = 40, width: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)


def floats(batch: int = 8, size: int = 20, seed: int = 0) -> torch.Tensor:
    return images(batch, size, size, seed).float() / 255


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def within_4_sigma(hits: torch.Tensor, p: float) -> None:
    n = hits.numel()
    rate = hits.float().mean().item()
    bound = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) <= bound, f"rate {rate:.4f} vs p {p} (bound {bound:.4f})"


def ks_statistic(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov-Smirnov statistic sup |F_a - F_b|."""
    grid = torch.cat([a, b]).sort().values
    fa = torch.searchsorted(a.sort().values, grid, right=True) / a.numel()
    fb = torch.searchsorted(b.sort().values, grid, right=True) / b.numel()
    return (fa - fb).abs().max().item()


def ks_critical(n: int, m: int, alpha: float = 1e-6) -> float:
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


# --- each op with fixed parameters against torchvision ------------------------------------


@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [16, 56])  # down- and upscaling
def test_resized_crop_matches_torchvision(antialias: bool, size: int) -> None:
    img = images(12)
    boxes = sample_crop_boxes(12, 40, 48, (0.08, 1.0), (3 / 4, 4 / 3), gen(1))
    boxes[0] = torch.tensor([0, 0, 40, 48])  # whole image
    boxes[1] = torch.tensor([39, 47, 1, 1])  # one pixel in the corner
    out = resized_crop(img, boxes, size, antialias=antialias, scale=1 / 255)
    assert out.shape == (12, 3, size, size) and out.dtype == torch.float32
    as_float = img.float() / 255
    for i, box in enumerate(boxes.tolist()):
        # float: the same formula, so float rounding only
        ref = TF.resized_crop(as_float[i], *box, [size, size], antialias=antialias)
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)
        # uint8: torchvision resamples in fixed point and rounds to uint8
        ref8 = TF.resized_crop(img[i], *box, [size, size], antialias=antialias).float() / 255
        assert (out[i] - ref8).abs().max().item() <= 1 / 255 + ATOL


def test_flip_mirrors_the_resized_crop() -> None:
    img = images(6)
    boxes = sample_crop_boxes(6, 40, 48, (0.2, 1.0), (3 / 4, 4 / 3), gen(2))
    flip = torch.tensor([True, False, True, True, False, False])
    out = resized_crop(img, boxes, 24, flip=flip, scale=1 / 255)
    for i, box in enumerate(boxes.tolist()):
        ref = TF.resized_crop(img[i].float() / 255, *box, [24, 24], antialias=True)
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)


def test_whole_image_boxes_copy_the_crops_exactly() -> None:
    """Crops already resized (every box the whole image, as :meth:`crop_per_sample`
    leaves them) are copied, flipped where asked and scaled, with no resampling: exact
    at any side (``grid_sample``'s identity map is not, at sides that are no power of 2),
    and float input is copied, not changed."""
    img = images(6, 30, 30, seed=4)
    flip = torch.tensor([True, False, True, True, False, False])
    boxes = torch.tensor([[0, 0, 30, 30]] * 6)
    out = resized_crop(img, boxes, 30, flip=flip, scale=1 / 255)
    ref = torch.where(flip[:, None, None, None], img.flip(3), img).float().mul(1 / 255)
    assert torch.equal(out, ref)
    as_float = img.float()
    out = resized_crop(as_float, boxes, 30, flip=flip)
    assert torch.equal(out, ref.mul(255).round()) and torch.equal(as_float, img.float())
    # one box short of the whole image: resampled as before
    boxes[2] = torch.tensor([1, 0, 29, 30])
    out = resized_crop(img, boxes, 30, flip=flip, scale=1 / 255)
    assert not torch.equal(out[2], ref[2])
    torch.testing.assert_close(out[3], ref[3], atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("op", "ours", "low", "high"),
    [
        (BRIGHTNESS, adjust_brightness, 0.0, 2.0),
        (CONTRAST, adjust_contrast, 0.0, 2.0),
        (SATURATION, adjust_saturation, 0.0, 2.0),
        (HUE, adjust_hue, -0.5, 0.5),
    ],
)
def test_jitter_ops_match_torchvision(
    op: int, ours: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], low: float, high: float
) -> None:
    x = floats(16)
    x[0] = 0.5  # a gray image: zero chroma, zero contrast
    factors = torch.linspace(low, high, 16)
    out = ours(x, factors)
    ref = torch.stack([TV_OPS[op](x[i], f) for i, f in enumerate(factors.tolist())])
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert (out - x).abs().max() > 0.1  # the op does something


def test_color_jitter_runs_each_samples_own_order() -> None:
    x = floats(24)
    g = gen(3)
    order = torch.rand(24, 4, generator=g).argsort(dim=1)
    factors = torch.stack(
        [
            0.5 + torch.rand(24, generator=g),
            0.5 + torch.rand(24, generator=g),
            0.5 + torch.rand(24, generator=g),
            torch.rand(24, generator=g) - 0.5,
        ],
        dim=1,
    )
    apply = torch.rand(24, generator=g) < 0.8
    apply[:2] = torch.tensor([True, False])
    out = color_jitter(x, order, factors, apply, (True, True, True, True))
    skip_contrast = color_jitter(x, order, factors, apply, (True, False, True, True))
    for i in range(24):
        ref = ref_no_contrast = x[i]
        if apply[i]:
            for op in order[i].tolist():
                ref = TV_OPS[op](ref, factors[i, op].item())
                if op != CONTRAST:
                    ref_no_contrast = TV_OPS[op](ref_no_contrast, factors[i, op].item())
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)
        torch.testing.assert_close(skip_contrast[i], ref_no_contrast, atol=ATOL, rtol=0)
    # the order matters: a fixed order gives other images
    fixed = color_jitter(x, torch.arange(4).expand(24, 4), factors, apply, (True,) * 4)
    assert (fixed - out).abs().max() > 0.05


def test_color_jitter_groups_in_place_or_gathered_give_each_samples_own_result(
    one_thread: None,
) -> None:
    """Samples sharing an order run as one group: in place where they are neighbours
    (rows 0-1 and the lone rows), gathered where they are not (rows 2 and 5); either way
    each sample's result is bit-identical to jittering it alone."""
    x = floats(7, 24, seed=5)
    g = gen(6)
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(7)])
    order[1], order[5] = order[0], order[2]
    order[3:5] = torch.tensor([[3, 2, 1, 0], [0, 1, 2, 3]])
    factors = torch.cat(
        [0.5 + torch.rand(7, 3, generator=g), torch.rand(7, 1, generator=g) - 0.5], 1
    )
    apply = torch.tensor([True, True, True, True, True, True, False])
    enabled = (True, True, True, True)
    out = color_jitter(x, order, factors, apply, enabled)
    for i in range(7):
        alone = color_jitter(
            x[i : i + 1], order[i : i + 1], factors[i : i + 1], apply[i : i + 1], enabled
        )
        assert torch.equal(out[i : i + 1], alone), i
    assert torch.equal(out[6], x[6]) and not torch.equal(out[5], x[5])


def test_grayscale_solarize_and_blur_match_torchvision() -> None:
    x = floats(8)
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x, 3), atol=ATOL, rtol=0)
    solar = solarize(x, 0.3)
    torch.testing.assert_close(solar, TF.solarize(x, 0.3), atol=ATOL, rtol=0)
    assert torch.equal(solar[x < 0.3], x[x < 0.3])  # untouched pixels stay exact
    edge = torch.tensor([0.3 - 1e-7, 0.3, 0.3 + 1e-7]).view(1, 3, 1, 1)
    assert solarize(edge, 0.3).flatten().tolist() == TF.solarize(edge, 0.3).flatten().tolist()
    sigma = torch.linspace(0.1, 3.0, 8)
    for k in (3, 7):
        out = gaussian_blur(x, sigma, k)
        for i, s in enumerate(sigma.tolist()):
            ref = TF.gaussian_blur(x[i], [k, k], [s, s])
            torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)
    # large and non-square images: the blur runs in blocks of 32 output pixels
    big = images(3, 70, 100).float() / 255
    out = gaussian_blur(big, sigma[-3:], 9)
    for i, s in enumerate(sigma[-3:].tolist()):
        ref = TF.gaussian_blur(big[i], [9, 9], [s, s])
        torch.testing.assert_close(out[i], ref, atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="blur_kernel_fraction"):
        gaussian_blur(floats(1, 4), sigma[:1], 9)


def reference_view(img: torch.Tensor, p: ViewParams, i: int, view: BatchedView) -> torch.Tensor:
    """Sample ``i`` of a view, built per sample from torchvision's functional ops."""
    cfg = view.view
    x = TF.resized_crop(img[i].float() / 255, *p.boxes[i].tolist(), [view.size] * 2)
    if p.flip[i]:
        x = TF.horizontal_flip(x)
    if p.jitter[i]:
        for op in p.order[i].tolist():
            if view.enabled[op]:
                x = TV_OPS[op](x, p.factors[i, op].item())
    if p.grayscale[i]:
        x = TF.rgb_to_grayscale(x, 3)
    if p.blur[i]:
        x = TF.gaussian_blur(x, [view.kernel_size] * 2, [p.sigma[i].item()] * 2)
    if p.solarize[i]:
        x = TF.solarize(x, cfg.solarize_threshold)
    return TF.normalize(x, list(MEAN), list(STD))


@pytest.mark.parametrize("size", [24, 64])
def test_whole_view_equals_the_torchvision_chain_per_sample(size: int) -> None:
    cfg = ViewConfig(
        crop_scale=(0.2, 1.0),
        hue=0.3,
        saturation=0.6,
        blur_p=0.5,
        solarize_p=0.5,
        blur_kernel_fraction=0.2,
    )
    view = BatchedView(cfg, size, MEAN, STD)
    img = images(32, 40, 48, seed=4)
    params = view.sample(32, 40, 48, gen(5))
    out = view.apply(img, params)
    assert out.shape == (32, 3, size, size) and out.dtype == torch.float32
    for i in range(32):
        torch.testing.assert_close(out[i], reference_view(img, params, i, view), atol=1e-4, rtol=0)
    # every op was taken by some samples and skipped by others
    for flags in (params.flip, params.jitter, params.blur, params.solarize):
        assert 0 < int(flags.sum()) < 32


def test_same_semantics_as_the_per_sample_pipeline_on_uint8() -> None:
    """Deterministic ops through both pipelines built from one config: the per-sample
    pipeline rounds to uint8 after resize (fixed point), grayscale (truncates) and blur,
    so we allow 3/255 on [0, 1] values, and 1/255 on average."""
    view = ViewConfig(
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=1.0,
        jitter_p=0.0,
        grayscale_p=1.0,
        blur_p=1.0,
        blur_sigma=(1.2, 1.2),
        blur_kernel_fraction=0.25,
        solarize_p=1.0,
        solarize_threshold=0.4,
    )
    cfg = SimCLRViewsConfig(image_size=20, views=[view, view], mean=MEAN, std=STD)
    img = images(8, 36, 36, seed=6)
    ours, _ = BatchedViews.from_config(cfg)(img, gen())  # the first view is drawn first
    theirs = torch.stack([build_simclr_views(cfg)(img[i])[0] for i in range(8)])
    std = torch.tensor(STD).view(1, 3, 1, 1)
    diff = ((ours - theirs) * std).abs()  # back to [0, 1] units
    assert diff.max().item() <= 3 / 255 and diff.mean().item() <= 1 / 255


# --- sampled parameters --------------------------------------------------------------------


def test_crop_boxes_are_distributed_as_torchvision_draws_them() -> None:
    scale, ratio, n = (0.08, 1.0), (3 / 4, 4 / 3), 10_000
    ours = sample_crop_boxes(n, 64, 80, scale, ratio, gen(7)).double()
    rrc = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    dummy = torch.zeros(1, 64, 80)
    torch.manual_seed(7)
    theirs = [rrc.make_params([dummy]) for _ in range(n)]
    theirs = torch.tensor([[p["top"], p["left"], p["height"], p["width"]] for p in theirs]).double()
    top, left, h, w = ours.unbind(1)
    assert (
        (top >= 0).all() and (left >= 0).all() and (top + h <= 64).all() and (left + w <= 80).all()
    )
    area, aspect = h * w / (64 * 80), w / h
    # integer sides: area within rounding of (w +- 1/2)(h +- 1/2)
    assert area.min() >= 0.08 * 0.9 and area.max() <= 1.0
    assert aspect.min() >= 0.75 * 0.9 and aspect.max() <= 4 / 3 / 0.9
    assert area.min() < 0.085 and area.max() > 0.95  # the whole range is sampled
    critical = ks_critical(n, n)
    for a, b in zip(ours.unbind(1), theirs.unbind(1), strict=True):
        assert ks_statistic(a, b) < critical
    t_area = theirs[:, 2] * theirs[:, 3] / (64 * 80)
    assert ks_statistic(area, t_area) < critical
    assert ks_statistic(aspect.log(), (theirs[:, 3] / theirs[:, 2]).log()) < critical


def test_crop_falls_back_to_the_central_crop_as_often_as_torchvision() -> None:
    # a tall 30 x 20 image, large areas, wide ratios: all ten tries often fail
    scale, ratio, n = (0.5, 1.0), (1.0, 2.0), 10_000
    fallback = (5, 0, 20, 20)  # the whole width, a 1:1 box, centred
    ours = sample_crop_boxes(n, 30, 20, scale, ratio, gen(8))
    ours_rate = (ours == torch.tensor(fallback)).all(1).double().mean().item()
    rrc = v2.RandomResizedCrop(8, scale=scale, ratio=ratio)
    torch.manual_seed(8)
    dummy = torch.zeros(1, 30, 20)
    theirs = [rrc.make_params([dummy]) for _ in range(n)]
    tv_rate = sum((p["top"], p["left"], p["height"], p["width"]) == fallback for p in theirs) / n
    assert 0.05 < tv_rate < 0.95
    sd = math.sqrt(2 * tv_rate * (1 - tv_rate) / n)
    assert abs(ours_rate - tv_rate) < 4 * sd
    # nothing fits at all: every box is the fallback
    boxes = sample_crop_boxes(50, 30, 20, (1.0, 1.0), (1.0, 1.0), gen())
    assert (boxes == torch.tensor(fallback)).all()
    boxes = sample_crop_boxes(50, 20, 30, (0.9, 1.0), (0.2, 0.5), gen())
    assert (boxes == torch.tensor([0, 10, 20, 10])).all()  # wide image: w = 20 * 0.5


def test_probabilities_and_ranges_of_the_sampled_parameters() -> None:
    cfg = ViewConfig(
        flip_p=0.3,
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=0.1,
        solarize_p=0.65,
        brightness=0.4,
        contrast=0.3,
        saturation=1.5,
        hue=0.1,
        blur_sigma=(0.1, 2.0),
    )
    p = BatchedView(cfg, 32, MEAN, STD).sample(N, 48, 48, gen(9))
    within_4_sigma(p.flip, 0.3)
    within_4_sigma(p.jitter, 0.8)
    within_4_sigma(p.grayscale, 0.2)
    within_4_sigma(p.blur, 0.1)
    within_4_sigma(p.solarize, 0.65)
    # decisions are independent of each other: P(a and b) = P(a) P(b)
    probs = {"flip": 0.3, "jitter": 0.8, "grayscale": 0.2, "blur": 0.1, "solarize": 0.65}
    for a, b in itertools.combinations(probs, 2):
        within_4_sigma(getattr(p, a) & getattr(p, b), probs[a] * probs[b])
    # uniform factors: range and mean (sd of a mean of N uniforms: width / sqrt(12 N))
    for j, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.0, 2.5), (-0.1, 0.1)]):
        f = p.factors[:, j].double()
        assert lo <= f.min() < lo + 0.01 and hi - 0.01 < f.max() <= hi
        assert abs(f.mean() - (lo + hi) / 2) < 4 * (hi - lo) / math.sqrt(12 * N)
    s = p.sigma.double()
    assert 0.1 <= s.min() < 0.11 and 1.99 < s.max() <= 2.0
    assert abs(s.mean() - 1.05) < 4 * 1.9 / math.sqrt(12 * N)
    # orders: permutations, each op at each position with frequency 1/4, all 24 occur
    assert (p.order.sort(1).values == torch.arange(4)).all()
    for step in range(4):
        for op in range(4):
            within_4_sigma(p.order[:, step] == op, 0.25)
    codes = (p.order * torch.tensor([64, 16, 4, 1])).sum(1)
    assert codes.unique().numel() == 24


def test_probability_zero_and_one_and_disabled_jitter_ops() -> None:
    always = ViewConfig(flip_p=1, jitter_p=1, grayscale_p=1, blur_p=1, solarize_p=1)
    never = ViewConfig(flip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    p1 = BatchedView(always, 16, MEAN, STD).sample(500, 20, 20, gen())
    p0 = BatchedView(never, 16, MEAN, STD).sample(500, 20, 20, gen())
    for name in ("flip", "jitter", "grayscale", "blur", "solarize"):
        assert getattr(p1, name).all() and not getattr(p0, name).any()
    view = BatchedView(ViewConfig(saturation=0.0, hue=0.0), 16, MEAN, STD)
    assert view.enabled == (True, True, False, False)  # as torchvision skips them


# --- seeding, configs and inputs ---------------------------------------------------------


def test_same_seed_same_views_other_generators_other_views() -> None:
    engine = BatchedViews(asymmetric_view_pair(), 24, MEAN, STD)
    img = images(16, 32, 32)
    a, b = engine(img, gen(11)), engine(img, gen(11))
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])  # the two views draw in turn from one stream
    c = engine(img, gen(12))  # e.g. another rank's generator
    assert all((x - y).abs().mean() > 0.1 for x, y in zip(a, c, strict=True))
    g = gen(11)
    first, second = engine(img, g), engine(img, g)  # the stream moves on
    assert not torch.equal(first[0], second[0])
    # samples are independent: no two images of the batch share a crop
    boxes = engine.sample(16, 32, 32, gen(13))[0].boxes
    assert boxes.unique(dim=0).shape[0] > 12


def test_from_config_takes_the_byol_recipe() -> None:
    cfg = BYOLViewsConfig(image_size=96)
    engine = BatchedViews.from_config(cfg)
    assert engine.num_views == 2 and engine.size == 96
    assert [v.view for v in engine.views] == cfg.views
    assert [v.view.blur_p for v in engine.views] == [1.0, 0.1]
    assert [v.view.solarize_p for v in engine.views] == [0.0, 0.2]
    assert engine.views[0].kernel_size == 9  # blur_kernel_size(96, 0.1)
    assert BatchedViews.from_config(BYOLViewsConfig(), 32).size == 32
    with pytest.raises(ValueError, match="image_size"):
        BatchedViews.from_config(BYOLViewsConfig())
    views = engine(images(4, 100, 120), gen())
    assert [tuple(v.shape) for v in views] == [(4, 3, 96, 96)] * 2


def test_input_checks_and_gray_input() -> None:
    engine = BatchedViews([ViewConfig(jitter_p=1.0, hue=0.3)], 12, MEAN, STD)
    gray = images(4, 16, 16)[:, :1]
    (out,) = engine(gray, gen())
    assert out.shape == (4, 3, 12, 12)
    torch.testing.assert_close(out[:, 0] * STD[0] + MEAN[0], out[:, 2] * STD[2] + MEAN[2])
    with pytest.raises(TypeError, match="uint8"):
        engine(gray.to(torch.int32), gen())
    with pytest.raises(ValueError, match="C = 1 or 3"):
        engine(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), gen())
    with pytest.raises(ValueError, match="crop_scale"):
        BatchedView(ViewConfig.model_construct(crop_scale=(0.9, 0.2)), 8, MEAN, STD)
    with pytest.raises(ValueError, match="at least one view"):
        BatchedViews([], 8, MEAN, STD)


def test_chunks_of_a_large_batch_give_the_views_of_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch, one_thread: None
) -> None:
    """Batches over ``CHUNK_BYTES`` go through the ops a few samples at a time; every op
    works per sample, so the views are bit-identical to the whole batch's, for images
    resized by the engine and for crops made per image (one thread: with several, torch
    may split a lone sample's contrast mean over the threads and round it otherwise)."""
    from twinfold.augment import views as views_module

    engine = BatchedViews.from_config(BYOLViewsConfig(image_size=24), 24)
    img = images(10, 40, 48, seed=9)
    seeds = list(range(50, 60))
    params = engine.sample_per_sample(seeds, 40, 48)
    crops, full = engine.crop_per_sample(list(img), params)
    assert all(p.blur.any() and p.jitter.any() for p in params)
    outputs = []
    for chunk_bytes in (1 << 30, 3 * (3 * 24 * 24 * 4), 1):  # whole batch, 3, 1 per chunk
        monkeypatch.setattr(views_module, "CHUNK_BYTES", chunk_bytes)
        outputs.append(engine.apply(img, params) + engine.apply_views(crops, full))
    for other in outputs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(outputs[0], other, strict=True))


def test_the_augmentation_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/benchmarks/augmentation.py, tiny and without worker processes."""
    path = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "augmentation.py"
    spec = importlib.util.spec_from_file_location("augmentation_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--sizes", "16", "--images", "64", "--batch-size", "32", "--workers", "0"]
    medians = bench.main([*argv, "--repeats", "1"])
    rates = medians[16]
    assert len(rates) >= 4 and all(r > 0 for r in rates.values())
    out = capsys.readouterr().out
    assert "vs per-sample" in out and "lightly BYOLTransform" in out


def test_views_of_two_sizes_in_both_engines() -> None:
    """Multi-crop: a view with its own ``size`` comes out at that side from the
    per-sample pipeline and from the batched engine, for images of one size and of
    differing sizes (crops made in the workers), with the same deterministic content."""
    view = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                      grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)
    cfg = SimCLRViewsConfig(image_size=20, views=[view, view.model_copy(update={"size": 8})],
                            mean=MEAN, std=STD)
    per_sample, engine = build_simclr_views(cfg), BatchedViews.from_config(cfg)
    img = images(4, 36, 36, seed=7)
    items = [(img[i], i, 100 + i) for i in range(4)]
    theirs = [torch.stack(vs) for vs in zip(*(per_sample(im) for im in img), strict=True)]
    std = torch.tensor(STD).view(1, 3, 1, 1)
    for fixed_size in (True, False):
        ours = engine.make_views(engine.collate_fn(fixed_size=fixed_size)(items), "cpu")
        assert [tuple(v.shape) for v in ours] == [(4, 3, 20, 20), (4, 3, 8, 8)]
        for a, b in zip(ours, theirs, strict=True):
            assert a.shape == b.shape
            assert ((a - b) * std).abs().max().item() <= 2 / 255
