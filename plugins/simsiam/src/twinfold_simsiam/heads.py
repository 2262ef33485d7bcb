"""SimSiam's heads (Chen & He 2021, sec. 4 "Baseline settings"). Projector:
[Linear(no bias) -> BN -> ReLU] x 2 at 2048, then Linear(2048, 2048, no bias) -> BN
without affine parameters. Predictor (bottleneck): Linear(2048, 512, no bias) -> BN ->
ReLU -> Linear(512, 2048) with bias and no BN on the output."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.heads import Dim, MLPHeadConfig


class SimSiamProjectorConfig(MLPHeadConfig):
    name: Literal["simsiam-projector"] = "simsiam-projector"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [2048, 2048])
    out_dim: Dim = 2048
    hidden_bias: bool = False
    output_bias: bool = False
    output_norm: Literal["none", "batch", "batch-no-affine"] = "batch-no-affine"


class SimSiamPredictorConfig(MLPHeadConfig):
    name: Literal["simsiam-predictor"] = "simsiam-predictor"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [512])
    out_dim: Dim = 2048
    hidden_bias: bool = False
    output_bias: bool = True
    output_norm: Literal["none", "batch", "batch-no-affine"] = "none"
