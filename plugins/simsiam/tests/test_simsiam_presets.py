"""The presets and registrations against the facts in docs/methods.md (Chen & He
2021): 2048-2048-2048 projector with a non-affine BN output, 2048-512-2048 predictor,
SGD momentum 0.9, weight decay 1e-4 on all parameters, lr 0.05 x B/256 with B 512,
cosine decay to 0, no warm-up, the predictor's lr fixed, 100 epochs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

import twinfold
from twinfold.builtins.recipes import simsiam_view_pair
from twinfold.method import build_method
from twinfold.optim import lr_scale, param_groups
from twinfold.schedule import LRSchedule
from twinfold_simsiam import SimSiamPredictorConfig, SimSiamProjectorConfig


def test_registered_names_and_provider() -> None:
    reg = twinfold.default_registry()
    assert "simsiam" in reg.available("loss")
    assert "stop-gradient" in reg.available("target")
    assert {"simsiam-projector", "simsiam-predictor"} <= set(reg.available("head"))
    assert "simsiam-views" in reg.available("augmentation")
    assert {"simsiam", "simsiam-small"} <= set(reg.available("preset"))


def test_paper_preset_matches_the_recipe(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "simsiam", "data": {"root": str(tmp_path)}})
    m = cfg.method
    assert (m.encoder.name, m.encoder.arch) == ("resnet", "resnet50")
    assert m.projector.name == "simsiam-projector" and m.predictor.name == "simsiam-predictor"
    assert (m.target.name, m.loss.name) == ("stop-gradient", "simsiam")
    assert m.views.name == "simsiam-views" and m.views.views == simsiam_view_pair()
    assert cfg.data.dataset == "folder" and cfg.data.image_size == 224
    assert cfg.data.global_batch_size == 512
    o = cfg.optimizer
    assert (o.name, o.lr, o.weight_decay, o.momentum) == ("sgd", 0.05, 1e-4, 0.9)
    assert o.exclude_bias_and_norm is False and o.bias_and_norm_lr is None
    assert o.fixed_lr == ["predictor"]
    s = cfg.schedule
    assert (s.warmup_epochs, s.final_lr_ratio) == (0, 0.0)
    assert (s.lr_scaling, s.reference_batch_size) == ("linear", 256)
    assert cfg.trainer.epochs == 100 and cfg.trainer.sync_batchnorm


def test_views_are_symmetric_and_match_the_paper() -> None:
    cfg = twinfold.load_config({"preset": "simsiam", "data": {"root": "."}})
    v1, v2 = cfg.method.views.views
    assert v1 == v2
    assert v1.crop_scale == (0.2, 1.0) and v1.crop_ratio == pytest.approx((3 / 4, 4 / 3))
    assert (v1.jitter_p, v1.brightness, v1.contrast, v1.saturation, v1.hue) == (
        0.8,
        0.4,
        0.4,
        0.4,
        0.1,
    )
    assert (v1.grayscale_p, v1.blur_p, v1.blur_sigma, v1.flip_p) == (0.2, 0.5, (0.1, 2.0), 0.5)
    assert v1.solarize_p == 0.0


def test_paper_preset_learning_rates_and_schedule(tmp_path: Path) -> None:
    """Built on the meta device: the real ResNet-50 + heads, no memory."""
    cfg = twinfold.load_config({"preset": "simsiam", "data": {"root": str(tmp_path)}})
    with torch.device("meta"):
        method = build_method(cfg.method)
    scale = lr_scale(cfg.schedule, 512)
    assert scale == 2
    groups = param_groups(method.online_raw, cfg.optimizer, scale)
    fixed = [g for g in groups if g["fixed_lr"]]
    scheduled = [g for g in groups if not g["fixed_lr"]]
    assert len(fixed) == 2 and len(scheduled) == 2  # weights and bias/norm of each
    for g in groups:
        assert g["lr"] == g["base_lr"] == pytest.approx(0.05 * 512 / 256)
        assert g["weight_decay"] == 1e-4  # on ALL parameters, biases and BN included
    predictor = {id(p) for p in method.online_raw.predictor.parameters()}
    assert {id(p) for g in fixed for p in g["params"]} == predictor
    steps = 1_281_167 // 512
    sched = LRSchedule.from_config(cfg.schedule, steps, cfg.trainer.epochs, None)
    assert sched.warmup_steps == 0 and sched.total_steps == 100 * steps
    assert sched.factor(0) == pytest.approx(1.0)
    for epoch in (1, 30, 50, 99):  # lr x (1 + cos(pi e / E)) / 2 at epoch boundaries
        expected = 0.5 * (1 + math.cos(math.pi * epoch / 100))
        assert sched.factor(epoch * steps) == pytest.approx(expected)
    assert sched.factor(sched.total_steps - 1) == pytest.approx(0.0, abs=1e-9)
    opt = torch.optim.SGD([{**g, "params": [torch.zeros(1)]} for g in groups], lr=1.0, momentum=0.9)
    sched.apply(opt, 50 * steps)
    for g in opt.param_groups:
        assert g["lr"] == pytest.approx(0.1 if g["fixed_lr"] else 0.05)


def test_paper_preset_deviations_are_listed() -> None:
    preset = twinfold.default_registry().preset("simsiam")
    text = " ".join(preset.deviations).lower()
    assert "image folder" in text and "knn" in text and "once per epoch" in text
    assert preset.paper is not None and "2011.10566" in preset.paper


def test_projector_and_predictor_shapes() -> None:
    reg = twinfold.default_registry()
    with torch.device("meta"):
        proj = reg.build(SimSiamProjectorConfig(in_dim=2048))
        pred = reg.build(SimSiamPredictorConfig(in_dim=2048))
    assert [type(m) for m in proj.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [
        nn.Linear,
        nn.BatchNorm1d,
    ]
    linears = [m for m in proj.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 2048)] * 3
    assert all(m.bias is None for m in linears)
    norms = [m for m in proj.layers if isinstance(m, nn.BatchNorm1d)]
    assert [m.affine for m in norms] == [True, True, False]
    assert proj.out_dim == 2048
    assert [type(m) for m in pred.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    first, last = pred.layers[0], pred.layers[3]
    assert (first.in_features, first.out_features, first.bias) == (2048, 512, None)
    assert (last.in_features, last.out_features) == (512, 2048) and last.bias is not None
    assert pred.layers[1].affine and pred.out_dim == 2048


def test_small_preset_is_cpu_sized() -> None:
    cfg = twinfold.load_config({"preset": "simsiam-small"})
    m = cfg.method
    assert m.encoder.name == "small-cnn" and cfg.trainer.accelerator == "cpu"
    assert cfg.data.dataset == "digits"
    assert m.projector.name == "simsiam-projector" and m.predictor.name == "simsiam-predictor"
    assert max(m.projector.hidden_dims) <= 512 and m.projector.out_dim <= 512
    assert m.predictor.hidden_dims[0] < m.predictor.out_dim == m.projector.out_dim  # bottleneck
    assert (m.loss.name, m.target.name) == ("simsiam", "stop-gradient")
    # byol-small's fix (docs/results.md): LARS, the predictor 30x faster and scheduled
    o = cfg.optimizer
    assert (o.name, o.lr, cfg.data.batch_size, cfg.trainer.epochs) == ("lars", 1.2, 128, 20)
    assert o.lr_multipliers == {"predictor": 30} and o.fixed_lr == []
    for view in m.views.views:
        assert view.flip_p == 0 and view.hue == 0 and view.saturation == 0
    preset = twinfold.default_registry().preset("simsiam-small")
    assert any("not the paper" in d.lower() for d in preset.deviations)
    assert any("lr_multipliers: {predictor: 30}" in d for d in preset.deviations)
