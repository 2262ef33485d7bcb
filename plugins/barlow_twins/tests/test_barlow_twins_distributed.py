"""Barlow Twins on 2 gloo processes x B/2 == 1 process on B (value, terms), with input
gradients = world_size x the single-process gradient (the DDP convention), and the
known pitfall reproduced: a plain all_reduce of the partial cross-correlation gives the
right value but half that gradient."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

import twinfold
from twinfold.testing import run_processes
from twinfold_barlow_twins import barlow_terms, global_batch_norm

pytestmark = pytest.mark.distributed
WORLD = 2
BATCH, DIM = 12, 6


def _data(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    return [
        base * 2 + torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) + 1,
        base - 0.5 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64),
    ]


def _reference_terms(z1: torch.Tensor, z2: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eqs. 1-2 with torch's own batch norm (training mode: biased variance, eps 1e-5)."""
    a = F.batch_norm(z1, None, None, training=True, eps=1e-5)
    b = F.batch_norm(z2, None, None, training=True, eps=1e-5)
    c = a.T @ b / z1.shape[0]
    eye = torch.eye(c.shape[0], dtype=torch.bool)
    on, off = (1 - c[eye]).pow(2).sum(), c[~eye].pow(2).sum()
    return {"loss": on + 0.0051 * off, "on_diag": on, "off_diag": off}


def _plain_all_reduce_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The pitfall: the authors-style partial C summed by a plain (non-autograd)
    all_reduce; the batch norm statistics are still global and autograd-aware."""
    batch = BATCH
    a, b = global_batch_norm(z1, batch), global_batch_norm(z2, batch)
    partial = a.T @ b / batch
    reduced = partial.detach().clone()
    dist.all_reduce(reduced)
    c = partial + (reduced - partial.detach())  # value: global C; gradient: local only
    return barlow_terms(c, 0.0051)[0]


def _worker(rank: int, world: int, separate_target: bool) -> dict[str, torch.Tensor]:
    full = _data()
    local = [t.chunk(world)[rank].clone().requires_grad_(True) for t in full]
    loss = twinfold.create("loss", "barlow-twins")
    if separate_target:
        target = [t.chunk(world)[rank].clone() * -0.5 for t in _data(1)]
        terms = loss.terms(local, target)
    else:
        terms = loss.terms(local, local)
    terms["loss"].backward()
    out = {k: v.detach() for k, v in terms.items()}
    out.update({f"grad{i}": t.grad for i, t in enumerate(local)})
    if not separate_target:
        plain = [t.detach().clone().requires_grad_(True) for t in local]
        value = _plain_all_reduce_loss(plain[0], plain[1])
        value.backward()
        out["plain_loss"] = value.detach()
        out.update({f"plain_grad{i}": t.grad for i, t in enumerate(plain)})
    return out


def _both_worker(rank: int, world: int) -> dict[bool, dict[str, torch.Tensor]]:
    """Both layouts in one spawn (starting processes dominates the run time)."""
    return {separate: _worker(rank, world, separate) for separate in (False, True)}


@pytest.fixture(scope="module")
def results() -> list[dict[bool, dict[str, torch.Tensor]]]:
    return run_processes(_both_worker, WORLD)


@pytest.mark.parametrize("separate_target", [False, True])
def test_two_processes_equal_one_process(
    separate_target: bool, results: list[dict[bool, dict[str, torch.Tensor]]]
) -> None:
    full = [t.clone().requires_grad_(True) for t in _data()]
    loss = twinfold.create("loss", "barlow-twins")
    if separate_target:
        ref = loss.terms(full, [t * -0.5 for t in _data(1)])
    else:
        ref = loss.terms(full, full)
        independent = _reference_terms(full[0].detach(), full[1].detach())
        for key in ("loss", "on_diag", "off_diag"):
            torch.testing.assert_close(ref[key].detach(), independent[key], msg=key)
    ref["loss"].backward()
    for rank, res in enumerate(r[separate_target] for r in results):
        for key in ("loss", "on_diag", "off_diag"):
            torch.testing.assert_close(res[key], ref[key].detach(), msg=f"rank {rank} {key}")
        for i, z in enumerate(full):
            # DDP convention: WORLD x the true gradient (DDP then averages over ranks)
            torch.testing.assert_close(res[f"grad{i}"], WORLD * z.grad.chunk(WORLD)[rank])
        if separate_target:
            continue
        # the pitfall: the same value, but the gradient is 1/WORLD of the right one, so
        # after DDP's mean the parameters would see 1/WORLD of the true gradient
        torch.testing.assert_close(res["plain_loss"], ref["loss"].detach())
        for i, z in enumerate(full):
            torch.testing.assert_close(res[f"plain_grad{i}"], res[f"grad{i}"] / WORLD)
            torch.testing.assert_close(res[f"plain_grad{i}"], z.grad.chunk(WORLD)[rank])
    assert full[0].grad.abs().max() > 1e-3  # the comparison is not vacuous
