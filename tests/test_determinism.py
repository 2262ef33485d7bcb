"""Seeding: the same seed gives the same run, another seed another run, and the
augmentation random streams differ across samples, ranks, workers and epochs."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

import twinfold
from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views
from twinfold.data import MultiViewDataset, build_train_loader
from twinfold.data.base import ImageSource


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(tmp: Path, name: str, seed: int) -> dict:
    return {
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 64},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"epochs": 1, "max_steps": 3, "progress_bar": False},
        "run": {"output_dir": str(tmp), "name": name, "seed": seed, "plots": False},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    }


def weights(run_dir: Path) -> dict[str, Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {f"{part}.{k}": v for part in ("online", "target") for k, v in state[part].items()}


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    a, b, c = (weights(twinfold.train(twinfold.load_config(tiny(tmp_path, n, s))).run_dir)
               for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    floats = [k for k in a if a[k].is_floating_point()]
    differ = [k for k in floats if not torch.equal(a[k], c[k])]
    assert len(differ) > len(floats) // 2


class SameImage(ImageSource):
    """``n`` copies of one image: any difference between views comes from the RNG."""

    def __init__(self, n: int) -> None:
        self.n, self.classes = n, []
        self.image = torch.arange(3 * 16 * 16, dtype=torch.int64).reshape(3, 16, 16) % 251
        self.image = self.image.to(torch.uint8)

    def __len__(self) -> int:
        return self.n

    def load(self, index: int) -> Tensor:
        return self.image.clone()

    def label(self, index: int) -> int | None:
        return None


def _epoch_views(ds: MultiViewDataset, rank: int, workers: int, epoch: int) -> dict[int, Tensor]:
    loader, sampler = build_train_loader(
        ds, 4, world_size=2, rank=rank, seed=5, num_workers=workers
    )
    sampler.set_epoch(epoch)
    ds.set_epoch(epoch)
    indices = list(iter(sampler))
    rows = [torch.cat([v.flatten(1) for v in views], 1) for views in loader]
    return dict(zip(indices, torch.cat(rows), strict=True))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_augmentation_streams_are_distinct_per_rank_worker_and_epoch() -> None:
    ds = MultiViewDataset(SameImage(32), build_simclr_views(SimCLRViewsConfig(image_size=16)), 5)
    epoch0 = {**_epoch_views(ds, 0, 2, 0), **_epoch_views(ds, 1, 2, 0)}  # 2 ranks x 2 workers
    assert sorted(epoch0) == list(range(32))
    for i, j in itertools.combinations(range(32), 2):
        assert not torch.equal(epoch0[i], epoch0[j]), (i, j)  # every sample its own stream
    # the stream belongs to (seed, epoch, sample), not to the rank or worker that draws it
    for i, row in _epoch_views(ds, 1, 0, 0).items():
        assert torch.equal(row, epoch0[i])
    epoch1 = {**_epoch_views(ds, 0, 0, 1), **_epoch_views(ds, 1, 0, 1)}
    assert all(not torch.equal(epoch0[i], epoch1[i]) for i in range(32))


class WorkerSeed(Dataset):
    """Each item is the torch seed of the data-loader worker that produced it."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> list[Tensor]:
        info = get_worker_info()
        return [torch.tensor(info.seed if info is not None else -1)]


def test_data_loader_workers_get_distinct_seeds_on_every_rank() -> None:
    """The workers' own generators (torch, and numpy / random, which torch seeds from
    the same value) differ across ranks and workers: a pipeline drawing from them does
    not repeat another rank's stream."""
    seeds = set()
    for rank in (0, 1):
        loader, sampler = build_train_loader(
            WorkerSeed(), 2, world_size=2, rank=rank, seed=5, num_workers=2
        )
        sampler.set_epoch(0)
        seeds |= {int(s) for (batch,) in loader for s in batch}
    assert len(seeds) == 4 and -1 not in seeds
