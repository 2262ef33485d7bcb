"""Training with ``data.view_engine = "batched"``: uint8 batches augmented on the device
by :mod:`twinfold.augment`, with views still seeded per (run seed, epoch, sample index),
so batching, ranks and resuming do not change them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import pytest
import torch

import twinfold
from twinfold import Component, ConfigError, Registry, hookimpl
from twinfold.augment import BatchedViews
from twinfold.components import AugmentationConfig, ViewPipeline
from twinfold.data import BatchedViewsCollate, SeededImageDataset, digits_splits
from twinfold.plan import prepare_run


# ------------------------------------------------------------ views of a sample
def _engine() -> BatchedViews:
    views = twinfold.load_config({"preset": "byol-small"}).method.views
    return BatchedViews.from_config(views, 16)  # BYOL's asymmetric views, with solarize


def _views(dataset: SeededImageDataset, collate: BatchedViewsCollate, indices: list[int]):
    images, got, params = collate([dataset[i] for i in indices])
    assert images.dtype == torch.uint8 and images.shape == (len(indices), 3, 16, 16)
    assert got.tolist() == indices
    return collate.engine.apply(images, params)


def test_views_of_a_sample_do_not_depend_on_its_batch_or_position() -> None:
    dataset = SeededImageDataset(digits_splits(16)[0], seed=7)
    collate = BatchedViewsCollate(_engine())
    dataset.set_epoch(1)
    big = list(range(32))
    ref = _views(dataset, collate, big)
    order = torch.randperm(32, generator=torch.Generator().manual_seed(0))[:16].tolist()
    small = _views(dataset, collate, order)
    alone = _views(dataset, collate, [order[3]])
    assert len(ref) == len(small) == 2
    for v in range(2):
        assert torch.equal(small[v], ref[v][order]), v
        assert torch.equal(alone[v][0], ref[v][order[3]]), v
    # not vacuous: the two views differ, and another epoch gives other views
    assert not torch.equal(ref[0], ref[1])
    dataset.set_epoch(2)
    other = _views(dataset, collate, order)
    assert not torch.equal(other[0], small[0])


# ------------------------------------------------------------ the real loop
def _config(tmp: Path, name: str, devices: int, batch: int, **extra: dict) -> twinfold.RunConfig:
    trainer = {
        "precision": "32-true",  # equal up to float32 rounding (bf16: test_fast_path.py)
        "devices": devices,
        "strategy": "ddp_spawn" if devices > 1 else "auto",
        "max_steps": 2,
        "epochs": 1,
        "progress_bar": False,
        "log_every": 1,
        **extra.get("trainer", {}),
    }
    return twinfold.load_config({
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": batch, "view_engine": "batched",
                 **extra.get("data", {})},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": trainer,
        "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 2,
                **extra.get("run", {})},
        "evaluation": {"at_end": False},
    })


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    """Parameters, target, optimizer state and random generator states of the last
    checkpoint."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    out = {**{f"online.{k}": v for k, v in state["online"].items()},
           **{f"target.{k}": v for k, v in state["target"].items()},
           **{f"rng.{k}": v for k, v in state["rng"].items()}}
    for pid, slots in state["optimizer"]["state"].items():
        out.update({f"optimizer.{pid}.{k}": v for k, v in slots.items()})
    return out


def _losses(run_dir: Path) -> list[tuple[str, float]]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [(r["step"], float(r["loss"])) for r in csv.DictReader(file) if r.get("loss")]


@pytest.mark.distributed
def test_two_processes_equal_one_process_with_batched_views(tmp_path: Path) -> None:
    """2 ranks x 16 == 1 rank x 32 drawing in 2 data-loader workers, through the real
    loop: same losses and parameters after two steps (every sample has the same views
    whichever rank and worker draws them). The workers are in the one-process run: in a
    ddp_spawn rank they are spawned, each importing torch and twinfold anew (per-rank
    worker seeds: tests/test_determinism.py)."""
    # one process drawing in data-loader workers, two ranks drawing in their main process
    one = twinfold.train(_config(tmp_path, "one", 1, 32, data={"num_workers": 2})).run_dir
    two = twinfold.train(_config(tmp_path, "two", 2, 16)).run_dir
    assert len(_losses(one)) == 2
    assert [x for _, x in _losses(two)] == pytest.approx([x for _, x in _losses(one)], rel=1e-4)
    a, b = _state(one), _state(two)
    params = [k for k in a if k.startswith(("online.", "target.")) and a[k].is_floating_point()]
    assert len(params) > 10
    for key in params:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # not vacuous: the per-sample pipeline makes other views, hence another loss
    per_sample = twinfold.train(  # one step: its first loss is all that is compared
        _config(tmp_path, "per-sample", 1, 32, data={"view_engine": "per-sample"},
                trainer={"max_steps": 1})
    ).run_dir
    assert _losses(per_sample)[0][1] != pytest.approx(_losses(one)[0][1], rel=1e-3)


def test_resume_mid_epoch_with_batched_views_is_exact(tmp_path: Path) -> None:
    # 10% of the digits (180 images) at batch 32: 5 steps per epoch; stop at 7 (inside
    # epoch 1, after two of its batches), then continue to 9
    def cfg(name: str, **run: object) -> twinfold.RunConfig:
        stop = run.pop("stop_after", None)
        trainer = {"epochs": 2, "max_steps": 9, "stop_after": stop, "log_every": 3}
        return _config(tmp_path, name, 1, 32, data={"holdout_fraction": 0.9}, trainer=trainer,
                       run={"checkpoint_every": 7, **run})

    full = twinfold.train(cfg("full"))
    assert twinfold.train(cfg("split", stop_after=7)).steps == 7
    resumed = twinfold.train(cfg("split", resume=True))
    assert resumed.steps == 9
    assert _losses(resumed.run_dir) == _losses(full.run_dir)
    assert [s for s, _ in _losses(full.run_dir)] == ["3", "6", "9"]
    a, b = _state(full.run_dir), _state(resumed.run_dir)
    assert a.keys() == b.keys() and {"rng.torch", "rng.loader"} <= a.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------ config errors
class _OtherViewsConfig(AugmentationConfig):
    name: Literal["other-views"] = "other-views"
    image_size: int | None = None


class _OtherViews(ViewPipeline):
    """Views without a batched engine (the default of ViewPipeline)."""

    def __init__(self, cfg: _OtherViewsConfig) -> None:
        self.size = cfg.image_size

    def __call__(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.plain(image), self.plain(image)]

    def plain(self, image: torch.Tensor) -> torch.Tensor:
        return image[:, : self.size, : self.size].float() / 255


class _OtherViewsPlugin:
    @hookimpl
    def twinfold_augmentations(self):
        yield Component(_OtherViewsConfig, _OtherViews, "views without an engine")


def test_batched_views_refuse_components_without_an_engine(tmp_path: Path) -> None:
    registry = Registry(plugins={"other": _OtherViewsPlugin()})
    cfg = _config(tmp_path, "other", 1, 32)
    other = cfg.model_copy(
        update={"method": cfg.method.model_copy(update={"views": _OtherViewsConfig()})}
    )
    with pytest.raises(ConfigError, match=r"data\.view_engine: 'batched' needs .*'other-views'"):
        twinfold.train(other, registry=registry)
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------ image folders
def _write_folder(root: Path, count: int = 24) -> None:
    """PNG files of several sizes (one grey) and one JPEG on disk (written by Pillow)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    root.mkdir(parents=True)
    for i in range(count):
        h, w = [(20, 28), (32, 32), (17, 40), (48, 24)][i % 4]
        pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen).numpy()
        image = Image.fromarray(pixels[..., 0] if i == 5 else pixels)
        image.save(root / f"img{i:02d}.{'jpg' if i == 6 else 'png'}")


def test_folder_views_are_cropped_per_image_and_do_not_depend_on_the_batch(
    tmp_path: Path,
) -> None:
    from twinfold.data import CroppedViewsCollate, FolderSource

    _write_folder(tmp_path / "pics")
    dataset = SeededImageDataset(FolderSource(tmp_path / "pics"), seed=3)
    engine = _engine()
    collate = CroppedViewsCollate(engine)

    def views(indices: list[int]) -> list[torch.Tensor]:
        crops, got, params = collate([dataset[i] for i in indices])
        assert got.tolist() == indices and len(crops) == 2
        assert all(c.dtype == torch.uint8 and c.shape == (len(indices), 3, 16, 16) for c in crops)
        assert all(torch.equal(p.boxes[0], torch.tensor([0, 0, 16, 16])) for p in params)
        return engine.apply_views(crops, params)

    ref = views(list(range(24)))
    order = [13, 2, 7, 21, 5, 6]
    part = views(order)
    for v in range(2):
        assert torch.equal(part[v], ref[v][order]), v
    assert not torch.equal(ref[0], ref[1])
    # a same-size image gets the parameters its seed gives in a batch of its own size,
    # and cropping per image then resizing on the device agrees with the engine's own
    # crop to uint8 rounding (half a level, grown by jitter factors up to 1.4 and
    # contrast; x2 by the normalisation's std 0.5)
    same = [i for i in range(24) if i % 4 == 1]  # the 32 x 32 images
    images = torch.stack([dataset[i][0] for i in same])
    seeds = [dataset[i][2] for i in same]
    direct = engine.apply(images, engine.sample_per_sample(seeds, 32, 32))
    got = views(same)
    for v in range(2):
        diff = (got[v] - direct[v]).abs()
        assert diff.max() <= 4 / 255 and diff.mean() <= 1 / 255, (v, diff.max(), diff.mean())


def test_folder_trains_with_batched_views_by_default(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pics")
    cfg = twinfold.load_config({
        "preset": "byol-small",
        "data": {"dataset": "folder", "root": str(tmp_path / "pics"), "image_size": 16,
                 "batch_size": 8, "num_workers": 2},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"precision": "32-true", "max_steps": 4, "epochs": 2, "progress_bar": False,
                    "log_every": 1},
        "run": {"output_dir": str(tmp_path), "name": "folder", "plots": False},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    })
    assert prepare_run(cfg)[0].view_engine == "batched"
    losses = [x for _, x in _losses(twinfold.train(cfg).run_dir)]
    assert len(losses) == 4 and all(0 < x < 8 for x in losses)
