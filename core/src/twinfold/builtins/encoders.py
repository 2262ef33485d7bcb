"""Builtin backbones: torchvision ResNets (with a small-image stem) and a small CNN."""

from __future__ import annotations

from typing import Annotated, Literal

import torchvision
from pydantic import Field
from torch import Tensor, nn

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
        self.backbone = net

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)


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
