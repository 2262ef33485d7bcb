"""Data loaders. Training always uses a DistributedSampler (also for one process) so
that the union of step k's batches over N ranks equals step k's batch of one process
with N times the batch size."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def collate_views(samples: list[list[Tensor]]) -> list[Tensor]:
    """``[[v0, v1], [v0, v1], ...]`` -> ``[V0 batch, V1 batch]``."""
    import torch

    return [torch.stack([s[v] for s in samples]) for v in range(len(samples[0]))]


def build_train_loader(
    dataset: Dataset, batch_size: int, *, world_size: int, rank: int, seed: int, num_workers: int
) -> tuple[DataLoader, DistributedSampler]:
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        collate_fn=collate_views,
        persistent_workers=False,
    )
    return loader, sampler


def build_eval_loader(dataset: Dataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
