"""Mixed precision: the network may run in bf16 under autocast, the loss never does."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold.method import build_method


@pytest.mark.parametrize("preset", ["vicreg-small", "barlow-twins-small"])
def test_loss_runs_in_float32_under_bf16_autocast(preset: str) -> None:
    cfg = twinfold.load_config(
        {
            "preset": preset,
            "method": {
                "encoder": {"widths": [8, 16]},
                "projector": {"hidden_dims": [64], "out_dim": 64},
            },
        }
    )
    torch.manual_seed(0)
    method = build_method(cfg.method)
    views = [torch.randn(32, 3, 16, 16) for _ in range(2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        step = method.training_step(views)
        out = method.online(views)  # same weights, same inputs: the same bf16 outputs
    assert out.predictions[0].dtype == torch.bfloat16  # the network did run in bf16
    preds = [p.float() for p in out.predictions]
    exact = method.loss.terms(preds, preds)["loss"]  # outside autocast: float32 throughout
    with torch.autocast("cpu", dtype=torch.bfloat16):
        in_bf16 = method.loss.terms(preds, preds)["loss"]
    assert step.loss.dtype == torch.float32
    assert torch.equal(step.loss.detach(), exact.detach())
    assert not torch.equal(in_bf16.detach(), exact.detach())  # the guard matters
