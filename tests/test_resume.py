"""Checkpoints and resuming: a run stopped at step k and resumed ends where an
uninterrupted run ends; a changed method config is refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import twinfold
from twinfold import CheckpointError, ConfigError


def config(
    tmp: Path, name: str, steps: int, stop_after: int | None = None, **run: object
) -> twinfold.RunConfig:
    return twinfold.load_config({
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 64},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"epochs": 3, "max_steps": steps, "stop_after": stop_after,
                    "progress_bar": False},
        "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 5, **run},
        "evaluation": {"at_end": False},
    })


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """Parameters, target network, optimizer state, learning rates and every rank's
    random generator states of the run's last checkpoint."""
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    out = {**{f"online.{k}": v for k, v in state["online"].items()},
           **{f"target.{k}": v for k, v in state["target"].items()},
           **{f"rng.{k}": v for k, v in state["rng"].items()}}
    for pid, slots in state["optimizer"]["state"].items():
        out.update({f"optimizer.{pid}.{k}": v for k, v in slots.items()})
    for i, group in enumerate(state["optimizer"]["param_groups"]):
        out[f"lr.{i}"] = torch.tensor(group["lr"], dtype=torch.float64)
    return out


def loss_rows(run_dir: Path) -> list[tuple[str, str]]:
    """(step, loss) of every metrics.csv row that logged a loss."""
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [(r["step"], r["loss"]) for r in csv.DictReader(file) if r.get("loss")]


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    full = twinfold.train(config(tmp_path, "full", 30))
    # 22 steps per epoch at batch 64: stop at 25 (inside epoch 2), then continue to 30
    stopped = twinfold.train(config(tmp_path, "split", 30, stop_after=25))
    assert stopped.steps == 25
    # a row logged after the last checkpoint by an attempt that then died: not kept
    metrics = stopped.run_dir / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    with metrics.open("a", newline="") as file:
        csv.DictWriter(file, fieldnames=header).writerow({"step": 27, "loss": 9.0})
    resumed = twinfold.train(config(tmp_path, "split", 30, resume=True))
    assert resumed.steps == 30
    # metrics.csv continues the first attempt's rows, and they equal the unbroken run's
    assert loss_rows(resumed.run_dir) == loss_rows(full.run_dir)
    assert [step for step, _ in loss_rows(resumed.run_dir)] == [str(s) for s in range(5, 31, 5)]
    a, b = weights(full.run_dir), weights(resumed.run_dir)
    assert a.keys() == b.keys() and {"rng.torch", "rng.loader", "lr.0"} <= a.keys()
    assert any(k.startswith("optimizer.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_refuses_another_method_and_a_missing_checkpoint(tmp_path: Path) -> None:
    twinfold.train(config(tmp_path, "run", 2))
    changed = config(tmp_path, "run", 4, resume=True)
    changed = changed.model_copy(update={"method": changed.method.model_copy(
        update={"target": changed.method.target.model_copy(update={"tau_base": 0.5})})})
    with pytest.raises(CheckpointError, match=r"changed: method\.target\.tau_base"):
        twinfold.train(changed)
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        twinfold.train(config(tmp_path, "never-ran", 4, resume=True))
