"""Registry behaviour: builtins through the same door, entry points, conflicts, broken
and blocked plugins, did-you-mean."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

import pytest
import torch

from twinfold import (
    Component,
    ConflictError,
    LossConfig,
    PluginError,
    PluginLoadError,
    Registry,
    UnknownComponentError,
    hookimpl,
)
from twinfold.first_party import PROVIDERS, SOURCE_DIRS
from twinfold.registry import PluginLoadWarning


def test_builtins_arrive_through_the_hooks() -> None:
    reg = Registry(entry_points=False)
    assert reg.pm.has_plugin("twinfold")
    assert set(reg.available("encoder")) >= {"resnet", "small-cnn"}
    assert reg.available("head") == ["mlp"]
    assert reg.available("target") == ["none"]
    rec = reg.get("encoder", "resnet")
    assert (rec.plugin, rec.distribution) == ("twinfold", "twinfold")
    # the builtin plugin's hooks are ordinary pluggy hook implementations
    impls = reg.pm.hook.twinfold_encoders.get_hookimpls()
    assert [i.plugin_name for i in impls] == ["twinfold"]


def test_installed_byol_plugin_is_discovered_by_entry_point() -> None:
    reg = Registry()
    rec = reg.get("loss", "byol")
    assert rec.distribution == "twinfold-byol" and rec.plugin == "byol"
    assert {"ema", "scaled-copy", "none"} <= set(reg.available("target"))
    assert {"byol", "byol-small"} <= set(reg.available("preset"))


def test_first_party_table_matches_the_installed_plugins() -> None:
    reg = Registry()
    listed = {
        (kind, name): dist
        for dist, kinds in PROVIDERS.items()
        for kind, names in kinds.items()
        for name in names
    }
    shipped = {
        (r.kind, r.name): r.distribution for r in reg.records() if r.distribution in PROVIDERS
    }
    assert listed == shipped
    root = Path(__file__).resolve().parents[1]
    assert all((root / folder / "pyproject.toml").is_file() for folder in SOURCE_DIRS.values())


def test_a_missing_first_party_plugin_says_what_to_install() -> None:
    with pytest.raises(UnknownComponentError) as info:
        Registry(entry_points=False).get("encoder", "timm")
    assert "provided by the twinfold-timm plugin, which is not installed" in str(info.value)
    assert "pip install twinfold-timm" in str(info.value)
    assert "pip install -e plugins/timm" in str(info.value)
    with pytest.raises(UnknownComponentError) as info:  # blocked, not missing: no pip advice
        Registry(blocked=["twinfold-timm"]).get("encoder", "timm")
    assert "Blocked plugins: timm (twinfold-timm)" in str(info.value)
    assert "pip install" not in str(info.value)
    with pytest.raises(UnknownComponentError) as info:  # not first-party: no advice
        Registry(entry_points=False).get("encoder", "timmy")
    assert "pip install" not in str(info.value)


def test_third_party_plugin_installed_with_pip(fixture_paths: list[str]) -> None:
    with pytest.warns(PluginLoadWarning):
        reg = Registry(paths=fixture_paths, blocked=["conflict"])
    rec = reg.get("loss", "toy-mse")
    assert (rec.distribution, rec.version) == ("twinfold-test-toy", "0.0.2")
    loss = reg.create("loss", "toy-mse", scale=2.0)
    x = torch.randn(4, 3)
    assert loss([x, x], [x, x]).item() == pytest.approx(0.0, abs=1e-6)
    assert "toy-small" in reg.available("preset")


def test_broken_plugin_is_listed_and_named(fixture_paths: list[str]) -> None:
    with pytest.warns(PluginLoadWarning, match="twinfold-test-broken"):
        reg = Registry(paths=fixture_paths, blocked=["conflict"])
    (broken,) = reg.broken
    assert broken.entry_point == "broken"
    assert broken.distribution == "twinfold-test-broken"
    assert "twinfold_missing_dependency_xyz" in broken.error
    # components of healthy plugins still work; a missing name mentions the broken one
    assert "byol" in reg.available("loss")
    with pytest.raises(UnknownComponentError, match="failed to load.*twinfold-test-broken"):
        reg.get("loss", "whatever")


def test_broken_plugin_strict_mode_raises_with_names(fixture_paths: list[str]) -> None:
    with pytest.raises(PluginLoadError) as info:
        Registry(paths=fixture_paths, blocked=["conflict"], strict=True)
    text = str(info.value)
    assert "'broken = twinfold_test_broken'" in text
    assert "twinfold-test-broken" in text
    assert "ModuleNotFoundError" in text and "twinfold_missing_dependency_xyz" in text


def test_conflict_names_both_distributions(fixture_paths: list[str]) -> None:
    with pytest.raises(ConflictError) as info:
        Registry(paths=fixture_paths, blocked=["broken"])
    text = str(info.value)
    assert "loss 'byol'" in text
    assert "twinfold-byol" in text and "twinfold-test-conflict" in text
    assert "--block" in text


def test_blocked_plugin_is_never_imported(
    fixture_paths: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(sys.modules, "twinfold_test_toy", raising=False)
    reg = Registry(paths=fixture_paths, blocked=["twinfold-test-toy", "broken", "conflict"])
    assert "twinfold_test_toy" not in sys.modules
    assert "toy-mse" not in reg.available("loss")
    assert any("twinfold-test-toy" in s for s in reg.skipped)
    with pytest.raises(UnknownComponentError, match="Blocked plugins"):
        reg.get("loss", "toy-mse")


def test_no_entry_points_keeps_only_builtins() -> None:
    reg = Registry(entry_points=False)
    assert reg.available("loss") == []
    assert reg.available("preset") == []


def test_did_you_mean_and_choices() -> None:
    reg = Registry()
    with pytest.raises(UnknownComponentError) as info:
        reg.get("loss", "byl")
    assert "Did you mean 'byol'?" in str(info.value)
    assert "Installed losss" not in str(info.value)
    assert "byol" in str(info.value).split("Installed loss names:")[1]
    with pytest.raises(UnknownComponentError, match="unknown component kind 'lossy'"):
        reg.available("lossy")


def test_local_plugin_object_and_bad_records() -> None:
    class OkConfig(LossConfig):
        name: Literal["ok-loss"] = "ok-loss"

    class Good:
        @hookimpl
        def twinfold_losses(self):
            yield Component(OkConfig, lambda cfg: "built", "ok")

    reg = Registry(entry_points=False, plugins={"good": Good()})
    assert reg.create("loss", "ok-loss") == "built"

    class Bad:
        @hookimpl
        def twinfold_losses(self):
            yield "not a record"

    with pytest.warns(PluginLoadWarning, match="not a twinfold.Component"):
        reg = Registry(entry_points=False, plugins={"bad": Bad()})
    assert reg.broken[0].entry_point == "bad"


def test_build_rejects_a_config_of_another_class() -> None:
    from twinfold import EncoderConfig

    class Impostor(EncoderConfig):  # same name, but not the registered config class
        name: Literal["small-cnn"] = "small-cnn"

    reg = Registry(entry_points=False)
    with pytest.raises(PluginError, match="config class SmallCNNConfig"):
        reg.build(Impostor())


def test_create_validates_params() -> None:
    from twinfold import ConfigError

    reg = Registry(entry_points=False)
    with pytest.raises(ConfigError) as info:
        reg.create("encoder", "small-cnn", widths="wide", depth=3)
    paths = [p for p, _ in info.value.problems]
    assert "widths" in paths and "depth" in paths
