"""VICReg's expander (Bardes et al. 2022, sec. 4.2 and appendix C):
8192-8192-8192, [Linear -> BN -> ReLU] x 2 then Linear without bias."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from twinfold.builtins.heads import Dim, MLPHeadConfig


class VICRegExpanderConfig(MLPHeadConfig):
    """The expander h: two hidden Linear(bias) -> BN -> ReLU blocks, a bias-free output."""

    name: Literal["vicreg-expander"] = "vicreg-expander"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [8192, 8192])
    hidden_bias: bool = True
    out_dim: Dim = 8192
    output_bias: bool = False
