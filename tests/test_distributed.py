"""Multi-process exactness on CPU with gloo: collectives, global batch norm, and one
training step of the real Fabric loop on 2 processes vs 1 process on the whole batch."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from twinfold import distributed as D
from twinfold.sync_batchnorm import GlobalBatchNorm
from twinfold.testing import run_processes

pytestmark = [pytest.mark.distributed, pytest.mark.usefixtures("one_thread")]
WORLD = 2


def _data(n: int = 8, d: int = 5) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def _global_loss(x: torch.Tensor) -> torch.Tensor:
    """A loss with cross-sample terms: squared cross-correlation of the centred batch."""
    c = x - x.mean(0)
    return (c.T @ c / x.shape[0]).pow(2).sum()


def _gather_worker(rank: int, world: int, aware: bool) -> dict[str, torch.Tensor]:
    x = _data()
    local = x.chunk(world)[rank].clone().requires_grad_(True)
    if aware:
        full = D.gather(local, check=True)
    else:  # a plain all_gather: no gradient reaches the other ranks' samples
        parts = [torch.empty_like(local) for _ in range(world)]
        torch.distributed.all_gather(parts, local.detach())
        parts[rank] = local
        full = torch.cat(parts)
    loss = _global_loss(full)
    loss.backward()
    return {"loss": loss.detach(), "grad": local.grad}


@pytest.mark.parametrize("aware", [True, False])
def test_gather_gradient_follows_the_ddp_convention(
    aware: bool, collectives: list[dict[object, object]]
) -> None:
    x = _data().requires_grad_(True)
    ref = _global_loss(x)
    ref.backward()
    results = [r[("gather", aware)] for r in collectives]
    for r, res in enumerate(results):
        torch.testing.assert_close(res["loss"], ref.detach())
        expected = WORLD * x.grad.chunk(WORLD)[r]  # DDP divides by WORLD afterwards
        if aware:
            torch.testing.assert_close(res["grad"], expected)
        else:  # the pitfall: 1/WORLD of the true gradient after DDP's mean
            torch.testing.assert_close(res["grad"], expected / WORLD)


def _sum_worker(rank: int, world: int, aware: bool) -> torch.Tensor:
    x = _data()
    local = x.chunk(world)[rank].clone().requires_grad_(True)
    partial = local.T @ local
    if aware:
        total = D.sum_over_ranks(partial)
    else:  # plain all_reduce: right value, wrong (local-only) gradient
        total = partial + 0
        with torch.no_grad():
            other = partial.detach().clone()
            torch.distributed.all_reduce(other)
            total += other - partial.detach()
    total.pow(2).sum().backward()
    return local.grad


@pytest.mark.parametrize("aware", [True, False])
def test_sum_reduction_gradient_scale(
    aware: bool, collectives: list[dict[object, object]]
) -> None:
    """Barlow-Twins-style summed cross-correlation: only the autograd-aware reduction
    gives WORLD x the true local gradient (so DDP's mean is exact)."""
    x = _data().requires_grad_(True)
    (x.T @ x).pow(2).sum().backward()
    results = [r[("sum", aware)] for r in collectives]
    grads = torch.cat(results) / WORLD  # what DDP's mean would see per sample
    if aware:
        torch.testing.assert_close(grads, x.grad)
    else:
        assert not torch.allclose(grads, x.grad)
        torch.testing.assert_close(grads * WORLD, x.grad)


def _bn_worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    bn = GlobalBatchNorm(5).double()
    x = _data(12, 5) * 3 + 1
    local = x.chunk(world)[rank].clone().requires_grad_(True)
    y = bn(local)
    loss = D.sum_over_ranks((y * torch.arange(5.0, dtype=torch.float64)).pow(2).sum())
    loss.backward()
    return {
        "y": y.detach(),
        "gx": local.grad,
        "gw": bn.weight.grad,
        "rm": bn.running_mean,
        "rv": bn.running_var,
    }


def _all_worker(rank: int, world: int) -> dict[object, object]:
    """Every collective check above in one spawn (starting processes dominates the run
    time); each check draws from its own seeded generator, so their order does not
    matter."""
    out: dict[object, object] = {}
    for aware in (True, False):
        out[("gather", aware)] = _gather_worker(rank, world, aware)
        out[("sum", aware)] = _sum_worker(rank, world, aware)
    out["bn"] = _bn_worker(rank, world)
    return out


@pytest.fixture(scope="module")
def collectives() -> list[dict[object, object]]:
    return run_processes(_all_worker, WORLD)


def test_global_batchnorm_matches_one_process(collectives: list[dict[object, object]]) -> None:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm1d(5).double()
    x = (_data(12, 5) * 3 + 1).requires_grad_(True)
    y = bn(x)
    (y * torch.arange(5.0, dtype=torch.float64)).pow(2).sum().backward()
    res = [r["bn"] for r in collectives]
    torch.testing.assert_close(torch.cat([r["y"] for r in res]), y.detach())
    torch.testing.assert_close(torch.cat([r["gx"] for r in res]) / WORLD, x.grad)
    torch.testing.assert_close(sum(r["gw"] for r in res) / WORLD, bn.weight.grad)
    for r in res:
        torch.testing.assert_close(r["rm"], bn.running_mean)
        torch.testing.assert_close(r["rv"], bn.running_var)


# ---------------------------------------------------------------- the real loop
SMALL_PRESETS = ["byol-small", "simsiam-small", "barlow-twins-small", "vicreg-small"]


def _tiny_method(preset: str) -> dict:
    """Shrink a small preset's encoder and heads; the heads keep their names (and so the
    plugin's own layer choices, e.g. SimSiam's affine-free output batch norm)."""
    import twinfold

    method = twinfold.default_registry().preset(preset).config["method"]
    tiny: dict = {"encoder": {"widths": [8, 16]}}
    for head in ("projector", "predictor"):
        if method.get(head):
            tiny[head] = {"hidden_dims": [32], "out_dim": 16}
    return tiny


def _tiny_config(
    tmp: Path, name: str, devices: int, batch: int, steps: int = 2, preset: str = "byol-small"
) -> dict:
    return {
        "preset": preset,
        # per-sample views (batched ones: tests/test_batched_training.py); float32, where
        # two processes equal one up to float32 rounding (bf16: tests/test_fast_path.py)
        "data": {"image_size": 16, "batch_size": batch, "view_engine": "per-sample"},
        "method": _tiny_method(preset),
        "trainer": {
            "precision": "32-true",
            "devices": devices,
            "strategy": "ddp_spawn" if devices > 1 else "auto",
            "max_steps": steps,
            "epochs": 1,
            "progress_bar": False,
            "log_every": 1,
        },
        # a checkpoint after every step: step 1's shows the comparison is not vacuous
        "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 1,
                "keep_checkpoints": steps},
        "evaluation": {"at_end": False},
    }


def _params(run_dir: Path, file: str = "last.ckpt") -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / file, weights_only=True)
    out = {f"online.{k}": v for k, v in state["online"].items()}
    out.update({f"target.{k}": v for k, v in (state.get("target") or {}).items()})
    return {k: v for k, v in out.items() if v.is_floating_point()}


def _losses(run_dir: Path) -> list[float]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return [float(r["loss"]) for r in rows if r.get("loss")]


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_two_processes_equal_one_process_after_training_steps(tmp_path: Path, preset: str) -> None:
    """2 ranks x 16 samples == 1 rank x 32 samples through the real loop, for each
    method's small preset (its optimizer, batch norm, target rule and loss): the logged
    losses and all parameters after two optimizer steps agree."""
    import twinfold

    def run(name: str, devices: int, batch: int) -> Path:
        cfg = _tiny_config(tmp_path, name, devices, batch, 2, preset)
        return twinfold.train(twinfold.load_config(cfg)).run_dir

    one, two = run("one", 1, 32), run("two", 2, 16)
    assert _losses(two) == pytest.approx(_losses(one), rel=1e-4)
    assert len(_losses(one)) == 2
    a, b = _params(one), _params(two)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    # the comparison is not vacuous: one step fewer gives different weights
    early = _params(one, "step-00000001.ckpt")
    changed = [k for k in a if not torch.allclose(a[k], early[k], rtol=1e-4, atol=1e-5)]
    assert len(changed) > len(a) // 2
