"""Mixed precision: the network may run in bf16 under autocast, the loss never does."""

from __future__ import annotations

import pytest
import torch

import twinfold
from twinfold.method import build_method, float32_once


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


class PairCounter(twinfold.Loss):
    """Records the view pairs a symmetric loss gets."""

    pairs = 0

    def terms(self, online, target):
        pairs = self.symmetric_view_pairs(online, target)
        PairCounter.pairs = len(pairs)
        return {"loss": sum(((o - t) ** 2).mean() for o, t in pairs)}


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bf16-autocast"])
def test_a_symmetric_loss_sees_the_same_tensors_on_both_sides(autocast: bool) -> None:
    """Without a target branch the loss gets the same tensors twice, also after the
    float32 conversion under autocast: 4 views give 6 unordered pairs, not 12."""
    cfg = twinfold.load_config(
        {
            "preset": "vicreg-small",
            "method": {
                "encoder": {"widths": [8, 16]},
                "projector": {"hidden_dims": [16], "out_dim": 8},
            },
        }
    )
    method = build_method(cfg.method)
    method.loss = PairCounter()
    views = [torch.randn(4, 3, 16, 16) for _ in range(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        method.training_step(views)
    assert PairCounter.pairs == 6


def test_float32_once_keeps_shared_tensors_shared() -> None:
    a, b = torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(2, 3, dtype=torch.bfloat16)
    online, target = float32_once([a, b], [a, b.clone()])
    assert online[0] is target[0] and online[1] is not target[1]
    assert online[0].dtype == torch.float32 and torch.equal(online[1], b.float())
