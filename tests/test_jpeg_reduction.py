"""``data.jpeg_reduction``: JPEGs decoded 2, 4 or 8 times smaller in the DCT domain where
every view's crop still spans the view size, and the bound that keeps the views
statistically equivalent to full decoding. On photo-like 500 x 375 quality-90 JPEGs, the
mean absolute difference of a uint8 crop from the crop of the fully decoded image is at
most 3 levels of 255 (1.6 on average over crops) with the default ``jpeg_reduction=2``,
and at most 5 (2.5 on average) with 4."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from twinfold.augment import BatchedViews
from twinfold.augment.crop import CROP_TRIES, crop_box_size, crop_boxes_from_uniforms
from twinfold.augment.views import scale_box
from twinfold.data import FolderSource
from twinfold.data.datasets import SeededImageDataset
from twinfold.data.folder import decode_bytes
from twinfold.data.loaders import CroppedViewsCollate
from twinfold_byol.views import BYOLViewsConfig

BENCHMARK = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "jpeg224.py"
SIZE = 64
BOUNDS = {2: (3.0, 1.6), 4: (5.0, 2.5)}
"""Per limit: the largest mean absolute difference (uint8 levels) of one crop from the
crop of full decoding, and the largest mean of that difference over all crops."""


def _photo_like(seed: int) -> bytes:
    spec = importlib.util.spec_from_file_location("jpeg224_under_test", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("jpeg224_under_test", module)
    spec.loader.exec_module(module)
    return module.photo_like_jpeg(seed)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(6):
        (root / f"{i}.jpg").write_bytes(_photo_like(i))
    return root


def _engine() -> BatchedViews:
    return BatchedViews.from_config(BYOLViewsConfig(image_size=SIZE))


def test_the_reduction_keeps_every_crop_at_least_the_view_size() -> None:
    engine = _engine()
    seen = set()
    for seed in range(60):
        r = engine.jpeg_reduction(seed, 375, 500, limit=8)
        seen.add(r)
        boxes = [p.boxes[0] for p in engine.sample_per_sample_sizes([seed], [(375, 500)])]
        side = min(int(b[2:].min()) for b in boxes)
        assert side >= r * SIZE and (r == 8 or side < 2 * r * SIZE), (seed, r, side)
        assert engine.jpeg_reduction(seed, 375, 500, limit=2) == min(r, 2)
    assert {1, 2, 4} <= seen
    # the per-sample decision's float mirror of the box draw agrees with the tensor one
    u = torch.rand(300, CROP_TRIES, 2, generator=torch.Generator().manual_seed(1),
                   dtype=torch.float64)
    for scale, (h, w) in (((0.08, 1.0), (375, 500)), ((0.5, 1.0), (40, 300))):
        boxes = crop_boxes_from_uniforms(u, torch.zeros(300, 2), h, w, scale, (3 / 4, 4 / 3))
        mirror = [crop_box_size(t.tolist(), h, w, scale, (3 / 4, 4 / 3)) for t in u]
        assert mirror == [tuple(b) for b in boxes[:, 2:].tolist()]
    assert scale_box([10, 20, 300, 200], (375, 500), (94, 125)) == (3, 5, 75, 50)


@pytest.mark.parametrize("limit", sorted(BOUNDS))
def test_reduced_decoding_matches_full_decoding_within_the_bound(
    photos: Path, limit: int
) -> None:
    source = FolderSource(photos)
    engine = _engine()
    collate = CroppedViewsCollate(engine)
    plan = lambda s, h, w: engine.jpeg_reduction(s, h, w, limit)  # noqa: E731
    reduced = SeededImageDataset(source, 5, plan)
    full = SeededImageDataset(source, 5)
    diffs, smaller = [], 0
    for epoch in range(4):
        reduced.set_epoch(epoch)
        full.set_epoch(epoch)
        items = [reduced[i] for i in range(len(source))]
        smaller += sum(item[0].shape[-1] < 500 for item in items)
        assert all(item[3] == (375, 500) for item in items)
        a, _, pa = collate(items)
        b, _, pb = collate([full[i] for i in range(len(source))])
        for v in range(2):
            assert torch.equal(pa[v].flip, pb[v].flip)  # the same views otherwise
            diffs += (a[v].float() - b[v].float()).abs().mean(dim=(1, 2, 3)).tolist()
    assert smaller >= 6  # not vacuous: a quarter of the samples or more were decoded smaller
    crop_bound, mean_bound = BOUNDS[limit]
    assert max(diffs) <= crop_bound and sum(diffs) / len(diffs) <= mean_bound, diffs


def test_reduced_decoding_of_a_jpeg_is_smaller_and_other_formats_ignore_it(tmp_path: Path) -> None:
    data = _photo_like(0)
    assert decode_bytes(data, plan=lambda h, w: 4).shape == (3, 94, 125)
    assert decode_bytes(data, plan=lambda h, w: 1).shape == (3, 375, 500)
    png = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(png)
    assert decode_bytes(png.read_bytes(), plan=lambda h, w: 4).shape == (3, 30, 40)
