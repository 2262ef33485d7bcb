"""DINO's presets and registrations: installed through the entry point, the teacher is
twinfold-byol's ``ema`` by name, the views are 2 global crops then the local ones, and
the loss's centre has the head's size."""

from __future__ import annotations

from pathlib import Path

import pytest

import twinfold
from twinfold import Registry


def test_registered_through_the_installed_entry_point() -> None:
    registry = Registry(strict=True)
    for kind, name in (("loss", "dino"), ("head", "dino-head"), ("augmentation", "dino-views")):
        record = registry.get(kind, name)
        assert (record.plugin, record.distribution) == ("dino", "twinfold-dino")
    assert registry.get("target", "ema").distribution == "twinfold-byol"


@pytest.mark.parametrize(
    ("preset", "size", "global_size", "local_size", "locals_"),
    [("dino", 224, None, 96, 8), ("dino-small", 16, None, 8, 4)],
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
