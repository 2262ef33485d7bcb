"""Component configs refuse nonsense at validation time: every bad value is reported with
its dotted path in one ConfigError (exit status 2 on the command line), and every preset
still validates."""

from __future__ import annotations

import subprocess
import sys
from typing import Literal

import pytest
from pydantic import Field, ValidationError

import twinfold
from twinfold.builtins.heads import MLPHeadConfig
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig
from twinfold.cli import main


def problems(preset: str, *overrides: str) -> dict[str, str]:
    """``{dotted.path: message}`` of the ConfigError that ``overrides`` must raise."""
    with pytest.raises(twinfold.ConfigError) as info:
        twinfold.load_config({"preset": preset}, overrides=list(overrides))
    found = dict(info.value.problems)
    assert len(found) == len(info.value.problems), info.value.problems
    return found


@pytest.mark.parametrize(
    ("preset", "override", "path", "words"),
    [
        # builtins (encoders, heads, views)
        ("byol-small", "method.encoder.widths=[0]", "method.encoder.widths[0]", ">= 1"),
        (
            "byol-small",
            "method.projector.hidden_dims=[-3]",
            "method.projector.hidden_dims[0]",
            ">= 1",
        ),
        ("byol-small", "method.projector.out_dim=0", "method.projector.out_dim", ">= 1"),
        ("byol-small", "method.views.views=[]", "method.views.views", "pairwise"),
        ("byol-small", "method.views.views=[{}]", "method.views.views", "at least 2 views"),
        ("byol-small", "method.views.std=[0,0,0]", "method.views.std", "> 0"),
        ("byol-small", "method.views.std=[0.5,-1,0.5]", "method.views.std", "> 0"),
        ("byol-small", "method.views.image_size=0", "method.views.image_size", ">= 1"),
        (
            "byol-small",
            "method.views.views=[{crop_scale: [0.5, 0.2]}, {}]",
            "method.views.views[0].crop_scale",
            "0 < min <= max <= 1",
        ),
        (
            "byol-small",
            "method.views.views=[{}, {crop_scale: [0.2, 1.5]}]",
            "method.views.views[1].crop_scale",
            "0 < min <= max <= 1",
        ),
        (
            "byol-small",
            "method.views.views=[{crop_scale: [0, 1]}, {}]",
            "method.views.views[0].crop_scale",
            "0 < min <= max <= 1",
        ),
        (
            "byol-small",
            "method.views.views=[{crop_ratio: [0, 1]}, {}]",
            "method.views.views[0].crop_ratio",
            "0 < min <= max",
        ),
        (
            "byol-small",
            "method.views.views=[{crop_ratio: [2, 1]}, {}]",
            "method.views.views[0].crop_ratio",
            "0 < min <= max",
        ),
        (
            "byol-small",
            "method.views.views=[{}, {blur_sigma: [0, 1]}]",
            "method.views.views[1].blur_sigma",
            "0 < min <= max",
        ),
        (
            "byol-small",
            "method.views.views=[{}, {blur_sigma: [2, 1]}]",
            "method.views.views[1].blur_sigma",
            "0 < min <= max",
        ),
        # byol plugin: both heads and its view pair
        (
            "byol-small",
            "method.predictor.hidden_dims=[0]",
            "method.predictor.hidden_dims[0]",
            ">= 1",
        ),
        ("byol-small", "method.predictor.out_dim=0", "method.predictor.out_dim", ">= 1"),
        ("byol-small", "method.target.tau_base=1.5", "method.target.tau_base", "1"),
        # simsiam plugin
        ("simsiam-small", "method.projector.out_dim=0", "method.projector.out_dim", ">= 1"),
        (
            "simsiam-small",
            "method.projector.hidden_dims=[512, 0]",
            "method.projector.hidden_dims[1]",
            ">= 1",
        ),
        ("simsiam-small", "method.predictor.out_dim=-1", "method.predictor.out_dim", ">= 1"),
        (
            "simsiam-small",
            "method.predictor.hidden_dims=[0]",
            "method.predictor.hidden_dims[0]",
            ">= 1",
        ),
        ("simsiam-small", "method.views.views=[{}]", "method.views.views", "pairwise"),
        # barlow twins plugin
        ("barlow-twins-small", "method.projector.out_dim=0", "method.projector.out_dim", ">= 1"),
        (
            "barlow-twins-small",
            "method.projector.hidden_dims=[-1]",
            "method.projector.hidden_dims[0]",
            ">= 1",
        ),
        ("barlow-twins-small", "method.loss.lambda_=-0.1", "method.loss.lambda_", ">= 0"),
        ("barlow-twins-small", "method.views.std=[0,0,0]", "method.views.std", "> 0"),
        # vicreg plugin
        ("vicreg-small", "method.projector.out_dim=0", "method.projector.out_dim", ">= 1"),
        (
            "vicreg-small",
            "method.projector.hidden_dims=[0, 512]",
            "method.projector.hidden_dims[0]",
            ">= 1",
        ),
        ("vicreg-small", "method.loss.eps=0", "method.loss.eps", "> 0"),
        ("vicreg-small", "method.views.views=[]", "method.views.views", "pairwise"),
        # the example plugin (directpred)
        ("directpred-small", "method.predictor.rho=1", "method.predictor.rho", "< 1"),
        ("directpred-small", "method.predictor.freq=0", "method.predictor.freq", ">= 1"),
    ],
)
def test_a_bad_value_is_refused_with_its_dotted_path(
    preset: str, override: str, path: str, words: str
) -> None:
    found = problems(preset, override)
    assert list(found) == [path]
    assert words in found[path].replace("greater than or equal to", ">=").replace(
        "greater than", ">"
    ).replace("less than", "<")


def test_two_bad_widths_are_both_reported() -> None:
    found = problems("byol-small", "method.encoder.widths=[0,-5]")
    assert set(found) == {"method.encoder.widths[0]", "method.encoder.widths[1]"}


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        "byol-small",
        "method.encoder.widths=[8, 0]",
        "method.projector.hidden_dims=[-3]",
        "method.predictor.out_dim=0",
        "method.views.std=[0,0,0]",
        "method.views.views=[{crop_scale: [0.9, 0.1]}, {blur_sigma: [0, 2]}]",
        "method.views.image_size=0",
        "method.target.tau_base=2",
    )
    assert set(found) == {
        "method.encoder.widths[1]",
        "method.projector.hidden_dims[0]",
        "method.predictor.out_dim",
        "method.views.std",
        "method.views.image_size",
        "method.views.views[0].crop_scale",
        "method.views.views[1].blur_sigma",
        "method.target.tau_base",
    }


def test_the_views_message_says_why_two_are_needed() -> None:
    message = problems("byol-small", "method.views.views=[{}]")["method.views.views"]
    assert "at least 2 views" in message and "pairwise" in message and "got 1" in message


def test_the_cli_exits_2_on_a_bad_bound(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["config", "show", "--preset", "byol-small", "--set", "method.views.std=[0,0,0]"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "method.views.std" in err and "Traceback" not in err


def test_the_cli_subprocess_exits_2_without_a_traceback() -> None:
    cmd = [
        sys.executable,
        "-m",
        "twinfold.cli",
        "config",
        "show",
        "--preset",
        "byol-small",
        "--set",
        "method.encoder.widths=[0,-5]",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "method.encoder.widths[0]" in done.stderr
    assert "method.encoder.widths[1]" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("preset", twinfold.available("preset"))
def test_every_preset_still_validates(preset: str) -> None:
    # the paper presets read an image folder; its existence is checked at run time
    cfg = twinfold.load_config({"preset": preset}, overrides=["data.root=/unused"])
    assert cfg.method.views.name.endswith("views")


def test_legitimate_edges_are_accepted() -> None:
    cfg = twinfold.load_config(
        {"preset": "byol-small"},
        overrides=[
            "method.encoder.widths=[1]",
            "method.projector.hidden_dims=[]",
            "method.projector.out_dim=1",
            "method.views.views=[{crop_scale: [1, 1], crop_ratio: [1, 1], blur_sigma: [1, 1]},"
            " {}, {}]",
            "method.views.std=[1e-3, 1, 100]",
            "method.views.image_size=1",
        ],
    )
    assert cfg.method.encoder.widths == [1]
    assert len(cfg.method.views.views) == 3


def test_the_config_classes_refuse_nonsense_when_built_in_python() -> None:
    with pytest.raises(ValidationError, match="crop_scale"):
        ViewConfig(crop_scale=(0.9, 0.2))
    with pytest.raises(ValidationError, match="at least 2 views"):
        SimCLRViewsConfig(views=[ViewConfig()])
    with pytest.raises(ValidationError, match="std"):
        SimCLRViewsConfig(std=(0.5, 0.0, 0.5))


def test_a_head_subclass_without_the_bounded_type_keeps_the_bounds() -> None:
    class LooseHeadConfig(MLPHeadConfig):
        name: Literal["loose-head"] = "loose-head"
        hidden_dims: list[int] = Field(default_factory=lambda: [8])
        out_dim: int = 4

    assert LooseHeadConfig().out_dim == 4
    with pytest.raises(ValidationError, match=">= 1"):
        LooseHeadConfig(hidden_dims=[8, 0])
    with pytest.raises(ValidationError, match=">= 1"):
        LooseHeadConfig(out_dim=0)


@pytest.mark.parametrize(
    ("override", "path", "words"),
    [
        ("trainer.devices=0", "trainer.devices", ">= 1"),
        ("trainer.devices=-3", "trainer.devices", ">= 1"),
        ("optimizer.lr=.inf", "optimizer.lr", "finite"),
        ("optimizer.weight_decay=.nan", "optimizer.weight_decay", "finite"),
        ("method.target.tau_base=.nan", "method.target.tau_base", "finite"),
        ("method.projector.in_dim=0", "method.projector.in_dim", "greater than or equal to 1"),
    ],
)
def test_run_settings_and_non_finite_numbers_are_refused(
    override: str, path: str, words: str
) -> None:
    found = problems("byol-small", override)
    assert path in found and words in found[path], found


def test_every_device_count_fabric_accepts_still_validates() -> None:
    for devices in ("1", "2", "-1", "auto", "'0,1'"):
        cfg = twinfold.load_config({"preset": "byol-small"}, [f"trainer.devices={devices}"])
        assert cfg.trainer.devices not in (0, None)


def test_yaml_on_and_off_switch_tensorboard() -> None:
    for value, expected in (("off", "off"), ("on", "on"), ("auto", "auto")):
        cfg = twinfold.load_config({"preset": "byol-small"}, [f"run.tensorboard={value}"])
        assert cfg.run.tensorboard == expected


def test_trackers_take_a_list_or_a_comma_list_and_default_to_none() -> None:
    assert twinfold.load_config({"preset": "byol-small"}).run.trackers == []
    for value in ("mlflow,wandb", "[mlflow, wandb]", "' mlflow , wandb '"):
        cfg = twinfold.load_config({"preset": "byol-small"}, [f"run.trackers={value}"])
        assert cfg.run.trackers == ["mlflow", "wandb"]
    cfg = twinfold.load_config({"preset": "byol-small"}, ["run.mlflow.experiment=ssl"])
    assert (cfg.run.mlflow.experiment, cfg.run.wandb.mode) == ("ssl", "auto")


@pytest.mark.parametrize(
    ("override", "path", "words"),
    [
        ("run.trackers=[neptune]", "run.trackers[0]", "'mlflow' or 'wandb'"),
        ("run.trackers=[tensorboard]", "run.trackers", "run.tensorboard (auto, on or off)"),
        ("run.trackers=csv", "run.trackers", "metrics.csv is always written"),
        ("run.trackers=[mlflow, mlflow]", "run.trackers", "names a tracker twice"),
        ("run.mlflow.experimnt=x", "run.mlflow.experimnt", "experiment"),
        ("run.wandb.mode=dryrun", "run.wandb.mode", "'auto', 'online' or 'offline'"),
    ],
)
def test_tracker_settings_refuse_nonsense(override: str, path: str, words: str) -> None:
    found = problems("byol-small", override)
    assert path in found and words in found[path], found
