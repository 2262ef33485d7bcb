"""Barlow Twins' projector (Zbontar et al. 2021, sec. 2 "Implementation details"):
three linear layers of 8192 units, [Linear(no bias) -> BN -> ReLU] x 2, Linear(no bias)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.heads import Dim, MLPHeadConfig


class BarlowTwinsProjectorConfig(MLPHeadConfig):
    """The 8192-8192-8192 projector; no bias in any linear layer, no BN on the output
    (the loss standardises the output itself)."""

    name: Literal["barlow-twins-projector"] = "barlow-twins-projector"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [8192, 8192])
    hidden_bias: bool = False
    out_dim: Dim = 8192
    output_bias: bool = False
