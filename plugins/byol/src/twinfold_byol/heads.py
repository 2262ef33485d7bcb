"""BYOL's projector and predictor defaults (Grill et al. 2020, sec. 3.3):
Linear(D, 4096) -> BN -> ReLU -> Linear(4096, 256), no BN on the output."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.heads import Dim, MLPHeadConfig


class BYOLProjectorConfig(MLPHeadConfig):
    name: Literal["byol-projector"] = "byol-projector"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [4096])
    out_dim: Dim = 256


class BYOLPredictorConfig(MLPHeadConfig):
    name: Literal["byol-predictor"] = "byol-predictor"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [4096])
    out_dim: Dim = 256
