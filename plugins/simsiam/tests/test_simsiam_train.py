"""A short real run of ``simsiam-small`` through ``twinfold.train`` (tiny widths) with the
paper's optimizer (SGD, the predictor at a fixed rate): the run directory's files, a
finite loss, and the predictor's fixed learning rate (Chen & He 2021, sec. 4.4) read
from the optimizer before every step while the rest follows the cosine schedule."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import twinfold
import twinfold.loop

STEPS, BATCH, BASE_LR = 5, 64, 0.05


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Train once; record every group's lr as the optimizer sees it at each step."""
    seen: list[dict[str, float]] = []
    fixed_flags: dict[str, bool] = {}
    build = twinfold.loop.build_optimizer

    def recording_build(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        opt = build(*args, **kwargs)
        fixed_flags.update({g["name"]: g["fixed_lr"] for g in opt.param_groups})
        opt.register_step_pre_hook(
            lambda o, a, k: seen.append({g["name"]: g["lr"] for g in o.param_groups})
        )
        return opt

    cfg = twinfold.load_config(
        {
            "preset": "simsiam-small",
            "data": {"image_size": 16, "batch_size": BATCH},
            "method": {
                "encoder": {"widths": [8, 16]},
                "projector": {"hidden_dims": [32, 32], "out_dim": 16},
                "predictor": {"hidden_dims": [8], "out_dim": 16},
            },
            # the paper's optimizer; another optimizer name replaces the preset's section
            # whole (twinfold.config.merge), its LARS and predictor multiplier included
            "optimizer": {
                "name": "sgd",
                "lr": BASE_LR,
                "weight_decay": 1e-4,
                "exclude_bias_and_norm": False,
                "fixed_lr": ["predictor"],
            },
            "schedule": {"warmup_epochs": 0},
            "trainer": {"max_steps": STEPS, "progress_bar": False, "log_every": 1},
            "run": {"output_dir": str(tmp_path_factory.mktemp("runs")), "name": "tiny"},
            "evaluation": {"compare_random_init": False},
        }
    )
    threads = torch.get_num_threads()
    # one intra-op thread: the per-sample view ops are tiny and a shared CPU makes a
    # thread pool far slower for them than one thread
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(twinfold.loop, "build_optimizer", recording_build)
            result = twinfold.train(cfg)
    finally:
        torch.set_num_threads(threads)
    return {"result": result, "lrs": seen, "fixed": fixed_flags}


def test_run_writes_its_files_and_a_finite_loss(run: dict[str, Any]) -> None:
    result = run["result"]
    path = Path(result.run_dir)
    assert result.steps == STEPS
    for name in ("config.yaml", "metrics.csv", "summary.json", "backbone.safetensors"):
        assert (path / name).is_file(), name
    assert (path / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((path / "summary.json").read_text())
    assert summary["steps"] == STEPS and math.isfinite(summary["loss"])
    assert -1.0 <= summary["loss"] <= 1.0  # a mean of negative cosines
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0
    with (path / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss")]
    assert len(rows) == STEPS
    for r in rows:
        assert math.isfinite(float(r["loss"]))
        assert float(r["loss/cosine"]) == pytest.approx(-float(r["loss"]), abs=1e-6)
        assert float(r["loss/output_std"]) > 0


def test_predictor_keeps_its_lr_while_the_rest_follows_the_cosine(
    run: dict[str, Any],
) -> None:
    peak = BASE_LR * BATCH / 256  # linear scaling, reference batch 256
    lrs, fixed = run["lrs"], run["fixed"]
    assert len(lrs) == STEPS
    assert sum(fixed.values()) == 2 and len(fixed) == 4  # predictor weights and bias/BN
    for k, step in enumerate(lrs):
        cosine = peak * 0.5 * (1 + math.cos(math.pi * k / STEPS))
        for name, lr in step.items():
            assert lr == pytest.approx(peak if fixed[name] else cosine), (k, name)
    scheduled = [lr for n, lr in lrs[-1].items() if not fixed[n]]
    assert max(scheduled) < 0.2 * peak  # the schedule really moved meanwhile
    # the logged lr is the first (scheduled) group's
    with (Path(run["result"].run_dir) / "metrics.csv").open() as f:
        logged = [float(r["lr"]) for r in csv.DictReader(f) if r.get("lr")]
    assert logged == pytest.approx([step["scheduled/weights"] for step in lrs])


def test_checkpoint_holds_the_fixed_predictor_lr(run: dict[str, Any]) -> None:
    state = torch.load(
        Path(run["result"].run_dir) / "checkpoints" / "last.ckpt", weights_only=False
    )
    groups = state["optimizer"]["param_groups"]
    peak = BASE_LR * BATCH / 256
    for g in groups:
        if g["fixed_lr"]:
            assert g["lr"] == pytest.approx(peak) and g["weight_decay"] == 1e-4
        else:
            assert g["lr"] < peak
