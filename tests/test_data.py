"""Data: the embedded digits, image folders with real files, per-sample seeding and the
distributed-sampler union property."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from twinfold import ConfigError
from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views
from twinfold.config import DataConfig
from twinfold.data import (
    FolderSource,
    ImageDecodeError,
    MultiViewDataset,
    TorchvisionSource,
    build_sources,
    build_train_loader,
    digits_splits,
)


def views(size: int = 16):
    return build_simclr_views(SimCLRViewsConfig(image_size=size))


def test_digits_splits_are_stratified_fixed_and_disjoint() -> None:
    train, held = digits_splits(16, 0.2)
    assert len(train) + len(held) == 1797 and 355 <= len(held) <= 365
    assert set(train.indices).isdisjoint(held.indices)
    again_train, _ = digits_splits(16, 0.2)
    assert again_train.indices == train.indices
    counts = torch.bincount(torch.tensor([held.label(i) for i in range(len(held))]))
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of each class
    img = train.load(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 16, 16) and img.max() > 200


def _write_folder(root: Path, labelled: bool) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    files = []
    for c in ("cat", "dog"):
        folder = root / c if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(5):
            img = torch.randint(0, 256, (20 + i, 24, 3), dtype=torch.uint8, generator=g)
            path = folder / (f"{c}{i}.JPG" if i % 2 else f"{c}{i}.png")
            Image.fromarray(img.numpy()).save(path, format="JPEG" if i % 2 else "PNG")
            files.append(path)
    return files


def test_folder_with_class_subfolders(tmp_path: Path) -> None:
    _write_folder(tmp_path, labelled=True)
    src = FolderSource(tmp_path)
    assert src.classes == ["cat", "dog"] and len(src) == 10 and src.labelled
    img = src.load(1)
    assert img.dtype == torch.uint8 and img.shape == (3, 21, 24)
    sources = build_sources(DataConfig(dataset="folder", root=tmp_path, holdout_fraction=0.4))
    assert len(sources.eval_test) == 4 and len(sources.train) == 6
    assert sources.eval_train is sources.train


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    _write_folder(tmp_path, labelled=False)
    sources = build_sources(DataConfig(dataset="folder", root=tmp_path))
    assert len(sources.train) == 10 and sources.eval_train is None
    assert sources.train.label(0) is None


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_corrupt_files_are_named_or_skipped(tmp_path: Path, content: object) -> None:
    files = _write_folder(tmp_path, labelled=False)
    bad = tmp_path / "zzz_bad.jpg"
    if content == "truncated":
        bad.write_bytes(files[1].read_bytes()[:40])
    else:
        bad.write_bytes(content)  # type: ignore[arg-type]
    src = FolderSource(tmp_path)
    index = src.files.index(bad)
    with pytest.raises(ImageDecodeError, match="zzz_bad.jpg.*skip_bad_images"):
        src.load(index)
    skipping = FolderSource(tmp_path, skip_bad=True)
    img = skipping.load(index)  # replaced by the next readable image
    assert img.shape[0] == 3 and skipping.bad_files == {str(bad)}


def test_missing_or_empty_folder_fails_early(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.root.*does not exist"):
        build_sources(DataConfig(dataset="folder", root=tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match="no images"):
        build_sources(DataConfig(dataset="folder", root=tmp_path / "empty"))


def test_torchvision_dataset_without_data_asks_for_download(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.download=true"):
        TorchvisionSource("cifar10", tmp_path, "train", download=False)


def test_views_depend_only_on_seed_epoch_and_index() -> None:
    train, _ = digits_splits(16, 0.2)
    ds = MultiViewDataset(train, views(), seed=7)
    a = ds[3]
    _ = ds[10]
    b = ds[3]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], a[0])
    other = MultiViewDataset(train, views(), seed=8)
    assert not torch.equal(other[3][0], a[0])
    assert not torch.equal(ds[4][0], ds[3][0])


def _batches(world: int, rank: int, batch: int, workers: int) -> list[list[torch.Tensor]]:
    train, _ = digits_splits(16, 0.2)
    ds = MultiViewDataset(train, views(), seed=1)
    loader, sampler = build_train_loader(
        ds, batch, world_size=world, rank=rank, seed=1, num_workers=workers
    )
    sampler.set_epoch(2)
    ds.set_epoch(2)
    out = []
    for i, b in enumerate(loader):
        out.append(b)
        if i == 1:
            break
    return out


def _rows(t: torch.Tensor) -> list[tuple[float, ...]]:
    return sorted(tuple(r.tolist()) for r in t.flatten(1)[:, :64])


def test_union_over_ranks_equals_one_process_and_workers_do_not_matter() -> None:
    single = _batches(1, 0, 32, workers=0)
    r0, r1 = _batches(2, 0, 16, workers=2), _batches(2, 1, 16, workers=0)
    for step in range(2):
        for v in range(2):
            union = torch.cat([r0[step][v], r1[step][v]])
            assert _rows(union) == _rows(single[step][v])
