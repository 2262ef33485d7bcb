"""LARS against a hand-written reference of its formula, parameter groups and the
learning-rate schedule."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from twinfold.config import OptimizerConfig, ScheduleConfig
from twinfold.optim import LARS, build_optimizer, lr_scale, param_groups
from twinfold.schedule import LRSchedule


def reference_lars_step(p, g, m, *, lr, wd, mom, eta, exclude):
    """You et al. 2017, as used by BYOL: one step, written out per tensor."""
    d = g + wd * p
    if not exclude:
        pn, dn = p.norm(), d.norm()
        if pn > 0 and dn > 0:
            d = d * (eta * pn / dn)
    m = mom * m + d
    return p - lr * m, m


def test_lars_matches_the_formula_over_several_steps() -> None:
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    b = nn.Parameter(torch.randn(4, dtype=torch.float64))
    z = nn.Parameter(torch.zeros(3, dtype=torch.float64))  # zero norm: ratio 1
    opt = LARS(
        [
            {"params": [w], "weight_decay": 0.1, "lars_exclude": False},
            {"params": [b, z], "weight_decay": 0.0, "lars_exclude": True},
        ],
        lr=0.5,
        momentum=0.9,
        trust_coefficient=0.02,
    )
    ref = {id(t): (t.detach().clone(), torch.zeros_like(t)) for t in (w, b, z)}
    for step in range(4):
        grads = {id(t): torch.randn_like(t) for t in (w, b, z)}
        for t in (w, b, z):
            t.grad = grads[id(t)].clone()
        opt.step()
        for t, wd, exc in ((w, 0.1, False), (b, 0.0, True), (z, 0.0, True)):
            p, m = ref[id(t)]
            ref[id(t)] = reference_lars_step(
                p, grads[id(t)], m, lr=0.5, wd=wd, mom=0.9, eta=0.02, exclude=exc
            )
            torch.testing.assert_close(t.detach(), ref[id(t)][0], msg=f"step {step}")


def test_lars_state_dict_round_trip() -> None:
    torch.manual_seed(1)
    a = nn.Linear(3, 2)
    opt = LARS(a.parameters(), lr=0.1, weight_decay=1e-4)
    a(torch.randn(5, 3)).sum().backward()
    opt.step()
    b = nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    opt2 = LARS(b.parameters(), lr=0.1, weight_decay=1e-4)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # as if saved to disk
    x = torch.randn(5, 3)
    for net, o in ((a, opt), (b, opt2)):
        o.zero_grad()
        net(x).pow(2).sum().backward()
        o.step()
    torch.testing.assert_close(a.weight, b.weight, rtol=0, atol=0)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
        self.predictor = nn.Linear(8, 2)


def test_param_groups_split_bias_norm_and_fixed_modules() -> None:
    cfg = OptimizerConfig(
        name="lars", lr=0.2, weight_decay=1e-6, bias_and_norm_lr=0.0048, fixed_lr=["predictor"]
    )
    groups = {g["name"]: g for g in param_groups(Net(), cfg, scale=2.0)}
    assert set(groups) == {
        "scheduled/weights",
        "scheduled/bias_norm",
        "fixed/weights",
        "fixed/bias_norm",
    }
    w, bn = groups["scheduled/weights"], groups["scheduled/bias_norm"]
    assert len(w["params"]) == 1 and len(bn["params"]) == 3  # linear bias + BN weight, bias
    assert w["lr"] == pytest.approx(0.4) and bn["lr"] == pytest.approx(0.0096)
    assert w["weight_decay"] == 1e-6 and bn["weight_decay"] == 0.0
    assert bn["lars_exclude"] and not w["lars_exclude"]
    assert groups["fixed/weights"]["fixed_lr"] and not w["fixed_lr"]
    included = param_groups(Net(), OptimizerConfig(exclude_bias_and_norm=False), 1.0)
    assert all(g["weight_decay"] == 1e-6 and not g["lars_exclude"] for g in included)
    with pytest.raises(ValueError, match="'projector' names no sub-module.*encoder, predictor"):
        param_groups(Net(), OptimizerConfig(fixed_lr=["projector"]), 1.0)


@pytest.mark.parametrize(
    "name,cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("lars", LARS)]
)
def test_build_optimizer(name: str, cls: type) -> None:
    opt = build_optimizer(Net(), OptimizerConfig(name=name, lr=0.1), scale=0.5)
    assert isinstance(opt, cls)
    assert all(g["lr"] == pytest.approx(0.05) for g in opt.param_groups)


def test_lr_scale_uses_the_global_batch() -> None:
    assert lr_scale(ScheduleConfig(), 4096) == 16.0
    assert lr_scale(ScheduleConfig(lr_scaling="none"), 4096) == 1.0


def test_schedule_warmup_then_cosine() -> None:
    s = LRSchedule.from_config(
        ScheduleConfig(warmup_epochs=2, final_lr_ratio=0.001),
        steps_per_epoch=10,
        epochs=12,
        max_steps=None,
    )
    assert (s.total_steps, s.warmup_steps) == (120, 20)
    assert s.factor(0) == pytest.approx(1 / 20)
    assert s.factor(19) == pytest.approx(1.0)
    assert s.factor(20) == pytest.approx(1.0)
    assert s.factor(119) == pytest.approx(0.001)
    after = [s.factor(k) for k in range(20, 120)]
    assert all(a >= b for a, b in itertools.pairwise(after))
    t = (70 - 20) / 99
    assert s.factor(70) == pytest.approx(0.001 + 0.999 * 0.5 * (1 + math.cos(math.pi * t)))


def test_schedule_edge_cases_and_fixed_groups() -> None:
    none = LRSchedule(total_steps=5, warmup_steps=0, final_lr_ratio=0.0)
    assert none.factor(0) == 1.0 and none.factor(4) == pytest.approx(0.0)
    only = LRSchedule(total_steps=3, warmup_steps=3, final_lr_ratio=0.0)
    assert [only.factor(k) for k in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    capped = LRSchedule.from_config(ScheduleConfig(warmup_epochs=10), 5, 100, max_steps=7)
    assert (capped.total_steps, capped.warmup_steps) == (7, 7)
    opt = build_optimizer(Net(), OptimizerConfig(name="sgd", lr=1.0, fixed_lr=["predictor"]), 1)
    s = LRSchedule(total_steps=10, warmup_steps=0, final_lr_ratio=0.0)
    s.apply(opt, 9)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs["fixed/weights"] == 1.0 and lrs["scheduled/weights"] == pytest.approx(0.0)
