"""End-to-end: a few steps of vicreg-small through twinfold.train, and VICReg's loss
composed with BYOL's EMA target and a predictor (a supported mix of two plugins,
named through the registry only)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

import twinfold

TINY: dict[str, Any] = {
    "data": {"image_size": 16, "batch_size": 64},
    "trainer": {"epochs": 1, "max_steps": 3, "log_every": 1, "progress_bar": False},
}


def tiny_method(**extra: Any) -> dict[str, Any]:
    return {
        "encoder": {"widths": [8, 16]},
        "projector": {"hidden_dims": [32, 32], "out_dim": 16},
        **extra,
    }


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def check_run(result: Any, steps: int) -> list[dict[str, str]]:
    run_dir = Path(result.run_dir)
    for name in ("config.yaml", "metrics.csv", "summary.json", "backbone.safetensors"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert result.steps == steps
    assert math.isfinite(result.metrics["loss"])
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps"] == steps
    rows = [r for r in metric_rows(run_dir) if r.get("loss")]
    assert len(rows) == steps
    for row in rows:
        for key in ("loss", "loss/invariance", "loss/variance", "loss/covariance"):
            assert math.isfinite(float(row[key])), key
    return rows


def test_small_preset_trains_a_few_steps(tmp_path: Path) -> None:
    cfg = twinfold.load_config(
        {
            "preset": "vicreg-small",
            **TINY,
            "method": tiny_method(),
            "run": {"output_dir": str(tmp_path), "name": "small"},
            "evaluation": {"compare_random_init": False},
        }
    )
    result = twinfold.train(cfg)
    rows = check_run(result, 3)
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0  # a fraction
    # the logged terms recombine into the logged loss (defaults 25 / 25 / 1)
    last = {k: float(v) for k, v in rows[-1].items() if v}
    recombined = 25 * last["loss/invariance"] + 25 * last["loss/variance"]
    recombined += last["loss/covariance"]
    assert recombined == pytest.approx(last["loss"], rel=1e-5)


def test_vicreg_loss_with_byols_ema_target_and_a_predictor(tmp_path: Path) -> None:
    pytest.importorskip("twinfold_byol")
    cfg = twinfold.load_config(
        {
            "preset": "vicreg-small",
            **TINY,
            "method": tiny_method(
                predictor={"name": "mlp", "hidden_dims": [32], "out_dim": 16},
                target={"name": "ema", "tau_base": 0.99},
            ),
            "run": {"output_dir": str(tmp_path), "name": "mix"},
            "evaluation": {"at_end": False},
        }
    )
    assert cfg.method.loss.name == "vicreg"
    assert (cfg.method.target.name, cfg.method.target.tau_base) == ("ema", 0.99)
    assert cfg.method.predictor is not None and cfg.method.predictor.name == "mlp"
    result = twinfold.train(cfg)
    rows = check_run(result, 3)
    assert all(math.isfinite(float(r["target/tau"])) for r in rows)
