"""Data: the scikit-learn digits, image folders with real files on disk, errors before
training, per-sample seeding and the distributed-sampler union property."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torchvision.io import decode_png, encode_jpeg, write_png

from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views
from twinfold.config import DataConfig
from twinfold.data import (
    DigitsSource,
    FolderSource,
    ImageDecodeError,
    MultiViewDataset,
    PlainDataset,
    Subset,
    TorchvisionSource,
    build_eval_loader,
    build_sources,
    build_train_loader,
    digits_splits,
)
from twinfold.data.datasets import sample_seed
from twinfold.data.digits import _upscaled_digits
from twinfold.errors import ConfigError, TwinfoldError

pytestmark = pytest.mark.filterwarnings(
    "ignore:The image decoding and encoding capabilities:DeprecationWarning"  # write_png
)


@pytest.fixture(autouse=True)
def one_thread():
    """Per-sample ops on tiny images: one intra-op thread, as in data-loader workers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return digits_splits(16, 0.2)


def views(size: int = 16):
    return build_simclr_views(SimCLRViewsConfig(image_size=size))


# --------------------------------------------------------------------------- digits


def test_digits_split_sizes_stratification_and_determinism(digits) -> None:
    train, held = digits
    targets = load_digits().target
    assert len(train) == 1437 and len(held) == 360
    assert set(train.indices).isdisjoint(held.indices)
    assert sorted(train.indices + held.indices) == list(range(1797))
    per_class = Counter(targets.tolist())
    held_counts = Counter(held.label(i) for i in range(len(held)))
    for c, n in per_class.items():  # 20% of each class, rounded down or up
        assert held_counts[c] in (int(0.2 * n), int(0.2 * n) + 1)
    again_train, again_held = digits_splits(16, 0.2)  # fixed seed, not the run seed
    assert again_train.indices == train.indices and again_held.indices == held.indices
    half_train, half_held = digits_splits(16, 0.5)
    assert (len(half_train), len(half_held)) == (898, 899)
    assert train.labelled and held.classes[3] == "3"


def test_digits_images_are_uint8_rgb_and_match_the_raw_values() -> None:
    source = DigitsSource(8)  # no upscaling: exactly round(x * 255 / 16)
    raw = torch.from_numpy(load_digits().images[:20])
    for i in range(20):
        img = source.load(i)
        assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)
        assert torch.equal(img[0], (raw[i] * 255 / 16).round().to(torch.uint8))
        assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    big = DigitsSource(32)
    stack = torch.stack([big.load(i) for i in range(50)])
    assert stack.shape == (50, 3, 32, 32) and stack.min() == 0 and stack.max() >= 250
    everything = load_digits()
    whole = DigitsSource(8)
    assert whole.labels() == everything.target.tolist() and len(whole) == 1797
    assert torch.equal(whole.images[:, 0], (torch.from_numpy(everything.images) * 255 / 16)
                       .round().to(torch.uint8))


def test_the_digits_load_without_scikit_learns_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """scikit-learn's import takes seconds, paid by every process of a run (ranks,
    data-loader workers): the digits are read from the file it ships instead, and
    ``load_digits`` (which needs that import) is never called."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_digits was called")

    monkeypatch.setattr("sklearn.datasets.load_digits", refuse)
    _upscaled_digits.cache_clear()
    try:
        source = DigitsSource(9)
    finally:
        _upscaled_digits.cache_clear()
    assert len(source) == 1797 and source.load(0).shape == (3, 9, 9)


# --------------------------------------------------------------------------- folders


def _image(seed: int, h: int = 20, w: int = 24) -> torch.Tensor:
    """A smooth random picture (JPEG keeps it close)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 4, 4, generator=g) * 255
    return F.interpolate(coarse, size=(h, w), mode="bilinear")[0].round().to(torch.uint8)


def _write(path: Path, img: torch.Tensor) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        write_png(img, str(path))
    else:
        path.write_bytes(encode_jpeg(img, quality=95).numpy().tobytes())
    return path


def _write_folder(root: Path, labelled: bool, per_class: int = 5) -> dict[Path, torch.Tensor]:
    written = {}
    for c, cls in enumerate(("cat", "dog")):
        folder = root / cls if labelled else root
        for i in range(per_class):
            img = _image(10 * c + i, h=20 + i)
            name = f"{cls}{i}.JPG" if i % 2 else f"{cls}{i}.png"
            written[_write(folder / name, img)] = img
    return written


def test_folder_with_class_subfolders_decodes_real_files(tmp_path: Path) -> None:
    written = _write_folder(tmp_path, labelled=True)
    _write(tmp_path / "dog" / "nested" / "deep.png", _image(99))  # classes are recursive
    _write(tmp_path / "cat" / ".hidden.png", _image(98))  # hidden files are ignored
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    Image.fromarray(_image(97).permute(1, 2, 0).numpy()).save(tmp_path / "cat" / "z.bmp")
    src = FolderSource(tmp_path)
    assert src.classes == ["cat", "dog"] and len(src) == 12 and src.labelled
    assert [src.label(i) for i in range(len(src))] == [0] * 6 + [1] * 6
    for i, path in enumerate(src.files):
        img = src.load(i)
        assert img.dtype == torch.uint8 and img.shape[0] == 3
        if path.suffix == ".png" and path in written:
            assert torch.equal(img, written[path])  # lossless round trip
        elif path in written:  # JPEG (quality 95, chroma subsampled): close
            assert img.shape == written[path].shape
            assert (img.float() - written[path].float()).abs().mean() < 6
    assert torch.equal(src.load(src.files.index(tmp_path / "cat" / "z.bmp")), _image(97))
    sources = build_sources(DataConfig(dataset="folder", root=tmp_path, holdout_fraction=0.5))
    assert len(sources.train) == 6 and len(sources.eval_test) == 6
    assert sources.eval_train is sources.train
    assert Counter(sources.eval_test.labels()) == {0: 3, 1: 3}


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    _write_folder(tmp_path, labelled=False)
    sources = build_sources(DataConfig(dataset="folder", root=tmp_path))
    assert len(sources.train) == 10 and sources.eval_train is None and sources.eval_test is None
    assert sources.train.label(0) is None and sources.train.classes == []
    image, label = PlainDataset(sources.train, views(12))[0]
    assert label == -1 and image.shape == (3, 12, 12) and image.dtype == torch.float32


def test_eval_root_is_the_evaluation_set(tmp_path: Path) -> None:
    _write_folder(tmp_path / "flat", labelled=False)
    _write_folder(tmp_path / "labelled", labelled=True, per_class=4)
    _write_folder(tmp_path / "eval", labelled=True, per_class=3)
    unlabelled_root = DataConfig(
        dataset="folder", root=tmp_path / "flat", eval_root=tmp_path / "eval", holdout_fraction=0.3
    )
    s = build_sources(unlabelled_root)  # bank and queries both come from eval_root
    assert len(s.train) == 10 and len(s.eval_train) == 4 and len(s.eval_test) == 2
    s = build_sources(unlabelled_root.model_copy(update={"root": tmp_path / "labelled"}))
    assert len(s.train) == 8 and s.eval_train is s.train and len(s.eval_test) == 6
    (tmp_path / "eval" / "cow").mkdir()
    _write(tmp_path / "eval" / "cow" / "a.png", _image(0))
    with pytest.raises(ConfigError, match="data.eval_root.*classes"):
        build_sources(unlabelled_root.model_copy(update={"root": tmp_path / "labelled"}))
    with pytest.raises(ConfigError, match="data.eval_root.*sub-folder"):
        build_sources(unlabelled_root.model_copy(update={"eval_root": tmp_path / "flat"}))


def _corrupt(path: Path, kind: str, good: Path) -> None:
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(500))
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:200])
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # text under an image name
        path.write_text("hello, I am not a picture")


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "empty", "text"])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_corrupt_file_raises_naming_the_file(tmp_path: Path, kind: str, suffix: str) -> None:
    files = _write_folder(tmp_path, labelled=False)
    good = next(p for p in files if p.suffix.lower() == suffix)
    bad = tmp_path / f"cat2_bad{suffix}"  # sorts between cat2.png and cat3.JPG
    _corrupt(bad, kind, good)
    src = FolderSource(tmp_path)
    with pytest.raises(ImageDecodeError, match=r"cat2_bad.*skip_bad_images") as info:
        src.load(src.files.index(bad))
    assert isinstance(info.value, TwinfoldError)


def test_skip_mode_substitutes_the_next_readable_image_of_the_class(tmp_path: Path) -> None:
    written = _write_folder(tmp_path, labelled=True)
    bad_a = tmp_path / "cat" / "cat2_bad.png"
    bad_b = tmp_path / "dog" / "dog9_bad.jpg"  # last of its class: wraps to the first
    _corrupt(bad_a, "truncated", tmp_path / "cat" / "cat0.png")
    _corrupt(bad_b, "empty", tmp_path / "dog" / "dog0.png")
    src = FolderSource(tmp_path, skip_bad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = src.load(src.files.index(bad_a))
        b = src.load(src.files.index(bad_b))
        again = src.load(src.files.index(bad_a))
    assert torch.equal(a, again) and a.shape == (3, 23, 24)  # decoded cat3.JPG
    assert torch.equal(b, written[tmp_path / "dog" / "dog0.png"])
    assert src.label(src.files.index(bad_b)) == 1
    assert src.skipped == 2 and src.bad_files == {bad_a, bad_b}
    skips = [str(w.message) for w in caught if str(w.message).startswith("skipping")]
    assert len(skips) == 2 and "cat2_bad.png" in skips[0] and "dog9_bad.jpg" in skips[1]
    fresh = FolderSource(tmp_path, skip_bad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fresh.scan() == 2 and "2 unreadable skipped" in fresh.describe()
    cfg = DataConfig(dataset="folder", root=tmp_path, skip_bad_images=True)
    assert build_sources(cfg).train.base.skip_bad


def test_missing_file_or_empty_folder_fails_before_training(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=r"data\.root: image folder '.*nope' does not exist"):
        build_sources(DataConfig(dataset="folder", root=missing))
    a_file = _write(tmp_path / "one.png", _image(0))
    with pytest.raises(ConfigError, match=r"data\.root: '.*one\.png' is not a directory"):
        build_sources(DataConfig(dataset="folder", root=a_file))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(ConfigError, match=r"data\.root: no images .* in '.*empty'"):
        build_sources(DataConfig(dataset="folder", root=tmp_path / "empty"))


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "stl10"])
def test_torchvision_dataset_without_data_asks_for_download(tmp_path: Path, dataset) -> None:
    cfg = DataConfig(dataset=dataset, root=tmp_path, download=False)
    with pytest.raises(ConfigError, match=r"data\.root: .*data\.download=true"):
        build_sources(cfg)
    split = "unlabeled" if dataset == "stl10" else "test"
    with pytest.raises(ConfigError, match=dataset):
        TorchvisionSource(dataset, tmp_path, split, download=False)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded


# --------------------------------------------------------------------------- seeding


def test_sample_seeds_are_mixed() -> None:
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(100)}
    assert len(seeds) == 900
    assert sample_seed(0, 0, 1) != sample_seed(1, 0, 0) != sample_seed(0, 1, 0)
    assert 0 <= sample_seed(-5, 0, 0) < 2**64 and sample_seed(-5, 0, 0) != sample_seed(5, 0, 0)


def test_views_depend_only_on_seed_epoch_and_index(digits) -> None:
    train, _ = digits
    ds = MultiViewDataset(train, views(), seed=7)
    state = torch.get_rng_state()
    a = ds[3]
    _ = ds[10], ds[0]
    b = ds[3]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    assert len(a) == 2 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], a[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], a[0])
    ds.set_epoch(0)
    assert torch.equal(ds[3][0], a[0])
    assert not torch.equal(MultiViewDataset(train, views(), seed=8)[3][0], a[0])
    assert not torch.equal(ds[4][0], a[0])


# --------------------------------------------------------------------------- loaders


def _run_loader(ds, world: int, rank: int, batch: int, workers: int, steps: int = 2):
    loader, sampler = build_train_loader(
        ds, batch, world_size=world, rank=rank, seed=1, num_workers=workers
    )
    sampler.set_epoch(2)
    indices = list(sampler)
    batches = []
    for step, views_batch in enumerate(loader):
        if step == steps:
            break
        batches.append(views_batch)
    return loader, indices, batches


def test_union_over_ranks_equals_one_process_whatever_the_workers(digits) -> None:
    train, _ = digits
    ds = MultiViewDataset(train, views(), seed=1)
    ds.set_epoch(2)
    single, single_idx, single_b = _run_loader(ds, 1, 0, 32, workers=0)
    r0, r0_idx, r0_b = _run_loader(ds, 2, 0, 16, workers=2)
    _, r1_idx, r1_b = _run_loader(ds, 2, 1, 16, workers=0)
    assert len(single) == len(r0) == 1437 // 32
    for step in range(2):
        got = {}
        for idx, b in ((r0_idx, r0_b), (r1_idx, r1_b)):
            for row, i in enumerate(idx[16 * step : 16 * (step + 1)]):
                got[i] = [b[step][v][row] for v in range(2)]
        want = single_idx[32 * step : 32 * (step + 1)]
        assert sorted(got) == sorted(want)  # the same samples ...
        for row, i in enumerate(want):  # ... with the same views, exactly
            for v in range(2):
                assert torch.equal(got[i][v], single_b[step][v][row])
    # a worker process gives exactly what the main process computes
    for row, i in enumerate(r0_idx[:16]):
        assert torch.equal(r0_b[0][1][row], ds[i][1])
    assert [t.shape for t in single_b[0]] == [(32, 3, 16, 16)] * 2


def test_train_loader_leaves_the_global_generator_alone(digits) -> None:
    train, _ = digits
    ds = MultiViewDataset(Subset(train, range(40), "small"), views(8), seed=0)
    free, _ = build_train_loader(ds, 16, world_size=1, rank=0, seed=0, num_workers=0)
    bound, _ = build_train_loader(
        ds, 16, world_size=1, rank=0, seed=0, num_workers=0, generator_free=False
    )
    state = torch.get_rng_state()
    assert len(list(free)) == 2 and free.drop_last and not free.pin_memory
    assert torch.equal(torch.get_rng_state(), state)
    next(iter(bound))
    assert not torch.equal(torch.get_rng_state(), state)


def test_resumed_epoch_continues_with_the_same_batches(digits) -> None:
    train, _ = digits
    ds = MultiViewDataset(Subset(train, range(50), "small"), views(8), seed=3)
    loader, sampler = build_train_loader(ds, 8, world_size=2, rank=1, seed=3, num_workers=0)
    sampler.set_epoch(4)
    full = list(loader)
    assert len(full) == len(loader) == 3  # 25 samples per rank, drop_last
    sampler.set_epoch(4, skip=2 * 8)  # two batches done before the interruption
    tail = list(loader)
    assert len(tail) == len(loader) == 1
    assert all(torch.equal(a, b) for a, b in zip(full[2], tail[0], strict=True))
    sampler.set_epoch(5)
    assert len(loader) == 3
    with pytest.raises(ValueError, match="skip"):
        sampler.set_epoch(5, skip=26)


def test_eval_loader_keeps_order_and_the_last_batch(digits) -> None:
    _, held = digits
    pipe = views(16)
    batches = list(build_eval_loader(PlainDataset(held, pipe), 100, num_workers=0))
    assert [len(y) for _, y in batches] == [100, 100, 100, 60]
    images, labels = batches[3]
    assert images.shape == (60, 3, 16, 16) and labels.dtype == torch.long
    assert labels.tolist() == [held.label(i) for i in range(300, 360)]
    torch.testing.assert_close(images[5], pipe.plain(held.load(305)))


def test_decoded_png_equals_torchvision_decode(tmp_path: Path) -> None:
    img = _image(5)
    path = _write(tmp_path / "a" / "x.png", img)
    src = FolderSource(tmp_path)
    assert src.classes == ["a"]
    from torchvision.io import read_file

    assert torch.equal(src.load(0), decode_png(read_file(str(path))))
