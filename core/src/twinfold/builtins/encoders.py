"""Builtin backbones: any torchvision classification model by name, torchvision ResNets
with a small-image stem, and a small CNN."""

from __future__ import annotations

import difflib
from functools import cache
from typing import Annotated, Any, Literal

import torchvision
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from twinfold.activation_checkpointing import checkpoint_blocks
from twinfold.components import EncoderConfig

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2")


class ResNetConfig(EncoderConfig):
    """A torchvision ResNet without its classifier (He et al. 2016)."""

    name: Literal["resnet"] = "resnet"
    arch: Literal[
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2"
    ] = "resnet18"
    small_stem: bool = Field(
        False, description="3x3 stride-1 first conv and no max-pool (CIFAR-style, small images)"
    )
    zero_init_residual: bool = False
    grad_checkpointing: bool = Field(
        False, description="recompute each residual block's activations in the backward pass"
    )


class ResNetEncoder(nn.Module):
    """torchvision ResNet trunk; ``backbone`` keeps torchvision's key names."""

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        net = getattr(torchvision.models, cfg.arch)(
            weights=None, zero_init_residual=cfg.zero_init_residual
        )
        if cfg.small_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.out_dim: int = net.fc.in_features
        net.fc = nn.Identity()
        if cfg.grad_checkpointing:
            checkpoint_blocks(net)
        self.backbone = net

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


CLASSIFIER_ATTRIBUTES = ("fc", "classifier", "heads", "head")
"""Where torchvision's classification models keep their classifier, in the order looked
up: ``fc`` (ResNet, RegNet, ShuffleNet, GoogLeNet, Inception), ``classifier`` (ConvNeXt,
EfficientNet, MobileNet, DenseNet, VGG, AlexNet, MNASNet, SqueezeNet, MaxViT), ``heads``
(ViT), ``head`` (Swin)."""

SIZE_ARGUMENTS = {"vit_": "image_size", "maxvit_": "input_size"}
"""Model-name prefix -> the builder argument that fixes the input side (an int for ViT,
``[side, side]`` for MaxViT)."""

BUILDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
"""Builder arguments twinfold sets unless the config does: no auxiliary classifiers (they
change what the network returns in training mode)."""

BuilderArgument = bool | int | float | str | list[int] | list[float]


@cache
def torchvision_models() -> tuple[str, ...]:
    """The names of torchvision's classification models."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def unknown_name_message(kind: str, name: str, known: tuple[str, ...]) -> str:
    """"unknown <kind> model 'name'" with up to five close matches."""
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} model {name!r}.{hint} ({len(known)} models are available.)"


def size_argument(model: str) -> str | None:
    """The builder argument that sets the input side of ``model``, if it has one."""
    return next((arg for prefix, arg in SIZE_ARGUMENTS.items() if model.startswith(prefix)), None)


class TorchvisionConfig(EncoderConfig):
    """Any torchvision classification model, built with ``weights=None`` (nothing is
    downloaded), without its classifier; ``out_dim`` is the width of the features that
    went into it."""

    name: Literal["torchvision"] = "torchvision"
    model: str = Field(
        "resnet18", description="a name of torchvision.models.list_models(), e.g. convnext_tiny"
    )
    image_size: int | None = Field(
        None,
        ge=8,
        description="input side for models built for one size (vit_*: image_size, maxvit_t: "
        "input_size); default: the model's own (224)",
    )
    kwargs: dict[str, BuilderArgument] = Field(
        default_factory=dict,
        description="more builder arguments, e.g. {stochastic_depth_prob: 0.1} (drop-path "
        "of ConvNeXt, Swin, EfficientNet)",
    )
    grad_checkpointing: bool = Field(
        False, description="recompute each block's activations in the backward pass"
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in torchvision_models():
            raise ValueError(unknown_name_message("torchvision", model, torchvision_models()))
        return model

    @field_validator("kwargs")
    @classmethod
    def _no_weights(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "weights" in kwargs or "progress" in kwargs:
            raise ValueError(
                "twinfold builds torchvision models with weights=None (nothing is downloaded); "
                "remove 'weights'/'progress' and load pretrained weights yourself"
            )
        return kwargs

    @model_validator(mode="after")
    def _size_where_taken(self) -> TorchvisionConfig:
        arg = size_argument(self.model)
        if self.image_size is not None and arg is None:
            raise ValueError(
                f"image_size: {self.model} takes any input size; remove image_size"
            )
        if arg is not None and arg in self.kwargs:
            raise ValueError(f"kwargs.{arg}: set image_size instead")
        return self

    def builder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``torchvision.models.get_model`` besides the name."""
        out = {**BUILDER_DEFAULTS.get(self.model, {}), **self.kwargs}
        arg = size_argument(self.model)
        if arg is not None and self.image_size is not None:
            side = self.image_size
            out[arg] = side if arg == "image_size" else [side, side]
        return out


def strip_classifier(net: nn.Module) -> tuple[str, int]:
    """Replace the last ``Linear`` (or 1x1 ``Conv2d``, SqueezeNet) of ``net``'s classifier
    and every dropout in it with ``Identity``; returns the removed layer's dotted name and
    its input width (the feature width). The classifier's other layers stay (ConvNeXt's
    LayerNorm, VGG's hidden layers)."""
    attr = next((a for a in CLASSIFIER_ATTRIBUTES if isinstance(getattr(net, a, None), nn.Module)),
                None)
    if attr is None:
        raise ValueError(f"{type(net).__name__} has none of {CLASSIFIER_ATTRIBUTES}")
    head: nn.Module = getattr(net, attr)
    layers = [(n, m) for n, m in head.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if not layers:
        raise ValueError(f"{type(net).__name__}.{attr} has no Linear or Conv2d layer")
    name, layer = layers[-1]
    width = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
    removed = f"{attr}.{name}" if name else attr
    dropouts = [f"{attr}.{n}" for n, m in head.named_modules() if isinstance(m, nn.Dropout)]
    for path in [removed, *dropouts]:
        _replace(net, path, nn.Identity())
    return removed, width


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, leaf, new)


def build_torchvision(cfg: TorchvisionConfig) -> nn.Module:
    """``torchvision.models.get_model(cfg.model, weights=None, ...)``, classifier included."""
    return torchvision.models.get_model(cfg.model, weights=None, **cfg.builder_kwargs())


class TorchvisionEncoder(nn.Module):
    """A torchvision classification model without its classifier; ``backbone`` keeps
    torchvision's key names (minus the removed layer's), ``removed_layer`` names that
    layer."""

    def __init__(self, cfg: TorchvisionConfig) -> None:
        super().__init__()
        net = build_torchvision(cfg)
        self.removed_layer, width = strip_classifier(net)
        self.out_dim: int = width
        self._recipe = {
            "builder": f"torchvision.models.{cfg.model}",
            "kwargs": cfg.builder_kwargs(),
            "replace": {self.removed_layer: "Identity"},
        }
        if cfg.grad_checkpointing:
            checkpoint_blocks(net)
        self.backbone = net

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def export_recipe(self) -> dict[str, Any]:
        """What the export sidecar records to rebuild the plain torchvision model."""
        return {"torchvision": self._recipe}


class SmallCNNConfig(EncoderConfig):
    """A small residual CNN that trains in minutes on a CPU."""

    name: Literal["small-cnn"] = "small-cnn"
    widths: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [32, 64, 128], min_length=1
    )
    blocks_per_stage: int = Field(1, ge=0, description="residual blocks after each stage's conv")


def _conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(width, width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(x + self.body(x))


class SmallCNN(nn.Module):
    """Stages of [conv-BN-ReLU (stride 2 after the first) + residual blocks], then
    global average pooling."""

    def __init__(self, cfg: SmallCNNConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for i, width in enumerate(cfg.widths):
            layers += _conv_bn(cin, width, stride=1 if i == 0 else 2)
            layers += [_Residual(width) for _ in range(cfg.blocks_per_stage)]
            cin = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)
        self.out_dim: int = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
