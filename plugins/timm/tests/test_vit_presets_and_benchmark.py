"""The ViT preset's recipe, and examples/benchmarks/vit_step.py: its plain loop computes
twinfold's loss and parameter groups on the same modules, and the script runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

import twinfold
from twinfold.method import build_method
from twinfold.optim import param_groups
from twinfold.schedule import LRSchedule

BENCHMARKS = Path(__file__).resolve().parents[3] / "examples" / "benchmarks"


def test_the_small_vit_preset_is_vicreg_with_a_vit_recipe() -> None:
    reg = twinfold.default_registry()
    preset = reg.preset("vicreg-vit-small")
    assert preset.paper and len(preset.deviations) == 3
    cfg = twinfold.load_config({"preset": "vicreg-vit-small"})
    enc = cfg.method.encoder
    assert (enc.name, enc.model, enc.img_size, enc.patch_size) == (
        "timm", "vit_tiny_patch16_224", cfg.data.image_size, 4)  # fmt: skip
    o = cfg.optimizer
    assert (o.name, o.weight_decay, o.clip_grad_norm) == ("adamw", 0.05, 3.0)
    assert o.exclude_bias_and_norm and "*pos_embed*" in o.no_decay_names
    assert (cfg.method.loss.name, cfg.method.target.name) == ("vicreg", "none")


@pytest.fixture()
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # the script imports its sibling step.py
    spec = importlib.util.spec_from_file_location("vit_step_under_test", BENCHMARKS / "vit_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vit_step_under_test", module)
    spec.loader.exec_module(module)
    return module


def test_plain_loop_computes_twinfolds_loss_and_groups(bench: ModuleType) -> None:
    cfg = bench.vit_config(depth=1, size=16, patch=8)
    torch.manual_seed(0)
    method = build_method(cfg.method)
    schedule = LRSchedule(total_steps=10, warmup_steps=0, final_lr_ratio=0.0)
    plain = bench.PlainStep(method, cfg, schedule)
    views = [torch.randn(16, 3, 16, 16) for _ in range(2)]
    ours = method.training_step(views).loss.detach()
    torch.testing.assert_close(plain.loss(views).detach(), ours, rtol=1e-5, atol=1e-6)
    # the same parameters without weight decay, by position in the module
    mine = param_groups(method.online_raw, cfg.optimizer, 1.0)
    index = {id(p): i for i, p in enumerate(method.online_raw.parameters())}
    theirs = {id(p): i for i, p in enumerate(plain.trainable.parameters())}
    assert {index[id(p)] for p in mine[1]["params"]} == {
        theirs[id(p)] for p in plain.opt.param_groups[1]["params"]
    }


def test_the_vit_benchmark_runs(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--batch", "4", "--size", "16", "--patch", "8", "--depth", "1", "--repeats", "2"]
    ratios = bench.main(argv)
    assert set(ratios) == {"fp32", "bf16"}
    assert all(len(r) == 2 and all(0 < x < 100 for x in r) for r in ratios.values())
    out = capsys.readouterr().out
    assert "twinfold / plain" in out and "bf16" in out
