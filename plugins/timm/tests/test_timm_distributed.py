"""A BN-free encoder (a tiny timm ViT, layer norms only) through the real loop: 2 gloo
processes x 16 samples equal 1 process x 32 samples after two steps with gradient
clipping, as tests/test_distributed.py checks for the CNN presets.

The optimizer here is SGD, not the preset's AdamW: Adam divides each gradient by its own
running magnitude, so a parameter whose gradient is almost zero (a final norm's bias)
moves by a full step whatever its sign, and float32 rounding differences between one and
two processes become differences of the size of the learning rate. The gradients
themselves agree (the logged losses and gradient norms below)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import twinfold

pytestmark = pytest.mark.distributed


def _config(tmp: Path, name: str, devices: int, batch: int) -> dict:
    return {
        "preset": "vicreg-vit-small",
        "data": {"image_size": 16, "batch_size": batch, "view_engine": "per-sample"},
        "method": {
            "encoder": {"kwargs": {"depth": 1, "embed_dim": 16, "num_heads": 2}},
            "projector": {"hidden_dims": [32], "out_dim": 16},
        },
        # binds: the norms here are about 1-10
        "optimizer": {"name": "sgd", "lr": 0.05, "clip_grad_norm": 0.5},
        "schedule": {"warmup_epochs": 0},
        "trainer": {
            "precision": "32-true",
            "devices": devices,
            "strategy": "ddp_spawn" if devices > 1 else "auto",
            "max_steps": 2,
            "epochs": 1,
            "progress_bar": False,
            "log_every": 1,
        },
        "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 1,
                "keep_checkpoints": 2},
        "evaluation": {"at_end": False},
    }  # fmt: skip


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r.get("loss")]


def _params(run_dir: Path, file: str = "last.ckpt") -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / file, weights_only=True)["online"]
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_two_processes_equal_one_process_with_a_vit(tmp_path: Path) -> None:
    def run(name: str, devices: int, batch: int) -> Path:
        return twinfold.train(twinfold.load_config(_config(tmp_path, name, devices, batch))).run_dir

    one, two = run("one", 1, 32), run("two", 2, 16)
    rows_one, rows_two = _rows(one), _rows(two)
    assert len(rows_one) == 2
    for key in ("loss", "grad_norm"):
        assert [float(r[key]) for r in rows_two] == pytest.approx(
            [float(r[key]) for r in rows_one], rel=1e-4
        )
    assert all(float(r["grad_norm"]) > 0.5 for r in rows_one)  # the clipping acted
    a, b = _params(one), _params(two)
    assert a.keys() == b.keys() and any("pos_embed" in k for k in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    early = _params(one, "step-00000001.ckpt")
    changed = [k for k in a if not torch.allclose(a[k], early[k], rtol=1e-4, atol=1e-5)]
    assert len(changed) > len(a) // 2
