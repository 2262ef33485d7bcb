"""BYOL's loss on 2 gloo processes x B/2 equals 1 process on B (value and terms), and the
input gradients are world_size x the single-process gradient of that rank's slice (the DDP
convention of twinfold.distributed): the batch mean is over the global batch."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold.testing import run_processes

pytestmark = pytest.mark.distributed
WORLD = 2
BATCH, DIM = 12, 6


def _data(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    return [base + 0.7 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) for _ in "ab"]


def _run(world: int = 1, rank: int = 0) -> dict[str, torch.Tensor]:
    """Loss terms and gradients of this rank's slice of predictions and targets."""
    online = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data(0)]
    target = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data(1)]
    terms = twinfold.create("loss", "byol").terms(online, target)
    terms["loss"].backward()
    out = {k: v.detach() for k, v in terms.items()}
    for name, tensors in (("online", online), ("target", target)):
        out.update({f"grad_{name}{i}": t.grad for i, t in enumerate(tensors) if t.grad is not None})
    return out


def _worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    return _run(world, rank)


def test_two_processes_equal_one_process() -> None:
    ref = _run()
    assert ref["grad_online0"].abs().max() > 1e-3  # the comparison is not vacuous
    # the reference against the formula: sum over both directions of 2 - 2 cos, batch mean
    p, z = _data(0), _data(1)
    cos = [torch.nn.functional.cosine_similarity(p[i], z[1 - i], dim=1) for i in (0, 1)]
    torch.testing.assert_close(ref["loss"], sum((2 - 2 * c).mean() for c in cos))
    for rank, res in enumerate(run_processes(_worker, WORLD)):
        assert res.keys() == ref.keys()
        for key, value in ref.items():
            expected = WORLD * value.chunk(WORLD)[rank] if key.startswith("grad") else value
            torch.testing.assert_close(res[key], expected, msg=f"rank {rank} {key}")
