"""What a run gives its user: monitoring in metrics.csv and TensorBoard, per-epoch kNN,
plots, `twinfold eval knn|linear`, `twinfold export`, `twinfold report`, and exported
weights that load into the matching torchvision model."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from runner import run_here
from safetensors.torch import load_file

import twinfold
from twinfold.artifacts import open_trained
from twinfold.errors import CheckpointError
from twinfold.export import load_backbone, read_sidecar, torchvision_backbone

TINY_METHOD = {
    "encoder": {"widths": [8, 16]},
    "projector": {"hidden_dims": [32], "out_dim": 16},
    "predictor": {"hidden_dims": [32], "out_dim": 16},
}


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command line in a fresh subprocess (a real, non-terminal stdout and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "twinfold.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ.copy(),
    )


def _twinfold(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The same command through the CLI's ``main`` in this process: the same exit code,
    stdout and stderr, without a fresh interpreter importing torch for every call."""
    return subprocess.CompletedProcess(["twinfold", *args], *run_here(*args, cwd=cwd))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished byol-small run: 2 epochs of 5 steps, kNN after each epoch."""
    out = tmp_path_factory.mktemp("outputs")
    cfg = twinfold.load_config(
        {
            "preset": "byol-small",
            "data": {"image_size": 16, "batch_size": 256},
            "method": TINY_METHOD,
            "trainer": {"epochs": 2, "log_every": 2, "progress_bar": False},
            "run": {"output_dir": str(out), "name": "run", "tensorboard": "auto"},
            "evaluation": {"every_n_epochs": 1},
        }
    )
    return twinfold.train(cfg).run_dir


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def test_health_lr_and_tau_are_logged(run_dir: Path) -> None:
    rows = [r for r in _rows(run_dir) if r.get("loss")]
    assert len(rows) >= 4
    for r in rows:
        ratio = float(r["health/embedding_std_ratio"])
        assert 0.0 < ratio < 1.5 and 1.0 <= float(r["health/rankme"]) <= 16.0
        assert float(r["health/embedding_std"]) == pytest.approx(ratio / 4, rel=1e-5)
        assert 0.9 <= float(r["target/tau"]) <= 1.0
        # every parameter group's learning rate, by name
        assert float(r["lr/scheduled/weights"]) > 0 and "lr/scheduled/bias_norm" in r


def test_knn_after_each_epoch_and_at_the_end(run_dir: Path) -> None:
    per_epoch = [(r["epoch"], float(r["knn_top1"])) for r in _rows(run_dir) if r.get("knn_top1")]
    assert [e for e, _ in per_epoch] == ["0"]  # epoch 1's kNN is the final one
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.3 < per_epoch[0][1] <= 1 and 0.3 < summary["knn_top1"] <= 1


def test_plots_and_tensorboard_are_written(run_dir: Path) -> None:
    for name in ("plot_loss.png", "plot_health.png", "plot_knn.png", "plot_embedding.png"):
        data = (run_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    pytest.importorskip("tensorboard")
    events = list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100


def test_eval_knn_reproduces_the_runs_own_number(run_dir: Path, tmp_path: Path) -> None:
    # in a fresh process: nothing but the run directory carries the number over
    res = _cli("eval", "knn", str(run_dir), "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert out["top1"] == pytest.approx(summary["knn_top1"], abs=1e-6)
    assert (out["train_samples"], out["test_samples"], out["step"]) == (1437, 360, 10)
    k1 = _twinfold("eval", "knn", str(run_dir), "--k", "1", "--json", cwd=tmp_path)
    k1 = json.loads(k1.stdout)
    assert k1["k"] == 1 and 0.3 < k1["top1"] <= 1


def test_eval_linear(run_dir: Path, tmp_path: Path) -> None:
    res = _twinfold("eval", "linear", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "linear-probe top-1" in res.stdout and "1437 train / 360 held-out" in res.stdout
    acc = float(res.stdout.rsplit(":", 1)[1].strip().rstrip("%"))
    assert 50 < acc <= 100


def test_eval_on_an_image_folder_with_class_sub_folders(run_dir: Path, tmp_path: Path) -> None:
    """Real PNG files on disk: 12 dark and 12 light pictures, one sub-folder per class."""
    from torchvision.io import write_png

    gen = torch.Generator().manual_seed(0)
    for cls, level in (("dark", 40), ("light", 210)):
        (tmp_path / "pics" / cls).mkdir(parents=True)
        for i in range(12):
            noise = torch.randint(-30, 31, (3, 12 + i, 14), generator=gen)
            write_png(
                (level + noise).clamp(0, 255).to(torch.uint8),
                str(tmp_path / "pics" / cls / f"{i}.png"),
            )
    sets = ["--set", "data.dataset=folder", "--set", f"data.root={tmp_path / 'pics'}"]
    res = _twinfold("eval", "knn", str(run_dir), *sets, "--k", "5", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # data.holdout_fraction 0.2 of the 24 images are held out
    assert (out["train_samples"], out["test_samples"], out["k"]) == (19, 5, 5)
    assert out["top1"] == 1.0  # brightness separates the classes for any sane encoder
    res = _twinfold("eval", "linear", str(run_dir), *sets, cwd=tmp_path)
    assert res.returncode == 0 and "19 train / 5 held-out" in res.stdout, res.stderr


def test_eval_rejects_nonsense_with_a_clear_message(run_dir: Path, tmp_path: Path) -> None:
    res = _twinfold("eval", "knn", str(run_dir), "--k", "5000", cwd=tmp_path)
    assert res.returncode == 2 and "5000 must be between 1 and the 1437" in res.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _twinfold("eval", "knn", str(empty), cwd=tmp_path)
    assert res.returncode == 2 and "holds no checkpoint" in res.stderr  # the argument's fault
    assert "Traceback" not in res.stderr
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    res = _twinfold("eval", "linear", str(junk), cwd=tmp_path)
    assert res.returncode == 2 and "RUN_OR_CHECKPOINT" in res.stderr
    assert "cannot read checkpoint" in res.stderr
    res = _twinfold("export", str(tmp_path / "missing"), str(tmp_path / "out"), cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_export_into_a_directory_and_never_over_an_export_without_force(
    run_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "exports"
    target.mkdir()
    res = _twinfold("export", str(run_dir), str(target), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    weights = target / "backbone.safetensors"
    first = weights.read_bytes()
    assert read_sidecar(weights)["step"] == 10
    res = _twinfold("export", str(run_dir), str(target), cwd=tmp_path)  # again: refused
    assert res.returncode == 2 and "--force" in res.stderr and "Traceback" not in res.stderr
    (target / "backbone.safetensors").unlink()  # the sidecar alone also counts
    res = _twinfold("export", str(run_dir), str(weights), cwd=tmp_path)
    assert res.returncode == 2 and "backbone.json" in res.stderr
    res = _twinfold("export", str(run_dir), str(weights), "--force", cwd=tmp_path)
    assert res.returncode == 0 and weights.read_bytes() == first
    (tmp_path / "taken.safetensors").mkdir()  # a directory where the file would go
    res = _twinfold("export", str(run_dir), str(tmp_path / "taken.safetensors"), cwd=tmp_path)
    assert res.returncode == 0 and (tmp_path / "taken.safetensors/backbone.safetensors").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_export_then_eval_the_exported_file(run_dir: Path, tmp_path: Path) -> None:
    res = _twinfold("export", str(run_dir), str(tmp_path / "out" / "digits"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    weights = tmp_path / "out" / "digits.safetensors"
    meta = read_sidecar(weights)
    assert meta["encoder"]["name"] == "small-cnn" and meta["feature_dim"] == 16
    assert meta["step"] == 10 and meta["config"]["preset"] == "byol-small"
    assert {"twinfold", "torch", "twinfold-byol"} <= set(meta["versions"])
    a = _twinfold("eval", "knn", str(weights), "--json", cwd=tmp_path)
    b = _twinfold("eval", "knn", str(run_dir), "--json", cwd=tmp_path)
    assert json.loads(a.stdout)["top1"] == json.loads(b.stdout)["top1"]


def test_report_prints_the_summary_and_lists_plots(run_dir: Path, tmp_path: Path) -> None:
    res = _twinfold("report", str(run_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "knn_top1" in res.stdout and "health/rankme" in res.stdout
    assert str(run_dir / "plot_embedding.png") in res.stdout
    # one numbering: the per-epoch kNN row is epoch 0 in metrics.csv and in the report
    epochs = [r["epoch"] for r in _rows(run_dir) if r.get("knn_top1")]
    assert epochs == ["0"] and re.search(r"kNN % by epoch \(from 0\) +0: \d", res.stdout)
    res = _twinfold("report", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 2 and "not a twinfold run directory" in res.stderr


def test_progress_bar_is_quiet_when_output_is_not_a_terminal(tmp_path: Path) -> None:
    sets = ["trainer.max_steps=2", "trainer.epochs=1", "evaluation.at_end=false"]
    sets += ["method.encoder.widths=[8,16]", "method.projector.hidden_dims=[32]",
             "method.predictor.hidden_dims=[32]", "data.image_size=16", "run.name=quiet"]
    res = _cli("train", *[x for s in sets for x in ("--set", s)], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "it/s" not in res.stderr and "img_s" not in res.stderr and "\r" not in res.stderr


# ---------------------------------------------------------------- torchvision export
@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("resnet")
    cfg = twinfold.load_config(
        {
            "preset": "byol-small",
            "data": {"image_size": 16, "batch_size": 16},
            "method": {
                "encoder": {"name": "resnet", "arch": "resnet18", "small_stem": True},
                "projector": {"hidden_dims": [32], "out_dim": 16},
                "predictor": {"hidden_dims": [32], "out_dim": 16},
            },
            "trainer": {"max_steps": 1, "progress_bar": False},
            "run": {"output_dir": str(out), "name": "r18", "plots": False},
            "evaluation": {"at_end": False, "every_n_epochs": 0},
        }
    )
    return twinfold.train(cfg).run_dir


def test_export_loads_into_torchvision_with_identical_features(resnet_run: Path) -> None:
    weights = resnet_run / "backbone.safetensors"
    meta = read_sidecar(weights)
    assert meta["torchvision"]["builder"] == "torchvision.models.resnet18"
    net = torchvision_backbone(meta)
    net.load_state_dict(load_file(weights), strict=True)  # torchvision's own strict check
    trained = open_trained(resnet_run)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(net.eval()(x), trained.backbone(x))
        assert torch.equal(load_backbone(weights)(x), trained.backbone(x))
    # the weights really are trained (not the random init): features differ from a fresh net
    fresh = torchvision_backbone(meta).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained.backbone(x))


def test_loading_into_the_wrong_architecture_names_the_keys(resnet_run: Path) -> None:
    weights = resnet_run / "backbone.safetensors"
    with pytest.raises(CheckpointError) as err:
        load_backbone(weights, model=torchvision.models.resnet34())
    msg = str(err.value)
    assert "does not fit ResNet: missing keys: fc.bias, fc.weight, layer1.2." in msg
    assert "mismatched shapes: conv1.weight: file (64, 3, 3, 3) vs model (64, 3, 7, 7)" in msg
    small = torchvision_backbone(read_sidecar(weights))
    del small.layer4  # a model lacking a stage: the file's keys are unexpected
    with pytest.raises(CheckpointError, match=r"unexpected keys: layer4\.0\.bn1\.bias"):
        load_backbone(weights, model=small)
