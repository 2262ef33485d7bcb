"""DINO's loss on 2 gloo processes x B/2 equals 1 process on B: value, teacher entropy,
the centre (an all-reduced mean of the teacher outputs) and the student gradients (the
DDP convention of twinfold.distributed: world_size x the single-process gradient of the
rank's slice)."""

from __future__ import annotations

import pytest
import torch

from twinfold.testing import run_processes
from twinfold_dino import DINOLoss, DINOLossConfig

pytestmark = pytest.mark.distributed
WORLD = 2
BATCH, K, VIEWS = 8, 6, 4


def _data(seed: int, views: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(BATCH, K, generator=g, dtype=torch.float64) for _ in range(views)]


def _run(world: int = 1, rank: int = 0) -> dict[str, torch.Tensor]:
    """Two consecutive steps (the second uses the centre the first left), then the terms,
    the centre and the gradients of this rank's slice of the student outputs."""
    loss = DINOLoss(DINOLossConfig(out_dim=K, warmup_teacher_temp_epochs=0)).double()
    out: dict[str, torch.Tensor] = {}
    for step in range(2):
        student = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data(step, VIEWS)]
        teacher = [t.chunk(world)[rank].clone() for t in _data(10 + step, 2)]
        terms = loss.terms(student, teacher)
        terms["loss"].backward()
        out.update({f"{k}{step}": v.detach() for k, v in terms.items()})
        out.update({f"grad{step}_{i}": t.grad for i, t in enumerate(student)})
        out[f"center{step}"] = loss.center.clone()
    return out


def _worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    return _run(world, rank)


def test_two_processes_equal_one_process() -> None:
    ref = _run()
    assert ref["grad1_0"].abs().max() > 1e-3 and ref["center1"].abs().max() > 1e-3
    for rank, res in enumerate(run_processes(_worker, WORLD)):
        assert res.keys() == ref.keys()
        for key, value in ref.items():
            expected = WORLD * value.chunk(WORLD)[rank] if key.startswith("grad") else value
            torch.testing.assert_close(res[key], expected, msg=f"rank {rank} {key}")
