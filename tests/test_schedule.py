"""The learning-rate schedule: linear warm-up then cosine decay (Loshchilov & Hutter 2017),
checked against the formula at key steps, plus fixed-lr groups and edge cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from twinfold.config import OptimizerConfig, ScheduleConfig
from twinfold.optim import build_optimizer
from twinfold.schedule import LRSchedule, WeightDecaySchedule


def cosine(final: float, t: float) -> float:
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


@pytest.fixture
def sched() -> LRSchedule:
    # 12 epochs x 10 steps, 2 warm-up epochs: 20 warm-up steps, a 100-step cosine.
    cfg = ScheduleConfig(warmup_epochs=2, final_lr_ratio=0.001)
    return LRSchedule.from_config(cfg, steps_per_epoch=10, epochs=12, max_steps=None)


def test_from_config(sched: LRSchedule) -> None:
    assert sched == LRSchedule(total_steps=120, warmup_steps=20, final_lr_ratio=0.001)
    capped = LRSchedule.from_config(ScheduleConfig(warmup_epochs=10), 5, 100, max_steps=7)
    assert (capped.total_steps, capped.warmup_steps) == (7, 7)
    frac = LRSchedule.from_config(ScheduleConfig(warmup_epochs=0.3), 7, 4, max_steps=100)
    assert (frac.total_steps, frac.warmup_steps) == (28, 2)  # round(2.1)


def test_warmup(sched: LRSchedule) -> None:
    assert sched.factor(0) == pytest.approx(1 / 20)
    assert sched.factor(9) == pytest.approx(10 / 20)
    assert sched.factor(19) == pytest.approx(1.0)  # end of warm-up: the peak
    warm = [sched.factor(k) for k in range(20)]
    assert all(a < b for a, b in itertools.pairwise(warm))


def test_cosine(sched: LRSchedule) -> None:
    assert sched.factor(20) == pytest.approx(1.0)  # t = 0
    assert sched.factor(70) == pytest.approx(0.001 + 0.999 * 0.5)  # t = 1/2
    assert sched.factor(45) == pytest.approx(cosine(0.001, 0.25))
    assert sched.factor(45) == pytest.approx(0.001 + 0.999 * (2 + 2**0.5) / 4)
    last = 0.001 + 0.999 * math.sin(math.pi / 200) ** 2  # t = 99/100
    assert sched.factor(119) == pytest.approx(last)
    assert sched.factor(119) == pytest.approx(0.001, abs=3e-4)
    assert sched.factor(120) == pytest.approx(0.001)  # t = 1, and clipped beyond
    assert sched.factor(500) == pytest.approx(0.001)
    after = [sched.factor(k) for k in range(20, 121)]
    assert all(a > b for a, b in itertools.pairwise(after))


def test_no_warmup_and_warmup_only() -> None:
    none = LRSchedule(total_steps=4, warmup_steps=0, final_lr_ratio=0.0)
    assert [none.factor(k) for k in range(5)] == pytest.approx(
        [1.0, cosine(0, 0.25), 0.5, cosine(0, 0.75), 0.0]
    )
    only = LRSchedule(total_steps=3, warmup_steps=3, final_lr_ratio=0.2)
    assert [only.factor(k) for k in range(4)] == pytest.approx([1 / 3, 2 / 3, 1.0, 0.2])
    empty = LRSchedule(total_steps=0, warmup_steps=0, final_lr_ratio=0.5)
    assert empty.factor(0) == 0.5


def test_invalid_values() -> None:
    with pytest.raises(ValueError, match="warmup_steps"):
        LRSchedule(total_steps=3, warmup_steps=4, final_lr_ratio=0.0)
    with pytest.raises(ValueError, match="final_lr_ratio"):
        LRSchedule(total_steps=3, warmup_steps=0, final_lr_ratio=1.5)
    with pytest.raises(ValueError, match="step"):
        LRSchedule(total_steps=3, warmup_steps=0, final_lr_ratio=0.0).factor(-1)


def test_apply_scales_scheduled_groups_and_keeps_fixed_ones(sched: LRSchedule) -> None:
    net = nn.ModuleDict({"encoder": nn.Linear(3, 3), "predictor": nn.Sequential(nn.Linear(3, 3))})
    cfg = OptimizerConfig(name="sgd", lr=0.1, bias_and_norm_lr=0.01, fixed_lr=["predictor"])
    opt = build_optimizer(net, cfg, scale=2.0)
    peak = {
        "scheduled/weights": 0.2,
        "scheduled/bias_norm": 0.02,
        "predictor/weights": 0.2,
        "predictor/bias_norm": 0.02,
    }
    for step in (0, 19, 70, 119):
        factor = sched.apply(opt, step)
        assert factor == sched.factor(step)
        for g in opt.param_groups:
            expected = peak[g["name"]] * (1.0 if g["fixed_lr"] else factor)
            assert g["lr"] == pytest.approx(expected), (step, g["name"])
            assert g["base_lr"] == pytest.approx(peak[g["name"]])


def test_apply_to_a_plain_optimizer_uses_its_lr_as_base() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.4)
    s = LRSchedule(total_steps=10, warmup_steps=4, final_lr_ratio=0.0)
    s.apply(opt, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    s.apply(opt, 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4)


def test_weight_decay_cosine_from_start_to_end() -> None:
    # DINO's ViT schedule: 0.04 -> 0.4 over every step, no warm-up
    s = WeightDecaySchedule(start=0.04, end=0.4, total_steps=100)
    assert s.value(0) == pytest.approx(0.04)
    assert s.value(50) == pytest.approx(0.22)
    assert s.value(25) == pytest.approx(0.4 - 0.36 * (2 + 2**0.5) / 4)
    assert s.value(100) == pytest.approx(0.4) and s.value(300) == pytest.approx(0.4)
    ramp = [s.value(k) for k in range(101)]
    assert all(a < b for a, b in itertools.pairwise(ramp))
    with pytest.raises(ValueError, match="step"):
        s.value(-1)
    with pytest.raises(ValueError, match="total_steps"):
        WeightDecaySchedule(start=0.04, end=0.4, total_steps=0)


def test_weight_decay_schedule_sets_only_the_decaying_groups() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    cfg = OptimizerConfig(name="adamw", lr=0.1, weight_decay=0.04, weight_decay_end=0.4)
    opt = build_optimizer(net, cfg, scale=1.0)
    s = WeightDecaySchedule.from_config(cfg, total_steps=10)
    assert s == WeightDecaySchedule(start=0.04, end=0.4, total_steps=10)
    assert s.apply(opt, 5) == pytest.approx(0.22)
    wd = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert wd == {"scheduled/weights": pytest.approx(0.22), "scheduled/bias_norm": 0.0}
    # a plain optimizer's groups decay when their weight decay is above 0
    plain = torch.optim.AdamW([nn.Parameter(torch.ones(2))], lr=0.1, weight_decay=0.5)
    s.apply(plain, 10)
    assert plain.param_groups[0]["weight_decay"] == pytest.approx(0.4)
    assert WeightDecaySchedule.from_config(OptimizerConfig(), total_steps=10) is None


def test_weight_decay_end_is_validated() -> None:
    with pytest.raises(ValueError, match="weight_decay_end"):
        OptimizerConfig(weight_decay_end=-0.1)
