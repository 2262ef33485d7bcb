"""The DirectPred plugin as a user meets it: registered through its real entry point,
composed with BYOL's components by name, trained for a few steps through
``twinfold.train`` on the embedded digits, and with global-batch statistics on 2
processes."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

import twinfold
from twinfold.method import build_method
from twinfold.registry import Registry
from twinfold.testing import run_processes
from twinfold_directpred import DirectPredConfig, DirectPredictor, directpred_weight

TINY = [
    "data.image_size=16",
    "data.batch_size=64",
    "method.encoder.widths=[8,16]",
    "method.projector.hidden_dims=[32]",
    "method.projector.out_dim=16",
    "trainer.epochs=1",
    "trainer.max_steps=3",
    "trainer.log_every=1",
    "trainer.progress_bar=false",
    "evaluation.compare_random_init=false",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the per-sample view ops are tiny, and on a shared CPU a
    thread pool makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registered_through_the_installed_entry_point() -> None:
    (ep,) = [e for e in entry_points(group="twinfold") if e.name == "directpred"]
    assert ep.value == "twinfold_directpred.plugin"
    assert ep.dist is not None and ep.dist.name == "twinfold-directpred"
    registry = Registry()  # walks the real entry points, like the CLI
    assert registry.config_class("head", "directpred") is DirectPredConfig
    records = {(r.kind, r.name): r for r in registry.records()}
    head = records[("head", "directpred")]
    assert (head.plugin, head.distribution, head.version) == (
        "directpred",
        "twinfold-directpred",
        "0.1.0",
    )
    preset = records[("preset", "directpred-small")]
    assert preset.record.deviations and "Tian" in (preset.record.paper or "")
    # blocked by name, the plugin is never imported and its preset is gone
    blocked = Registry(blocked={"directpred"})
    assert "directpred-small" not in blocked.available("preset")


def test_preset_composes_byol_components_by_name() -> None:
    cfg = twinfold.load_config({"preset": "directpred-small"})
    m = cfg.method
    assert (m.predictor.name, m.target.name, m.loss.name, m.projector.name) == (
        "directpred",
        "ema",
        "byol",
        "byol-projector",
    )
    assert (m.predictor.rho, m.predictor.eps, m.predictor.freq) == (0.3, 0.01, 1)
    method = build_method(cfg.method)
    predictor = method.online_raw.predictor
    assert isinstance(predictor, DirectPredictor)
    assert predictor.out_dim == method.online_raw.projector.out_dim == 128
    # the target (BYOL's EMA copy) holds encoder + projector only; nothing to learn in W_p
    assert not any(n.startswith("predictor.") for n, _ in method.online_raw.named_parameters())


def test_a_few_training_steps_on_the_digits(tmp_path: Path) -> None:
    cfg = twinfold.load_config(
        {"preset": "directpred-small"},
        overrides=[*TINY, f"run.output_dir={tmp_path}", "run.name=dp"],
    )
    result = twinfold.train(cfg)
    assert result.steps == 3
    rows = [r for r in csv.DictReader((result.run_dir / "metrics.csv").open()) if r.get("loss")]
    losses = [float(r["loss"]) for r in rows]
    # BYOL's loss: 2 - 2 cos summed over both directions, so within [0, 8]
    assert len(losses) == 3 and all(math.isfinite(x) and 0 <= x <= 8 for x in losses)
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    online = state["online"]
    # steps 2 and 3 folded the statistics of steps 1 and 2; step 3's wait for the next step
    assert int(online["predictor.steps"]) == 2
    assert int(online["predictor.pending_count"]) == 2 * 64 and bool(online["predictor.stepped"])
    corr = online["predictor.corr"]
    torch.testing.assert_close(corr, corr.T)
    assert torch.linalg.eigvalsh(corr.double()).min() > -1e-5  # PSD up to rounding
    torch.testing.assert_close(online["predictor.weight"], directpred_weight(corr, 0.01))


DIM, BATCH, STEPS, RHO = 5, 12, 3, 0.3


def _views(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    shift = torch.cat([torch.zeros(BATCH // 2, DIM), torch.full((BATCH // 2, DIM), 2.0)])
    return [torch.randn(BATCH, DIM, generator=g) + shift for _ in range(2)]


def _ema_corr(chunk: slice) -> torch.Tensor:
    """Eq. 19 over the first STEPS - 1 steps (the last step's statistics are pending),
    each step's E_B[f f^T] taken over ``chunk`` of both views."""
    corr = None
    for step in range(STEPS - 1):
        f = torch.cat([v[chunk] for v in _views(step)])
        batch = f.T @ f / len(f)
        corr = batch if corr is None else RHO * corr + (1 - RHO) * batch
    assert corr is not None
    return corr


def _train(rank: int, world: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    head = DirectPredictor(DirectPredConfig(in_dim=DIM, rho=RHO))
    for step in range(STEPS):
        outs = [head(v.chunk(world)[rank].clone().requires_grad_(True)) for v in _views(step)]
        sum(o.sum() for o in outs).backward()
    return {"corr": head.corr, "weight": head.weight, "steps": head.steps}


@pytest.mark.distributed
def test_statistics_are_over_the_global_batch() -> None:
    """2 gloo processes with half of every batch == 1 process with the whole batch == Eq.
    19 over the whole batch; the rank-dependent shift makes rank-local statistics differ."""
    single = _train(0, 1)
    ranks = run_processes(_train, 2)
    whole = _ema_corr(slice(None))
    assert int(single["steps"]) == STEPS - 1
    torch.testing.assert_close(single["corr"], whole, rtol=1e-5, atol=1e-5)
    for r in ranks:
        torch.testing.assert_close(r["corr"], whole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r["weight"], single["weight"], rtol=1e-4, atol=1e-5)
    rank0_only = _ema_corr(slice(0, BATCH // 2))
    assert (rank0_only - whole).abs().max() > 0.5
