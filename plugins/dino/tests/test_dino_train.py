"""DINO through the generic method and the real loop: the teacher (twinfold-byol's
``ema`` rule, by name) runs on the global views only, every component gets the step's
progress, the centre is checkpointed, and a mid-epoch resume is bit-exact."""

from __future__ import annotations

from pathlib import Path

import torch

import twinfold
from twinfold import StepProgress
from twinfold.builtins.recipes import DIGITS_VIEW_CHANGES
from twinfold.method import build_method

K = 16
GLOBAL = {**DIGITS_VIEW_CHANGES, "crop_scale": [0.4, 1.0]}
LOCAL = {**DIGITS_VIEW_CHANGES, "crop_scale": [0.15, 0.4], "size": 6}


def config(tmp: Path, name: str, steps: int, stop_after: int | None = None, **run: object):
    return twinfold.load_config(
        {
            "preset": "dino-small",
            "data": {"image_size": 12, "batch_size": 64},
            "method": {
                "encoder": {"widths": [8, 16]},
                "projector": {"hidden_dim": 32, "bottleneck_dim": 8, "out_dim": K},
                "loss": {"out_dim": K, "teacher_temp": 0.07, "warmup_teacher_temp_epochs": 2},
                "views": {"views": [GLOBAL, GLOBAL, LOCAL, LOCAL]},
            },
            "trainer": {
                "epochs": 3,
                "max_steps": steps,
                "stop_after": stop_after,
                "progress_bar": False,
            },
            "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 5, **run},
            "evaluation": {"at_end": False},
        }
    )


def test_teacher_runs_on_the_global_views_only(tmp_path: Path) -> None:
    cfg = config(tmp_path, "unused", 1)
    method = build_method(cfg.method)
    assert cfg.method.target.name == "ema"  # twinfold-byol's rule, by name
    seen: list[tuple[int, ...]] = []
    method.target.encoder.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    method.before_step(StepProgress(step=0, epoch=0, steps_per_epoch=4, total_steps=8))
    views = [torch.randn(5, 3, 12, 12)] * 2 + [torch.randn(5, 3, 6, 6)] * 2
    out = method.training_step(views)
    assert seen == [(5, 3, 12, 12)] * 2  # the teacher saw the 2 global views, not the local
    out.loss.backward()
    head = method.online_raw.projector
    assert head.last_layer_frozen  # epoch 0 < freeze_last_layer = 1
    assert head.last_layer.parametrizations.weight.original1.grad.abs().sum() == 0
    assert set(out.metrics) == {"loss/teacher_temp", "loss/teacher_entropy"}
    method.before_step(StepProgress(step=4, epoch=1, steps_per_epoch=4, total_steps=8))
    assert not head.last_layer_frozen and float(method.loss.teacher_temp) == 0.07
    assert torch.equal(method.state_dict()["loss"]["center"], method.loss.center)
    assert method.loss.center.abs().sum() > 0


def test_resume_mid_epoch_is_bit_exact_with_the_centre(tmp_path: Path) -> None:
    # 22 steps per epoch at batch 64: the first epoch freezes the last layer and warms the
    # teacher temperature up; stop at 24 (inside epoch 1), then continue to 27
    full = twinfold.train(config(tmp_path, "full", 27))
    stopped = twinfold.train(config(tmp_path, "split", 27, stop_after=24))
    assert stopped.steps == 24
    resumed = twinfold.train(config(tmp_path, "split", 27, resume=True))
    assert resumed.steps == 27
    a, b = (
        torch.load(r.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        for r in (full, resumed)
    )
    assert set(a["loss"]) == {"center", "teacher_temp"}
    assert float(a["loss"]["teacher_temp"]) == 0.07  # epoch 1 of a 2-epoch warm-up
    for part in ("online", "target", "loss"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert a["loss"]["center"].abs().sum() > 0
