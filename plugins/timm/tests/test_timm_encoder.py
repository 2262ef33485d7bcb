"""The ``timm`` encoder: any timm model by name with its keyword arguments, pooled
features, close matches for unknown names, checkpointing, and exports that load into
``timm.create_model``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import twinfold
from twinfold.artifacts import open_trained
from twinfold.cli import main
from twinfold.export import read_sidecar
from twinfold_timm import TimmConfig, TimmEncoder

TINY_VIT = {
    "model": "vit_tiny_patch16_224",
    "img_size": 16,
    "patch_size": 4,
    "kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2},
}
X16 = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_twinfold_plugins_lists_the_timm_encoder(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "plugins")
    assert code == 0
    row = next(line for line in out.splitlines() if line.split()[:2] == ["encoder", "timm"])
    assert "twinfold-timm 0.1.0" in row


@pytest.mark.parametrize(
    ("cfg", "width"),
    [(TINY_VIT, 32), ({"model": "convnext_atto", "drop_path_rate": 0.1}, 320)],
)
def test_any_timm_model_gives_pooled_features_of_out_dim(cfg: dict, width: int) -> None:
    enc = TimmEncoder(TimmConfig(**cfg))
    assert enc.out_dim == width
    assert enc.backbone.num_classes == 0
    with torch.no_grad():
        assert enc.eval()(X16 if "img_size" in cfg else torch.randn(2, 3, 32, 32)).shape[1] == width


def test_fields_left_at_their_defaults_are_not_passed() -> None:
    assert TimmConfig(model="resnet18").create_kwargs() == {"num_classes": 0}
    assert TimmConfig(**TINY_VIT, drop_path_rate=0.1).create_kwargs() == {
        "num_classes": 0, "depth": 2, "embed_dim": 32, "num_heads": 2,
        "img_size": 16, "patch_size": 4, "drop_path_rate": 0.1,
    }  # fmt: skip
    with pytest.raises(ValueError, match="'pretrained' is set by twinfold"):
        TimmConfig(kwargs={"pretrained": True})


def test_unknown_timm_model_exits_2_with_close_matches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = _cli(
        capsys, "config", "show", "--preset", "vicreg-small",
        "--set", "method.encoder.name=timm", "--set", "method.encoder.model=vit_tiny_patch16",
    )  # fmt: skip
    assert code == 2
    assert "method.encoder.model" in err
    assert "unknown timm model 'vit_tiny_patch16'. Did you mean " in err
    assert "'vit_tiny_patch16_224'" in err


def test_the_core_never_imports_timm() -> None:
    code = (
        "import sys, twinfold, twinfold.cli\n"
        "reg = twinfold.default_registry()\n"
        "assert 'timm' in reg.available('encoder')\n"
        "twinfold.load_config({'preset': 'vicreg-small'})\n"
        "assert 'timm' not in sys.modules, 'timm imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _grads(on: bool) -> list[torch.Tensor]:
    torch.manual_seed(0)
    enc = TimmEncoder(TimmConfig(**TINY_VIT, grad_checkpointing=on)).train()
    enc(X16).square().mean().backward()
    return [p.grad for p in enc.parameters()]


def test_grad_checkpointing_keeps_the_gradients() -> None:
    torch.manual_seed(0)
    assert TimmEncoder(TimmConfig(**TINY_VIT, grad_checkpointing=True)).backbone.grad_checkpointing
    plain, checkpointed = _grads(False), _grads(True)
    assert len(plain) > 10 and all(torch.equal(a, b) for a, b in zip(plain, checkpointed))


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vit")
    cfg = twinfold.load_config(
        {
            "preset": "vicreg-small",
            "data": {"image_size": 16, "batch_size": 16},
            "method": {
                "encoder": {"name": "timm", **TINY_VIT},
                "projector": {"hidden_dims": [32], "out_dim": 16},
            },
            "trainer": {"max_steps": 1, "progress_bar": False, "precision": "32-true"},
            "run": {"output_dir": str(out), "name": "vit", "plots": False},
            "evaluation": {"at_end": False, "every_n_epochs": 0},
        }
    )
    return twinfold.train(cfg).run_dir


def test_export_loads_into_timm_create_model(vit_run: Path) -> None:
    weights = vit_run / "backbone.safetensors"
    recipe = read_sidecar(weights)["timm"]
    assert recipe["model_name"] == "vit_tiny_patch16_224"
    assert recipe["kwargs"]["num_classes"] == 0
    plain = timm.create_model(recipe["model_name"], **recipe["kwargs"])
    plain.load_state_dict(load_file(weights), strict=True)
    from_file = timm.create_model(recipe["model_name"], checkpoint_path=str(weights),
                                  **recipe["kwargs"])  # fmt: skip
    trained = open_trained(vit_run).backbone
    with torch.no_grad():
        expected = trained.eval()(X16)
        assert torch.equal(plain.eval()(X16), expected)
        assert torch.equal(from_file.eval()(X16), expected)
        fresh = timm.create_model(recipe["model_name"], **recipe["kwargs"]).eval()
        assert not torch.allclose(fresh(X16), expected)  # the weights were trained


def test_a_vit_built_for_another_size_is_refused_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sets = ["method.encoder.name=timm", "method.encoder.model=vit_tiny_patch16_224",
            "method.encoder.img_size=32", "trainer.max_steps=1"]  # byol-small views: 16 px
    code, _, err = _cli(capsys, "train", "--preset", "byol-small",
                        *[x for s in sets for x in ("--set", s)])  # fmt: skip
    assert code == 2
    assert "data.image_size: encoder 'timm' does not take 16x16 views" in err
    assert not (tmp_path / "runs").exists()  # nothing written
