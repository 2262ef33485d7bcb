"""Every example runs: each is trained for two steps with tiny settings, through the same
entry point a user calls (the script's ``main``, the CLI, ``twinfold.train``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

import twinfold
from twinfold.cli import main as cli_main
from twinfold.config import read_yaml

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
STEPS = 2
QUIET = ["trainer.progress_bar=false", "trainer.log_every=1"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: the per-sample view ops are tiny, and on a shared CPU a
    thread pool makes them much slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_config(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())


def test_byol_composed_in_python(tmp_path: Path) -> None:
    example = load_example("byol_from_python")
    argv = ["--epochs", "1", "--max-steps", str(STEPS), "--batch-size", "32", "--no-eval"]
    argv += ["--output-dir", str(tmp_path)]
    result = example.main(argv)
    assert result.steps == STEPS
    method = run_config(result.run_dir)["method"]
    assert (method["encoder"]["name"], method["target"]["name"], method["loss"]["name"]) == (
        "small-cnn",
        "ema",
        "byol",
    )
    assert (result.run_dir / "checkpoints" / "last.ckpt").is_file()


def test_python_and_yaml_compositions_are_the_same_run() -> None:
    example = load_example("byol_from_python")
    from_yaml = twinfold.load_config(read_yaml(EXAMPLES / "configs" / "byol-composed.yaml"))
    assert from_yaml == example.build_config(epochs=5, output_dir="runs")


def test_preset_with_a_swapped_encoder(tmp_path: Path) -> None:
    example = load_example("preset_swap_encoder")
    tiny = ["data.batch_size=32", f"trainer.max_steps={STEPS}", "evaluation.at_end=false"]
    argv = [
        "--epochs",
        "1",
        *[x for s in [*tiny, *QUIET, f"run.output_dir={tmp_path}"] for x in ("--set", s)],
    ]
    result = example.main(argv)
    assert result.steps == STEPS
    cfg = run_config(result.run_dir)
    assert cfg["method"]["encoder"] == {
        "name": "resnet",
        "arch": "resnet18",
        "small_stem": True,
        "zero_init_residual": False,
        "grad_checkpointing": False,
    }
    # only the encoder differs from the preset
    preset = twinfold.load_config({"preset": "byol-small"}).model_dump(mode="json")
    swapped = example.build_config().model_dump(mode="json")
    differing = {
        f"{section}.{key}"
        for section in preset
        if isinstance(preset[section], dict)
        for key in preset[section]
        if preset[section][key] != swapped[section][key]
    }
    assert differing == {"method.encoder"}
    online = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)["online"]
    assert online["projector.layers.0.weight"].shape[1] == 512  # ResNet-18 features feed it


def test_yaml_config_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [
        "data.batch_size=32",
        "method.encoder.widths=[8,16]",
        "method.projector.hidden_dims=[32]",
        "method.projector.out_dim=16",
        "method.predictor.hidden_dims=[32]",
        "method.predictor.out_dim=16",
        "trainer.epochs=1",
        f"trainer.max_steps={STEPS}",
        "evaluation.compare_random_init=false",
        f"run.output_dir={tmp_path}",
        "run.name=yaml",
        *QUIET,
    ]
    argv = ["train", str(EXAMPLES / "configs" / "byol-digits.yaml")]
    assert cli_main([*argv, *[x for s in sets for x in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert f"steps: {STEPS}" in out and "kNN top-1 on the held-out split" in out
    cfg = run_config(tmp_path / "yaml")
    assert cfg["preset"] == "byol-small" and cfg["method"]["target"]["tau_base"] == 0.98


def test_cross_plugin_mix_from_yaml(tmp_path: Path) -> None:
    data = read_yaml(EXAMPLES / "configs" / "vicreg-with-byol-target.yaml")
    cfg = twinfold.load_config(
        data,
        overrides=[
            "data.batch_size=32",
            "method.encoder.widths=[8,16]",
            "method.projector.hidden_dims=[32,32]",
            "method.projector.out_dim=32",
            "method.predictor.hidden_dims=[32]",
            "method.predictor.out_dim=32",
            "trainer.epochs=1",
            f"trainer.max_steps={STEPS}",
            "evaluation.at_end=false",
            f"run.output_dir={tmp_path}",
            *QUIET,
        ],
    )
    providers = {
        slot: twinfold.default_registry().get(kind, getattr(cfg.method, slot).name)
        for slot, kind in (("loss", "loss"), ("target", "target"), ("predictor", "head"))
    }
    result = twinfold.train(cfg)
    assert result.steps == STEPS
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert "target" in state  # BYOL's EMA copy of encoder + projector, from another plugin
    assert {k: v.distribution for k, v in providers.items()} == {
        "loss": "twinfold-vicreg",
        "target": "twinfold-byol",
        "predictor": "twinfold",
    }
