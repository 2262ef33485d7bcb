"""The BYOL presets: the paper's keeps one learning rate for all parameters (Grill et al.
2020); the small one gives its predictor 30x the rate and says so in its deviations."""

from __future__ import annotations

from pathlib import Path

import pytest

import twinfold
from twinfold.method import build_method
from twinfold.optim import group_name_problems, param_groups


def _rates(cfg: twinfold.RunConfig, scale: float) -> dict[str, float]:
    method = build_method(cfg.method)
    return {g["name"]: g["lr"] for g in param_groups(method.online_raw, cfg.optimizer, scale)}


def test_paper_preset_has_one_rate(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "byol", "data": {"root": str(tmp_path)}})
    o = cfg.optimizer
    assert (o.name, o.lr, o.weight_decay) == ("lars", 0.2, 1.5e-6)
    assert o.lr_multipliers == {} and o.fixed_lr == []
    assert cfg.method.target.tau_base == 0.996 and cfg.trainer.epochs == 1000


def test_small_preset_predictor_learns_30x_faster() -> None:
    cfg = twinfold.load_config({"preset": "byol-small", "method": {"encoder": {"widths": [8, 16]}}})
    assert cfg.optimizer.lr == 0.45 and cfg.optimizer.lr_multipliers == {"predictor": 30}
    assert cfg.optimizer.weight_decay == 1e-4 and cfg.trainer.epochs == 30
    rates = _rates(cfg, scale=1.0)
    assert rates == {
        "scheduled/weights": pytest.approx(0.45),
        "scheduled/bias_norm": pytest.approx(0.45),
        "predictor/weights": pytest.approx(13.5),
        "predictor/bias_norm": pytest.approx(13.5),
    }
    preset = twinfold.default_registry().preset("byol-small")
    text = " ".join(preset.deviations)
    assert "not the paper" in text.lower() and "lr_multipliers: {predictor: 30}" in text
    assert "weight decay 1e-4" in text


def test_small_preset_without_a_predictor_names_the_multiplier() -> None:
    """Dropping the predictor leaves a multiplier that names no sub-module; the run
    refuses it before training (twinfold.plan, exit status 2: tests/test_cli.py)."""
    cfg = twinfold.load_config(
        {"preset": "byol-small", "method": {"encoder": {"widths": [8]}}},
        ["method.predictor=null"],
    )
    online = build_method(cfg.method).online_raw
    [(path, message)] = group_name_problems(online, cfg.optimizer)
    assert path == "optimizer.lr_multipliers" and message.startswith("entry 'predictor'")
