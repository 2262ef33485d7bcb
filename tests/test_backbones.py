"""The ``torchvision`` encoder (any classification model by name), activation
checkpointing, and exports that load into plain torchvision models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn
from torchvision.models import SwinTransformer, VisionTransformer

import twinfold
from tests.runner import run_here
from twinfold.activation_checkpointing import checkpoint_blocks, checkpointed_blocks
from twinfold.artifacts import open_trained
from twinfold.builtins.encoders import (
    ResNetConfig,
    ResNetEncoder,
    TorchvisionConfig,
    TorchvisionEncoder,
    strip_classifier,
)
from twinfold.export import read_sidecar, torchvision_backbone

X16 = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("model", "removed", "width"),
    [
        ("shufflenet_v2_x0_5", "fc", 1024),  # fc
        ("mobilenet_v3_small", "classifier.3", 1024),  # the last Linear of a Sequential
        ("squeezenet1_1", "classifier.1", 512),  # a 1x1 conv classifier
    ],
)
def test_torchvision_encoder_drops_the_classifier_and_knows_its_width(
    model: str, removed: str, width: int
) -> None:
    enc = TorchvisionEncoder(TorchvisionConfig(model=model))
    assert (enc.removed_layer, enc.out_dim) == (removed, width)
    size = 64 if model.startswith("squeezenet") else 16
    with torch.no_grad():
        assert enc.eval()(torch.randn(2, 3, size, size)).shape == (2, width)
    assert not any(isinstance(m, nn.Dropout) for m in enc.backbone.modules() if m is not enc)


def test_classifiers_named_heads_and_head_are_found() -> None:
    vit = VisionTransformer(16, 4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    swin = SwinTransformer([2, 2], 8, [1, 1], [2, 2], [4, 4])
    assert strip_classifier(vit) == ("heads.head", 16)
    assert strip_classifier(swin) == ("head", 16)
    assert vit(X16).shape == (4, 16) and swin(X16).shape == (4, 16)


def test_image_size_goes_where_the_model_takes_it() -> None:
    assert TorchvisionConfig(model="vit_b_16", image_size=32).builder_kwargs() == {
        "image_size": 32
    }
    assert TorchvisionConfig(model="maxvit_t", image_size=224).builder_kwargs() == {
        "input_size": [224, 224]
    }
    assert TorchvisionConfig(model="googlenet").builder_kwargs() == {
        "aux_logits": False,
        "init_weights": True,
    }
    with pytest.raises(ValueError, match="resnet18 takes any input size; remove image_size"):
        TorchvisionConfig(model="resnet18", image_size=32)
    with pytest.raises(ValueError, match="weights=None"):
        TorchvisionConfig(kwargs={"weights": "DEFAULT"})


def test_unknown_torchvision_model_exits_2_with_close_matches(tmp_path: Path) -> None:
    code, _, err = run_here(
        "config", "show", "--preset", "byol-small",
        "--set", "method.encoder.name=torchvision",
        "--set", "method.encoder.model=convnext_tiyn",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 2
    assert "method.encoder.model" in err
    assert "unknown torchvision model 'convnext_tiyn'. Did you mean 'convnext_tiny'" in err


def _grads_and_stats(encoder: nn.Module) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    encoder.train()
    encoder(X16).square().mean().backward()
    grads = [p.grad.clone() for p in encoder.parameters()]
    return grads, {k: v.clone() for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize(
    ("make", "first_blocks"),
    [
        (lambda on: ResNetEncoder(ResNetConfig(small_stem=True, grad_checkpointing=on)),
         ["backbone.layer1.0", "backbone.layer1.1"]),
        (lambda on: TorchvisionEncoder(
            TorchvisionConfig(model="mobilenet_v3_small", grad_checkpointing=on)),
         ["backbone.features.0.0", "backbone.features.0.1"]),
    ],
)  # fmt: skip
def test_checkpointing_keeps_gradients_and_batch_norm_statistics(make, first_blocks) -> None:
    torch.manual_seed(1)
    plain = make(False)
    torch.manual_seed(1)
    checkpointed = make(True)
    assert checkpointed_blocks(plain) == []
    assert checkpointed_blocks(checkpointed)[:2] == first_blocks
    assert list(plain.state_dict()) == list(checkpointed.state_dict())  # same key names
    grads, stats = _grads_and_stats(plain)
    grads_ckpt, stats_ckpt = _grads_and_stats(checkpointed)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_ckpt))
    # batch norm updated its running statistics once, not again in the recomputation
    assert all(torch.equal(stats[k], stats_ckpt[k]) for k in stats)
    assert any(k.endswith("num_batches_tracked") and v.item() == 1 for k, v in stats_ckpt.items())


def test_checkpointing_survives_deepcopy_and_needs_sequential_stages() -> None:
    enc = ResNetEncoder(ResNetConfig(grad_checkpointing=True))
    twin = copy.deepcopy(enc)  # the EMA target is a deep copy of the online network
    block = twin.backbone.layer1[0]
    assert block.forward.__self__ is block  # bound to the copy, not to the original
    assert checkpointed_blocks(twin) == checkpointed_blocks(enc)
    with pytest.raises(ValueError, match="no nn.Sequential stages"):
        checkpoint_blocks(nn.Linear(2, 2))


@pytest.fixture(scope="module")
def mobilenet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mobilenet")
    cfg = twinfold.load_config(
        {
            "preset": "byol-small",
            "data": {"image_size": 16, "batch_size": 16},
            "method": {
                "encoder": {"name": "torchvision", "model": "mobilenet_v3_small"},
                "projector": {"hidden_dims": [32], "out_dim": 16},
                "predictor": {"hidden_dims": [32], "out_dim": 16},
            },
            "trainer": {"max_steps": 1, "progress_bar": False, "precision": "32-true"},
            "run": {"output_dir": str(out), "name": "mnv3", "plots": False},
            "evaluation": {"at_end": False, "every_n_epochs": 0},
        }
    )
    return twinfold.train(cfg).run_dir


def test_export_loads_into_the_plain_torchvision_model(mobilenet_run: Path) -> None:
    weights = mobilenet_run / "backbone.safetensors"
    state = load_file(weights)
    net = torchvision.models.mobilenet_v3_small()
    result = net.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert sorted(result.missing_keys) == ["classifier.3.bias", "classifier.3.weight"]
    net.classifier[3] = nn.Identity()  # what the sidecar's recipe says to replace
    assert read_sidecar(weights)["torchvision"]["replace"] == {"classifier.3": "Identity"}
    trained = open_trained(mobilenet_run)
    with torch.no_grad():
        expected = trained.backbone.eval()(X16)
        assert torch.equal(net.eval()(X16), expected)
        rebuilt = torchvision_backbone(read_sidecar(weights))
        rebuilt.load_state_dict(state, strict=True)
        assert torch.equal(rebuilt.eval()(X16), expected)
        fresh = torchvision.models.mobilenet_v3_small()
        fresh.classifier[3] = nn.Identity()
        assert not torch.allclose(fresh.eval()(X16), expected)  # the weights were trained
