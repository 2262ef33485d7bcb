"""DINO's presets and registrations: installed through the entry point, the teacher is
twinfold-byol's ``ema`` by name, the views are 2 global crops then the local ones, the
loss's centre has the head's size, and the ViT-S/16 preset names twinfold-timm's encoder
without the plugin importing timm."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import twinfold
import twinfold_dino
from twinfold import Registry
from twinfold.builtins.recipes import DIGITS_VIEW_CHANGES


def test_registered_through_the_installed_entry_point() -> None:
    registry = Registry(strict=True)
    for kind, name in (("loss", "dino"), ("head", "dino-head"), ("augmentation", "dino-views")):
        record = registry.get(kind, name)
        assert (record.plugin, record.distribution) == ("dino", "twinfold-dino")
    assert registry.get("target", "ema").distribution == "twinfold-byol"


@pytest.mark.parametrize(
    ("preset", "size", "global_size", "local_size", "locals_"),
    [
        ("dino-vit-small", 224, None, 96, 10),
        ("dino", 224, None, 96, 8),
        ("dino-small", 32, None, 16, 4),
    ],
)
def test_presets(
    tmp_path: Path, preset: str, size: int, global_size, local_size: int, locals_: int
) -> None:
    cfg = twinfold.load_config({"preset": preset, "data": {"root": str(tmp_path)}})
    m = cfg.method
    assert cfg.data.image_size == size
    assert m.target.name == "ema" and m.predictor is None
    assert m.loss.out_dim == m.projector.out_dim and m.loss.global_views == 2
    sizes = [v.size for v in m.views.views]
    assert sizes == [global_size] * 2 + [local_size] * locals_
    assert all(v.crop_scale[1] <= m.views.views[0].crop_scale[0] for v in m.views.views[2:])
    assert twinfold.default_registry().preset(preset).deviations


def test_paper_preset_follows_the_reference_resnet50_recipe(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "dino", "data": {"root": str(tmp_path)}})
    assert cfg.method.encoder.arch == "resnet50"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == ("sgd", 0.03, 1e-4)
    assert cfg.method.projector.out_dim == 65536 and cfg.method.projector.freeze_last_layer == 1
    assert cfg.method.target.tau_base == 0.996 and cfg.trainer.epochs == 100
    assert cfg.method.loss.teacher_temp == 0.04 and cfg.method.loss.student_temp == 0.1
    assert cfg.method.views.views[0].crop_scale == (0.14, 1.0)
    assert cfg.method.views.views[2].crop_scale == (0.05, 0.14)


def test_vit_small_preset_is_the_papers_vit_s16_recipe(tmp_path: Path) -> None:
    cfg = twinfold.load_config({"preset": "dino-vit-small", "data": {"root": str(tmp_path)}})
    enc, head, loss = cfg.method.encoder, cfg.method.projector, cfg.method.loss
    assert (enc.name, enc.model, enc.drop_path_rate) == ("timm", "vit_small_patch16_224", 0.1)
    assert enc.kwargs == {"dynamic_img_size": True}  # the 96 px local crops
    assert (head.hidden_dim, head.bottleneck_dim, head.out_dim) == (2048, 256, 65536)
    assert not head.batch_norm and not head.norm_last_layer and head.freeze_last_layer == 1
    assert (loss.student_temp, loss.warmup_teacher_temp, loss.teacher_temp) == (0.1, 0.04, 0.07)
    assert loss.warmup_teacher_temp_epochs == 30 and cfg.method.target.tau_base == 0.996
    views = cfg.method.views.views
    assert [v.crop_scale for v in views] == [(0.4, 1.0)] * 2 + [(0.05, 0.4)] * 10
    o, s = cfg.optimizer, cfg.schedule
    assert (o.name, o.lr, o.weight_decay, o.weight_decay_end) == ("adamw", 0.0005, 0.04, 0.4)
    assert o.clip_grad_norm == 3.0 and o.no_decay_names == []
    peak = o.lr * cfg.data.global_batch_size / s.reference_batch_size
    assert s.warmup_epochs == 10 and s.final_lr_ratio * peak == pytest.approx(1e-6)
    assert (cfg.data.global_batch_size, cfg.trainer.epochs) == (1024, 300)
    assert cfg.trainer.precision == "bf16-mixed"
    deviations = twinfold.default_registry().preset("dino-vit-small").deviations
    assert any("facebookresearch/dino" in d for d in deviations)


def test_the_plugin_names_the_timm_encoder_without_importing_timm() -> None:
    for module in Path(twinfold_dino.__file__).parent.glob("*.py"):
        text = module.read_text()
        assert "import timm" not in text and "twinfold_timm" not in text, module.name


def test_vit_small_recipe_trains_a_tiny_vit_on_multi_crop(tmp_path: Path) -> None:
    # the preset's recipe (ViT with interpolated position embeddings for the smaller local
    # crops, weight-decay cosine, clipping, no decay exclusions by name) shrunk to 2 steps
    digits = {**DIGITS_VIEW_CHANGES, "crop_scale": [0.4, 1.0]}
    local = {**digits, "crop_scale": [0.15, 0.4], "size": 16}
    vit = {"depth": 1, "embed_dim": 24, "num_heads": 2}
    tiny = {"img_size": 32, "patch_size": 8, "kwargs": vit}
    result = twinfold.train(
        {
            "preset": "dino-vit-small",
            "data": {"dataset": "digits", "image_size": 32, "global_batch_size": None,
                     "batch_size": 32},
            "method": {
                "encoder": tiny,
                "projector": {"hidden_dim": 32, "bottleneck_dim": 8, "out_dim": 16},
                "loss": {"out_dim": 16},
                "views": {"views": [digits, digits, local, local]},
            },
            "optimizer": {"lr": 0.01},
            "trainer": {"epochs": 1, "max_steps": 2, "accelerator": "cpu", "log_every": 1,
                        "progress_bar": False},
            "run": {"output_dir": str(tmp_path), "name": "vit", "plots": False},
            "evaluation": {"at_end": False},
        }
    )  # fmt: skip
    assert result.steps == 2
    with open(result.run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("weight_decay")]
    wd = [float(r["weight_decay"]) for r in rows]
    assert wd == pytest.approx([0.04, 0.22])  # cosine 0.04 -> 0.4 over 2 steps
    assert all(float(r["grad_norm"]) > 0 for r in rows)


def test_small_preset_is_the_measured_digits_recipe() -> None:
    # the recipe of docs/results.md (DINO section): 32 px, BN head, tau_base 0.99
    cfg = twinfold.load_config({"preset": "dino-small"})
    m = cfg.method
    assert (cfg.data.image_size, cfg.data.batch_size, cfg.trainer.epochs) == (32, 128, 30)
    assert m.encoder.widths == [16, 32, 64] and m.projector.batch_norm
    assert (m.projector.hidden_dim, m.projector.bottleneck_dim, m.projector.out_dim) == (
        256, 64, 1024)  # fmt: skip
    assert (m.target.tau_base, m.loss.teacher_temp, m.loss.warmup_teacher_temp_epochs) == (
        0.99, 0.04, 0)  # fmt: skip
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.weight_decay) == (
        "adamw", 1e-3, 0.04)  # fmt: skip
