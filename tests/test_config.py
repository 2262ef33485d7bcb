"""Config validation: every error at once with dotted paths, overrides, presets,
round trips, safe YAML and the JSON schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from twinfold import ConfigError, RunConfig, load_config
from twinfold.builtins.encoders import SmallCNNConfig
from twinfold.builtins.heads import MLPHeadConfig
from twinfold.builtins.targets import NoTargetConfig
from twinfold.builtins.views import SimCLRViewsConfig
from twinfold.config import MethodConfig, dump_config
from twinfold.config.schema import json_schema


def test_all_errors_reported_at_once_with_paths() -> None:
    bad = {
        "preset": "byol-small",
        "optimizer": {"lrr": 0.1, "weight_decay": "lots"},
        "method": {"loss": {"name": "byl"}, "target": {"name": "ema", "tau_base": 2}},
        "trainer": {"epochs": 0},
        "run": {"seed": "x"},
    }
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    problems = dict(info.value.problems)
    assert set(problems) == {
        "optimizer.lrr",
        "optimizer.weight_decay",
        "method.loss.name",
        "method.target.tau_base",
        "trainer.epochs",
        "run.seed",
    }
    assert "did you mean 'lr'" in problems["optimizer.lrr"]
    assert "Did you mean 'byol'" in problems["method.loss.name"]
    assert "less than or equal to 1" in problems["method.target.tau_base"]
    assert str(info.value).startswith("6 problem(s)")


def test_unknown_key_inside_a_component_lists_its_fields() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"preset": "byol-small", "method": {"target": {"tau_bsae": 0.9}}})
    ((path, msg),) = info.value.problems
    assert path == "method.target.tau_bsae"
    assert "did you mean 'tau_base'" in msg and "tau_final" in msg


def test_unknown_preset_and_missing_method() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'byol-small'"):
        load_config({"preset": "byol-smal"})
    with pytest.raises(ConfigError, match="give a preset"):
        load_config({})
    with pytest.raises(ConfigError) as info:
        load_config({"method": {"loss": {"name": "byol"}}})
    paths = {p for p, _ in info.value.problems}
    assert {"method.encoder", "method.projector", "method.target", "method.views"} <= paths


def test_overrides_and_preset_merge() -> None:
    cfg = load_config(
        {"preset": "byol-small"},
        [
            "trainer.epochs=3",
            "optimizer.lr=0.1",
            "method.target.tau_base=0.9",
            "method.predictor=null",
        ],
    )
    assert cfg.trainer.epochs == 3 and cfg.optimizer.lr == 0.1
    assert cfg.method.target.tau_base == 0.9
    assert cfg.method.target.tau_final == 1.0  # merged, not replaced
    assert cfg.method.predictor is None
    assert cfg.method.encoder.name == "small-cnn"


def test_changing_a_component_name_replaces_its_params() -> None:
    cfg = load_config({"preset": "byol-small", "method": {"target": {"name": "scaled-copy"}}})
    assert cfg.method.target.name == "scaled-copy"
    assert cfg.method.target.lambda_ == 1.0


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config({"preset": "byol-small"}, ["trainer.epochs"])


def test_round_trip_dump_parse() -> None:
    cfg = load_config({"preset": "byol-small"}, ["trainer.epochs=7"])
    again = load_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert again.model_dump() == cfg.model_dump()


def test_python_classes_without_yaml() -> None:
    method = MethodConfig(
        encoder=SmallCNNConfig(widths=[8, 16]),
        projector=MLPHeadConfig(hidden_dims=[32], out_dim=16),
        target=NoTargetConfig(),
        loss={"name": "byol"},
        views=SimCLRViewsConfig(),
    )
    cfg = RunConfig(method=method)
    assert cfg.method.encoder.widths == [8, 16]
    assert load_config(cfg.model_dump(mode="json")) == cfg
    with pytest.raises(ValueError):
        SmallCNNConfig(widths=[8], bogus=1)


def test_yaml_file_safe_loader_rejects_python_tags(tmp_path: Path) -> None:
    good = tmp_path / "run.yaml"
    good.write_text("preset: byol-small\ntrainer:\n  epochs: 2\n")
    assert load_config(good).trainer.epochs == 2
    evil = tmp_path / "evil.yaml"
    evil.write_text("preset: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="safe"):
        load_config(evil)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(lst)


def test_folder_dataset_needs_root_and_run_name_is_safe() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            {"preset": "byol-small", "data": {"dataset": "folder"}, "run": {"name": "../escape"}}
        )
    paths = {p for p, _ in info.value.problems}
    assert paths == {"data", "run.name"}


def test_json_schema_lists_installed_components() -> None:
    schema = json_schema()
    text = str(schema)
    for name in ("byol", "ema", "scaled-copy", "byol-views", "small-cnn", "resnet", "mlp"):
        assert f"'{name}'" in text
    assert "byol-small" in text
