"""Data loaders. Training always uses a DistributedSampler, also for one process: the
union over N ranks of their k-th batches of size b is the k-th batch of size N*b of a
single process (same samples and, with :class:`MultiViewDataset`, the same views)."""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from twinfold.augment.collate import BatchedViewsCollate, CroppedViewsCollate

__all__ = [
    "BatchedViewsCollate",
    "CroppedViewsCollate",
    "ResumableSampler",
    "build_eval_loader",
    "build_train_loader",
    "collate_views",
]

LOADER_SEED_OFFSET = 0x5EED
"""Offset between the run seed and the seed of a loader's private generator."""
RANK_SEED_STRIDE = 1_000_003
"""Distance between the private generator seeds of consecutive ranks."""


class ResumableSampler(DistributedSampler):
    """A :class:`DistributedSampler` that can start an epoch part-way, for resuming:
    ``set_epoch(epoch, skip=n)`` drops the first ``n`` indices of this rank's share (n =
    batches already done x per-rank batch), leaving the rest of the order unchanged."""

    skip: int = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        if not 0 <= skip <= self.num_samples:
            raise ValueError(f"skip must be in [0, {self.num_samples}], got {skip}")
        super().set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(super().__iter__(), self.skip, None)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def ignore_stop_signals(worker_id: int) -> None:
    """Data-loader workers leave SIGTERM / SIGUSR1 to the training process, which stops
    at the next step boundary (a signal sent to the whole process group must not kill
    the workers first); they end with their parent."""
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)


def collate_views(samples: list[list[Tensor]]) -> list[Tensor]:
    """``[[a0, a1], [b0, b1], ...]`` -> ``[stack(a0, b0, ...), stack(a1, b1, ...)]``."""
    return [torch.stack(views) for views in zip(*samples, strict=True)]


def collate_labelled(samples: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
    """``[(image, label), ...]`` -> ``(images [B, ...], labels [B] int64)``."""
    images, labels = zip(*samples, strict=True)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    world_size: int,
    rank: int,
    seed: int,
    num_workers: int,
    generator_free: bool = True,
    collate_fn: Callable[[list[Any]], Any] = collate_views,
    pin_memory: bool = False,
) -> tuple[DataLoader, ResumableSampler]:
    """Shuffled, drop-last batches of this rank's share. Before each epoch call
    ``sampler.set_epoch(epoch, skip=...)`` (``skip`` resumes part-way) and
    ``dataset.set_epoch(epoch)``; workers are re-created every epoch, so they see it.

    With ``generator_free`` the loader draws its workers' base seed from a private
    generator, seeded per rank (so workers of different ranks get different seeds), and
    iterating it leaves torch's global generator untouched (the training stream is the
    same whether or not, and how often, the loader is iterated). ``pin_memory`` (CUDA)
    copies each batch into page-locked memory in a thread of the main process."""
    sampler = ResumableSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    generator = None
    if generator_free:
        generator = torch.Generator().manual_seed(
            (seed + LOADER_SEED_OFFSET + RANK_SEED_STRIDE * rank) % (1 << 63)
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        collate_fn=collate_fn,
        worker_init_fn=ignore_stop_signals,
        persistent_workers=False,
        pin_memory=pin_memory,
        generator=generator,
    )
    return loader, sampler


def build_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """In-order batches of ``(images, labels)``, the last one possibly smaller."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=collate_labelled,
    )
