"""The command line: training end to end as a real subprocess (the console entry point,
a fresh interpreter); config errors, config show/schema, the plugin list and help through
the CLI's own ``main`` in this process (``runner.run_here``: same code, same exit codes,
no interpreter start)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from runner import run_here
from safetensors.torch import load_file

from twinfold.fast_path import cpu_bf16_feature

TINY = [
    "data.image_size=16",
    "data.batch_size=64",
    "trainer.epochs=2",
    "trainer.max_steps=6",
    "trainer.log_every=2",
    "method.encoder.widths=[8,16]",
    "method.projector.hidden_dims=[32]",
    "method.projector.out_dim=16",
    "method.predictor.hidden_dims=[32]",
    "method.predictor.out_dim=16",
]


def twinfold(*args: str, cwd: Path, env: dict[str, str] | None = None):
    cmd = [sys.executable, "-m", "twinfold.cli", *args]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}
    )


def sets(items: list[str]) -> list[str]:
    return [x for item in items for x in ("--set", item)]


def test_train_end_to_end_writes_the_run_directory(tmp_path: Path) -> None:
    res = twinfold("train", *sets([*TINY, "run.name=e2e"]), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = tmp_path / "runs" / "e2e"
    assert f"run directory: {run}" in res.stdout
    assert "kNN top-1 on the held-out split (k=20" in res.stdout
    assert "random init" in res.stdout
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["preset"] == "byol-small" and cfg["trainer"]["max_steps"] == 6
    # the first line says which step settings 'auto' chose here, as config.yaml records
    fast = "bf16-mixed, channels_last" if cpu_bf16_feature() else "32-true, contiguous"
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"training on cpu x 1: {fast} (precision auto: "), first
    assert first.endswith("views: batched (data.view_engine=auto)"), first
    assert (cfg["trainer"]["precision"], cfg["data"]["view_engine"]) == (fast.split(",")[0], "auto")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in rows if r.get("loss")]
    assert len(losses) == 3 and all(0 <= x <= 8 for x in losses)
    assert {"lr", "target/tau", "loss/cosine", "images_per_s"} <= set(rows[0])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["step"] == 6 and {"online", "target", "optimizer"} <= set(ckpt)
    weights = load_file(run / "backbone.safetensors")
    assert any(k.endswith("weight") for k in weights)
    summary = json.loads((run / "summary.json").read_text())
    assert 0.5 < summary["knn_top1"] <= 1 and summary["steps"] == 6
    # a second run with the same name is refused: nothing is lost
    code, _, err = run_here("train", *sets([*TINY, "run.name=e2e"]), cwd=tmp_path)
    assert code == 2 and "not empty" in err
    assert (run / "backbone.safetensors").stat().st_size > 0


def test_config_errors_exit_2_with_all_problems_and_write_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "preset: byol-small\noptimizer:\n  lr: -1\nmethod:\n  loss:\n    name: byl\n"
        "trainer:\n  epoch: 3\n"
    )
    code, _, err = run_here("train", str(cfg), cwd=tmp_path)
    assert code == 2
    assert "Traceback" not in err
    for text in (
        "optimizer.lr",
        "method.loss.name",
        "Did you mean 'byol'",
        "trainer.epoch",
        "did you mean 'epochs'",
        "3 problem(s)",
    ):
        assert text in err
    assert not (tmp_path / "runs").exists()


def test_unknown_sub_module_in_lr_rules_is_a_config_error(tmp_path: Path) -> None:
    overrides = ["optimizer.lr_multipliers.predicter=10", "optimizer.fixed_lr=[encodr]"]
    code, _, err = run_here("train", *sets([*TINY, *overrides]), cwd=tmp_path)
    assert code == 2 and "Traceback" not in err
    assert "optimizer.lr_multipliers: entry 'predicter'" in err
    assert "optimizer.fixed_lr: entry 'encodr'" in err
    assert "did you mean 'predictor'" in err and "did you mean 'encoder'" in err
    assert err.count("sub-modules with parameters are: encoder, predictor, projector") == 2
    assert not (tmp_path / "runs").exists()


def test_config_show_and_schema(tmp_path: Path) -> None:
    code, out, err = run_here("config", "show", "--set", "trainer.epochs=3", cwd=tmp_path)
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert shown["trainer"]["epochs"] == 3
    assert shown["method"]["target"] == {"name": "ema", "tau_base": 0.99, "tau_final": 1.0}
    schema = json.loads(run_here("config", "schema", cwd=tmp_path)[1])
    assert "properties" in schema and "method" in schema["properties"]


def test_plugins_listing_json_and_blocking(tmp_path: Path) -> None:
    data = json.loads(run_here("plugins", "--json", cwd=tmp_path)[1])
    names = {(c["kind"], c["name"]): c for c in data["components"]}
    assert names[("loss", "byol")]["distribution"] == "twinfold-byol"
    assert names[("encoder", "resnet")]["plugin"] == "twinfold"
    blocked = json.loads(run_here("--block", "byol", "plugins", "--json", cwd=tmp_path)[1])
    assert ("loss", "byol") not in {(c["kind"], c["name"]) for c in blocked["components"]}
    assert blocked["blocked"] == ["byol (twinfold-byol)"]
    _, off, _ = run_here("plugins", cwd=tmp_path, env={"TWINFOLD_NO_PLUGINS": "1"})
    assert "byol" not in off and "small-cnn" in off
    # without the BYOL plugin the default preset is unknown: a clear error, exit 2
    code, _, err = run_here("--no-plugins", "train", cwd=tmp_path)
    assert code == 2 and "unknown preset 'byol-small'" in err


@pytest.mark.parametrize("flag", ["--help"])
def test_help(flag: str, tmp_path: Path) -> None:
    code, out, _ = run_here(flag, cwd=tmp_path)
    assert code == 0 and "train" in out
