"""The DINO head: shape, L2-normalised bottleneck, weight norm g fixed to 1, and the
last layer frozen (zero gradients) during the first epochs only."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import twinfold
from twinfold import StepProgress


def _head(**kw: object) -> torch.nn.Module:
    params = dict(in_dim=12, hidden_dim=16, bottleneck_dim=8, out_dim=10, **kw)
    return twinfold.create("head", "dino-head", **params)


def test_forward_is_normalised_bottleneck_times_unit_norm_rows() -> None:
    torch.manual_seed(0)
    head = _head()
    x = torch.randn(4, 12)
    out = head(x)
    assert out.shape == (4, 10) and head.out_dim == 10
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(10))  # g = 1, rows of norm 1
    z = F.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(out, z @ weight.T)
    # GELU MLP: Linear(12, 16) GELU Linear(16, 16) GELU Linear(16, 8)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad
    assert _head(norm_last_layer=False).last_layer.parametrizations.weight.original0.requires_grad


def _last_layer_grad(head: torch.nn.Module, epoch: int) -> torch.Tensor:
    head.zero_grad(set_to_none=True)
    head.before_step(StepProgress(step=epoch * 5, epoch=epoch, steps_per_epoch=5, total_steps=20))
    head(torch.randn(4, 12)).square().sum().backward()
    return head.last_layer.parametrizations.weight.original1.grad


@pytest.mark.parametrize("freeze", [0, 1, 2])
def test_last_layer_gets_zero_gradients_while_frozen(freeze: int) -> None:
    torch.manual_seed(0)
    head = _head(freeze_last_layer=freeze)
    for epoch in range(3):
        grad = _last_layer_grad(head, epoch)
        assert grad is not None  # still in the graph (DDP sees it used)
        assert bool(grad.abs().sum() == 0) == (epoch < freeze), epoch
        assert head.mlp[0].weight.grad.abs().sum() > 0  # the MLP keeps learning


def test_missing_in_dim_is_a_clear_error() -> None:
    with pytest.raises(twinfold.ConfigError, match="needs in_dim"):
        twinfold.create("head", "dino-head")
