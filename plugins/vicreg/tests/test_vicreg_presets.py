"""The presets and registrations against the facts in docs/methods.md and the authors'
recipe (Bardes et al. 2022: 8192-8192-8192 expander, coefficients 25/25/1, LARS
0.2 x B/256, weight decay 1e-6, batch 2048, 1000 epochs, 10 warm-up epochs, cosine to
0.001x, BYOL's asymmetric views)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import twinfold
from twinfold.builtins.recipes import asymmetric_view_pair
from twinfold.optim import lr_scale, param_groups
from twinfold.schedule import LRSchedule
from twinfold_vicreg import VICRegExpanderConfig, VICRegViewsConfig

README = Path(__file__).parents[1] / "README.md"


def test_registered_names_and_provider() -> None:
    reg = twinfold.default_registry()
    assert "vicreg" in reg.available("loss")
    assert "vicreg-expander" in reg.available("head")
    assert "vicreg-views" in reg.available("augmentation")
    assert {"vicreg", "vicreg-small"} <= set(reg.available("preset"))


def test_paper_preset_matches_the_recipe(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "vicreg", "data": {"root": str(tmp_path)}})
    m = cfg.method
    assert (m.encoder.name, m.encoder.arch) == ("resnet", "resnet50")
    assert m.encoder.zero_init_residual is True  # authors' code
    assert m.projector.name == "vicreg-expander"
    assert m.projector.hidden_dims == [8192, 8192] and m.projector.out_dim == 8192
    assert m.projector.hidden_bias and not m.projector.output_bias
    assert (m.projector.hidden_norm, m.projector.output_norm) == ("batch", "none")
    assert m.predictor is None and m.target.name == "none"
    loss = m.loss
    assert loss.name == "vicreg"
    assert (loss.sim_coeff, loss.std_coeff, loss.cov_coeff) == (25.0, 25.0, 1.0)
    assert (loss.eps, loss.gamma, loss.variance_convention) == (1e-4, 1.0, "code")
    assert m.views.name == "vicreg-views" and m.views.views == asymmetric_view_pair()
    assert cfg.data.dataset == "folder" and cfg.data.image_size == 224
    assert cfg.data.global_batch_size == 2048
    o = cfg.optimizer
    assert (o.name, o.lr, o.bias_and_norm_lr) == ("lars", 0.2, None)
    assert (o.weight_decay, o.momentum, o.trust_coefficient) == (1e-6, 0.9, 1e-3)
    assert o.exclude_bias_and_norm and o.fixed_lr == []
    s = cfg.schedule
    assert (s.warmup_epochs, s.final_lr_ratio) == (10, 0.001)
    assert (s.lr_scaling, s.reference_batch_size) == ("linear", 256)
    assert cfg.trainer.epochs == 1000 and cfg.trainer.sync_batchnorm


def test_paper_preset_learning_rates_and_schedule(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "vicreg", "data": {"root": str(tmp_path)}})
    scale = lr_scale(cfg.schedule, 2048)
    assert scale == 8
    net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))
    groups = {g["name"]: g for g in param_groups(net, cfg.optimizer, scale)}
    w, bn = groups["scheduled/weights"], groups["scheduled/bias_norm"]
    assert w["lr"] == pytest.approx(0.2 * 2048 / 256) == bn["lr"]  # one lr for all
    assert (w["weight_decay"], w["lars_exclude"]) == (1e-6, False)
    assert (bn["weight_decay"], bn["lars_exclude"]) == (0.0, True)
    steps_per_epoch = 1_281_167 // 2048
    sched = LRSchedule.from_config(cfg.schedule, steps_per_epoch, cfg.trainer.epochs, None)
    assert sched.total_steps == 1000 * steps_per_epoch
    assert sched.warmup_steps == 10 * steps_per_epoch
    assert sched.factor(sched.warmup_steps - 1) == pytest.approx(1.0)
    assert sched.factor(sched.total_steps - 1) == pytest.approx(0.001)


def test_paper_preset_deviations_are_listed() -> None:
    preset = twinfold.default_registry().preset("vicreg")
    text = " ".join(preset.deviations).lower()
    for fact in ("image folder", "knn", "variance_convention", "mse_loss", "bicubic", "16-mixed"):
        assert fact in text, fact
    assert preset.paper is not None and "2105.04906" in preset.paper


def test_expander_is_8192_wide_with_hidden_biases_only() -> None:
    reg = twinfold.default_registry()
    with torch.device("meta"):  # no memory for the ~150M parameters
        head = reg.build(VICRegExpanderConfig(in_dim=2048))
    kinds = [type(m) for m in head.layers]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    linears = [m for m in head.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (2048, 8192),
        (8192, 8192),
        (8192, 8192),
    ]
    assert [m.bias is not None for m in linears] == [True, True, False]
    assert head.out_dim == 8192


def test_views_are_byols_asymmetric_pair() -> None:
    views = VICRegViewsConfig().views
    assert views == asymmetric_view_pair()
    assert [(v.blur_p, v.solarize_p) for v in views] == [(1.0, 0.0), (0.1, 0.2)]
    for v in views:
        assert v.crop_scale == (0.08, 1.0) and v.flip_p == 0.5 and v.jitter_p == 0.8
        assert (v.brightness, v.contrast, v.saturation, v.hue) == (0.4, 0.4, 0.2, 0.1)
        assert v.grayscale_p == 0.2


def test_small_preset_is_cpu_sized() -> None:
    cfg = twinfold.load_config({"preset": "vicreg-small"})
    m = cfg.method
    assert m.encoder.name == "small-cnn" and cfg.trainer.accelerator == "cpu"
    assert (cfg.data.image_size, cfg.trainer.epochs) == (32, 20)  # 2 CPU minutes
    assert cfg.data.dataset == "digits"
    assert m.projector.name == "vicreg-expander" and m.projector.out_dim <= 512
    assert max(m.projector.hidden_dims) <= 512
    assert m.loss.name == "vicreg" and m.target.name == "none" and m.predictor is None
    for view in m.views.views:
        assert view.flip_p == 0 and view.hue == 0 and view.saturation == 0
    preset = twinfold.default_registry().preset("vicreg-small")
    assert any("not the paper" in d.lower() for d in preset.deviations)


def test_readme_documents_the_variance_convention() -> None:
    text = README.read_text(encoding="utf-8")
    assert "variance_convention" in text and '"paper"' in text and '"code"' in text
