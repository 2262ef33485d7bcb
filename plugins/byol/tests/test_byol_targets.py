"""BYOL's target rules: the EMA with the cosine tau schedule, and xi = lambda theta."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import twinfold
from twinfold.method import OnlineNetwork
from twinfold_byol import ema_tau


def small_online() -> OnlineNetwork:
    torch.manual_seed(0)
    encoder = twinfold.create("encoder", "small-cnn", widths=[4, 8])
    projector = twinfold.create("head", "byol-projector", in_dim=8, hidden_dims=[16], out_dim=6)
    predictor = twinfold.create("head", "byol-predictor", in_dim=6, hidden_dims=[16], out_dim=6)
    return OnlineNetwork(encoder, projector, predictor)


@pytest.mark.parametrize("base", [0.99, 0.996])
def test_tau_schedule_formula(base: float) -> None:
    K = 100
    assert ema_tau(0, K, base) == pytest.approx(base)
    assert ema_tau(K, K, base) == pytest.approx(1.0)
    assert ema_tau(K // 2, K, base) == pytest.approx(1 - (1 - base) / 2)
    for k in (7, 33, 81):
        expected = 1 - (1 - base) * (math.cos(math.pi * k / K) + 1) / 2
        assert ema_tau(k, K, base) == pytest.approx(expected, abs=1e-12)
    taus = [ema_tau(k, K, base) for k in range(K + 1)]
    assert all(a <= b for a, b in itertools.pairwise(taus))


def test_target_starts_as_a_copy_and_follows_the_ema() -> None:
    online = small_online()
    rule = twinfold.create("target", "ema", tau_base=0.9)
    target = rule.build(online)
    assert not hasattr(target, "predictor")
    for (n, p), (m, t) in zip(
        online.encoder.named_parameters(), target.encoder.named_parameters(), strict=True
    ):
        assert n == m and torch.equal(p, t) and not t.requires_grad
    before = [t.clone() for t in target.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    theta = [
        p.detach().clone() for p in [*online.encoder.parameters(), *online.projector.parameters()]
    ]
    metrics = rule.update(online, target, step=0, total_steps=10)
    assert metrics["target/tau"] == pytest.approx(0.9)
    for xi0, th, xi in zip(before, theta, target.parameters(), strict=True):
        torch.testing.assert_close(xi, 0.9 * xi0 + 0.1 * th)


def test_target_gets_no_gradient_through_a_training_step() -> None:
    from twinfold.method import SiameseMethod

    online = small_online()
    method = SiameseMethod(
        online, twinfold.create("target", "ema"), twinfold.create("loss", "byol")
    )
    views = [torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)]
    out = method.training_step(views)
    out.loss.backward()
    assert all(p.grad is None for p in method.target.parameters())
    assert all(p.grad is not None for p in online.parameters())
    snapshot = [t.clone() for t in method.target.parameters()]
    torch.optim.SGD(online.parameters(), lr=0.1).step()
    for a, b in zip(snapshot, method.target.parameters(), strict=True):
        assert torch.equal(a, b)  # only the EMA moves the target
    method.after_optimizer_step(0, 10)
    assert any(
        not torch.equal(a, b) for a, b in zip(snapshot, method.target.parameters(), strict=True)
    )


def test_scaled_copy_rule() -> None:
    online = small_online()
    rule = twinfold.create("target", "scaled-copy", lambda_=0.5)
    target = rule.build(online)
    src = [*online.encoder.parameters(), *online.projector.parameters()]
    for p, t in zip(src, target.parameters(), strict=True):
        torch.testing.assert_close(t, 0.5 * p.detach())
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(3.0)
    rule.update(online, target, 5, 10)
    for p, t in zip(src, target.parameters(), strict=True):
        torch.testing.assert_close(t, 0.5 * p.detach())
    assert isinstance(target, nn.Module)
