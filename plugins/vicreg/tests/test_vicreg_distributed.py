"""VICReg on 2 gloo processes x B/2 == 1 process on B: value, terms and input gradients
(world_size x the single-process gradient, the DDP convention). Gathering is on by
default; the pitfall it avoids (variance/covariance of the LOCAL batch, as libraries with
gathering switched off by default compute) gives a different value."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold.testing import run_processes
from twinfold_vicreg import VICRegLossConfig

pytestmark = pytest.mark.distributed
WORLD = 2
BATCH, DIM = 12, 6
KEYS = ("loss", "invariance", "variance", "covariance")
MODES = ("same", "paper", "target")


def _data(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)
    scale = torch.linspace(0.3, 2.0, DIM, dtype=torch.float64)
    # rank-dependent offsets so that local and global statistics clearly differ
    shift = torch.cat([torch.zeros(BATCH // 2, DIM), torch.ones(BATCH // 2, DIM)]).double()
    return [
        (base + 0.5 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)) * scale + shift,
        (base - 0.5 * torch.randn(BATCH, DIM, generator=g, dtype=torch.float64)) * scale,
    ]


def _target() -> list[torch.Tensor]:
    return [t * -0.5 + 0.1 for t in _data(1)]


def _worker(rank: int, world: int, mode: str) -> dict[str, torch.Tensor]:
    local = [t.chunk(world)[rank].clone().requires_grad_(True) for t in _data()]
    loss = twinfold.create("loss", "vicreg", variance_convention=mode_convention(mode))
    if mode == "target":
        terms = loss.terms(local, [t.chunk(world)[rank].clone() for t in _target()])
    else:
        terms = loss.terms(local, local)
    terms["loss"].backward()
    out = {k: v.detach() for k, v in terms.items()}
    out.update({f"grad{i}": t.grad for i, t in enumerate(local)})
    # what a local-statistics implementation would give on this rank (no collectives)
    local_only = [t.detach() for t in local]
    out["local_only"] = _single_process_loss(local_only, mode)
    return out


def mode_convention(mode: str) -> str:
    return "paper" if mode == "paper" else "code"


def _single_process_loss(z: list[torch.Tensor], mode: str) -> torch.Tensor:
    """The loss of one process that sees only ``z`` (used on a rank after the process
    group exists, so it is computed with the plain formulas, not the module)."""
    from twinfold_vicreg.loss import covariance, variance

    a, b = z
    centred = [t - t.mean(0) for t in z]
    v = variance(centred[0]) + variance(centred[1])
    v = v if mode == "paper" else v / 2
    s = (a - b).pow(2).mean()
    return 25 * s + 25 * v + covariance(centred[0]) + covariance(centred[1])


def _size_check(rank: int) -> str:
    z = torch.randn(3 + rank, DIM)
    try:
        twinfold.create("loss", "vicreg")([z, z * 2], [z, z * 2])
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def _all_worker(rank: int, world: int) -> dict[str, object]:
    """Everything in one spawn (starting processes dominates the run time)."""
    out: dict[str, object] = {mode: _worker(rank, world, mode) for mode in MODES}
    out["sizes"] = _size_check(rank)
    return out


@pytest.fixture(scope="module")
def results() -> list[dict[str, object]]:
    return run_processes(_all_worker, WORLD)


def test_gathering_is_on_by_default() -> None:
    cfg = VICRegLossConfig()
    assert not any("gather" in name or "local" in name for name in VICRegLossConfig.model_fields)
    assert twinfold.create("loss", "vicreg").cfg == cfg


@pytest.mark.parametrize("mode", MODES)
def test_two_processes_equal_one_process(mode: str, results: list[dict[str, object]]) -> None:
    full = [t.clone().requires_grad_(True) for t in _data()]
    loss = twinfold.create("loss", "vicreg", variance_convention=mode_convention(mode))
    ref = loss.terms(full, _target()) if mode == "target" else loss.terms(full, full)
    ref["loss"].backward()
    for rank, all_modes in enumerate(results):
        res = all_modes[mode]
        for key in KEYS:
            torch.testing.assert_close(res[key], ref[key].detach(), msg=f"rank {rank} {key}")
        for i, z in enumerate(full):
            # DDP convention: WORLD x the true gradient (DDP then averages over ranks)
            torch.testing.assert_close(res[f"grad{i}"], WORLD * z.grad.chunk(WORLD)[rank])
        if mode != "target":
            # the pitfall: local-batch statistics give another value on every rank
            assert abs(res["local_only"] - ref["loss"].detach()) > 0.1
    assert full[0].grad.abs().max() > 1e-3  # the comparison is not vacuous


def test_unequal_local_batches_are_refused(results: list[dict[str, object]]) -> None:
    for res in results:
        assert "batch sizes differ" in str(res["sizes"])
