"""The presets and registrations against the facts in docs/methods.md (Zbontar et al.
2021: 8192-8192-8192 projector, lambda 0.0051, LARS 0.2 / 0.0048 x B/256, weight decay
1.5e-6, batch 2048, 1000 epochs, 10 warm-up epochs, cosine to 0.001x)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import twinfold
from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.optim import lr_scale, param_groups
from twinfold.schedule import LRSchedule
from twinfold_barlow_twins import BarlowTwinsProjectorConfig


def test_registered_names_and_provider() -> None:
    reg = twinfold.default_registry()
    assert "barlow-twins" in reg.available("loss")
    assert "barlow-twins-projector" in reg.available("head")
    assert "barlow-twins-views" in reg.available("augmentation")
    assert {"barlow-twins", "barlow-twins-small"} <= set(reg.available("preset"))


def test_paper_preset_matches_the_recipe(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "barlow-twins", "data": {"root": str(tmp_path)}})
    m = cfg.method
    assert (m.encoder.name, m.encoder.arch) == ("resnet", "resnet50")
    assert m.encoder.zero_init_residual is True  # authors' code
    assert m.projector.name == "barlow-twins-projector"
    assert m.projector.hidden_dims == [8192, 8192] and m.projector.out_dim == 8192
    assert not m.projector.hidden_bias and not m.projector.output_bias
    assert (m.projector.hidden_norm, m.projector.output_norm) == ("batch", "none")
    assert m.predictor is None and m.target.name == "none"
    assert (m.loss.name, m.loss.lambda_, m.loss.normalize) == ("barlow-twins", 0.0051, True)
    assert m.views.name == "barlow-twins-views" and m.views.views == asymmetric_view_pair()
    assert cfg.data.dataset == "folder" and cfg.data.image_size == 224
    assert cfg.data.global_batch_size == 2048
    o = cfg.optimizer
    assert (o.name, o.lr, o.bias_and_norm_lr) == ("lars", 0.2, 0.0048)
    assert (o.weight_decay, o.momentum, o.trust_coefficient) == (1.5e-6, 0.9, 1e-3)
    assert o.exclude_bias_and_norm and o.fixed_lr == []
    s = cfg.schedule
    assert (s.warmup_epochs, s.final_lr_ratio) == (10, 0.001)
    assert (s.lr_scaling, s.reference_batch_size) == ("linear", 256)
    assert cfg.trainer.epochs == 1000 and cfg.trainer.sync_batchnorm


def test_paper_preset_learning_rates_and_schedule(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "barlow-twins", "data": {"root": str(tmp_path)}})
    scale = lr_scale(cfg.schedule, 2048)
    assert scale == 8
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = {g["name"]: g for g in param_groups(net, cfg.optimizer, scale)}
    w, bn = groups["scheduled/weights"], groups["scheduled/bias_norm"]
    assert w["lr"] == pytest.approx(0.2 * 2048 / 256)
    assert bn["lr"] == pytest.approx(0.0048 * 2048 / 256)
    assert (w["weight_decay"], w["lars_exclude"]) == (1.5e-6, False)
    assert (bn["weight_decay"], bn["lars_exclude"]) == (0.0, True)
    steps_per_epoch = 1_281_167 // 2048
    sched = LRSchedule.from_config(cfg.schedule, steps_per_epoch, cfg.trainer.epochs, None)
    assert sched.warmup_steps == 10 * steps_per_epoch
    assert sched.factor(sched.warmup_steps - 1) == pytest.approx(1.0)
    assert sched.factor(sched.total_steps - 1) == pytest.approx(0.001)


def test_paper_preset_deviations_are_listed() -> None:
    preset = twinfold.default_registry().preset("barlow-twins")
    text = " ".join(preset.deviations).lower()
    assert "image folder" in text and "knn" in text and "0.0051" in text
    assert preset.paper is not None and "2103.03230" in preset.paper


def test_projector_is_8192_wide_without_biases() -> None:
    reg = twinfold.default_registry()
    with torch.device("meta"):  # no memory for the 150M parameters
        head = reg.build(BarlowTwinsProjectorConfig(in_dim=2048))
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2048, 8192),
        (8192, 8192),
        (8192, 8192),
    ]
    assert all(m.bias is None for m in linears)
    assert head.out_dim == 8192


def test_small_preset_is_cpu_sized() -> None:
    cfg = twinfold.load_config({"preset": "barlow-twins-small"})
    m = cfg.method
    assert m.encoder.name == "small-cnn" and cfg.trainer.accelerator == "cpu"
    assert (cfg.data.image_size, cfg.trainer.epochs) == (32, 20)  # 2 CPU minutes
    assert cfg.data.dataset == "digits"
    assert m.projector.name == "barlow-twins-projector" and m.projector.out_dim <= 512
    assert max(m.projector.hidden_dims) <= 512
    assert m.loss.name == "barlow-twins" and m.target.name == "none" and m.predictor is None
    for view in m.views.views:
        assert view.flip_p == 0 and view.hue == 0 and view.saturation == 0
    preset = twinfold.default_registry().preset("barlow-twins-small")
    assert any("not the paper" in d.lower() for d in preset.deviations)
    # lambda scaled to the 512-d projector (docs/results.md), and the deviation says so
    assert m.loss.lambda_ == 0.08
    assert any("lambda = 0.08" in d for d in preset.deviations)


@pytest.mark.parametrize("name", ["barlow-twins", "barlow-twins-small"])
def test_presets_round_trip_through_yaml(name: str, tmp_path: Path) -> None:
    from twinfold.config.loading import dump_config

    cfg = twinfold.load_config({"preset": name, "data": {"root": str(tmp_path)}})
    path = tmp_path / "run.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert twinfold.load_config(str(path)) == cfg


def test_typos_in_the_loss_config_name_their_location() -> None:
    with pytest.raises(twinfold.ConfigError, match=r"method\.loss\.lambda"):
        twinfold.load_config({"preset": "barlow-twins-small"}, ["method.loss.lambda=0.1"])
