"""DINO's projection head (Caron et al. 2021, sec. 3.1 and appendix): a 3-layer MLP
(hidden 2048, GELU) to a 256-d bottleneck, L2 normalisation, then a weight-normalised
linear layer to K outputs whose norm g is fixed to 1; the last layer's gradients are
zeroed during the first ``freeze_last_layer`` epochs."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from twinfold import HeadConfig, StepProgress
from twinfold.builtins.heads import Dim


class DINOHeadConfig(HeadConfig):
    name: Literal["dino-head"] = "dino-head"
    hidden_dim: Dim = 2048
    bottleneck_dim: Dim = 256
    out_dim: Dim = 65536
    layers: int = Field(3, ge=1, description="linear layers of the MLP before the bottleneck")
    batch_norm: bool = Field(False, description="BN after each hidden layer (not in the paper)")
    norm_last_layer: bool = Field(True, description="fix the last layer's weight norm g to 1")
    freeze_last_layer: int = Field(1, ge=0, description="epochs with the last layer frozen")


class _ZeroGrad(torch.autograd.Function):
    """Identity forward, zero gradient backward: the tensor stays in the graph (so DDP
    sees every parameter used) but receives no update from the loss."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return torch.zeros_like(grad)


def _mlp(cfg: DINOHeadConfig, in_dim: int) -> nn.Sequential:
    if cfg.layers == 1:
        return nn.Sequential(nn.Linear(in_dim, cfg.bottleneck_dim))
    layers: list[nn.Module] = []
    dims = [in_dim] + [cfg.hidden_dim] * (cfg.layers - 1)
    for a, b in itertools.pairwise(dims):
        layers.append(nn.Linear(a, b))
        if cfg.batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(nn.GELU())
    layers.append(nn.Linear(dims[-1], cfg.bottleneck_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """MLP -> L2-normalise -> weight-normalised ``Linear(bottleneck, K, bias=False)``."""

    def __init__(self, cfg: DINOHeadConfig) -> None:
        super().__init__()
        if cfg.in_dim is None:
            raise ValueError(
                "head 'dino-head' needs in_dim (the method fills it from the encoder; "
                "pass in_dim=... when building it by hand)"
            )
        self.cfg, self.out_dim = cfg, cfg.out_dim
        self.mlp = _mlp(cfg, cfg.in_dim)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(cfg.bottleneck_dim, cfg.out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not cfg.norm_last_layer)
        self.last_layer_frozen = cfg.freeze_last_layer > 0

    def before_step(self, progress: StepProgress) -> None:
        """Freeze the last layer during the first ``freeze_last_layer`` epochs."""
        self.last_layer_frozen = progress.epoch < self.cfg.freeze_last_layer

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        weight = self.last_layer.weight
        if self.last_layer_frozen and torch.is_grad_enabled():
            weight = _ZeroGrad.apply(weight)
        return F.linear(x, weight)


def build_dino_head(cfg: DINOHeadConfig) -> DINOHead:
    return DINOHead(cfg)
