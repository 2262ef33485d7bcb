"""The step benchmark compares like with like: its hand-written plain-PyTorch losses,
written from the papers' formulas, equal twinfold's on the same modules and inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import twinfold
from twinfold.method import build_method

PATH = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "step.py"


def _bench():
    spec = importlib.util.spec_from_file_location("step_benchmark", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kind", ["byol", "simsiam", "barlow-twins", "vicreg"])
def test_plain_step_loss_equals_twinfolds(kind: str) -> None:
    bench = _bench()
    tiny = {"encoder": {"widths": [8, 16]}, "projector": {"hidden_dims": [32], "out_dim": 16}}
    if kind in {"byol", "simsiam"}:
        tiny["predictor"] = {"hidden_dims": [32], "out_dim": 16}
    cfg = twinfold.load_config({"preset": bench.PRESETS[kind], "method": tiny})
    torch.manual_seed(0)
    method = build_method(cfg.method)
    plain = bench.PlainStep(method, kind, lr=0.01)
    views = [torch.randn(16, 3, 16, 16) for _ in range(2)]
    ours = method.training_step(views).loss.detach()
    theirs = plain.loss(views).detach()
    assert abs(float(ours)) > 1e-3
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-6)


def test_the_step_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--methods", "vicreg", "--batch", "8", "--size", "16", "--repeats", "1"]
    _bench().main([*argv, "--encoder", "preset"])
    out = capsys.readouterr().out
    assert "twinfold, bf16 + channels_last" in out and "MFU" in out
