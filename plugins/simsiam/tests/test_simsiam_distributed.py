"""SimSiam's loss on 2 gloo processes x B/2 equals 1 process on B (value and terms), and
the input gradients are world_size x the single-process gradient of that rank's slice
(the DDP convention of twinfold.distributed). One spawn covers both input layouts:
separate online/target lists, and the same list (target rule ``none``, no predictor)."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold.testing import run_processes

pytestmark = pytest.mark.distributed
WORLD = 2
BATCH, DIM = 12, 6
CASES = ("separate", "same")


def _data(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    return [base + 0.7 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) for _ in "ab"]


def _case(case: str, world: int = 1, rank: int = 0) -> dict[str, torch.Tensor]:
    """Loss terms and input gradients of one layout on this rank's slice."""
    online = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data(0)]
    target = online
    if case == "separate":
        target = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data(1)]
    terms = twinfold.create("loss", "simsiam").terms(online, target)
    terms["loss"].backward()
    out = {k: v.detach() for k, v in terms.items()}
    out.update({f"grad_online{i}": t.grad for i, t in enumerate(online)})
    if case == "separate":
        out.update({f"grad_target{i}": t.grad for i, t in enumerate(target)})
    return out


def _worker(rank: int, world: int) -> dict[str, dict[str, torch.Tensor]]:
    return {case: _case(case, world, rank) for case in CASES}


def test_two_processes_equal_one_process() -> None:
    refs = {case: _case(case) for case in CASES}
    results = run_processes(_worker, WORLD)
    for case in CASES:
        ref = refs[case]
        assert ref["grad_online0"].abs().max() > 1e-3  # the comparison is not vacuous
        for rank, res in enumerate(r[case] for r in results):
            assert res.keys() == ref.keys()
            for key, value in ref.items():
                # values are global; input gradients are WORLD x the true gradient of
                # this rank's slice (DDP then averages over ranks)
                expected = WORLD * value.chunk(WORLD)[rank] if key.startswith("grad") else value
                torch.testing.assert_close(res[key], expected, msg=f"{case} rank {rank} {key}")
