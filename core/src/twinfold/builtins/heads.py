"""Builtin MLP head (projector / predictor), configurable enough for all four papers:
[Linear -> BN -> ReLU] x len(hidden_dims) -> Linear [-> BN]."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from twinfold.components import HeadConfig

#: A layer width: at least one unit. Subclasses that redefine ``hidden_dims`` or
#: ``out_dim`` must keep this type, or they lose the bound.
Dim = Annotated[int, Field(ge=1)]


class MLPHeadConfig(HeadConfig):
    """A multi-layer perceptron head. ``in_dim`` is filled in by the method."""

    name: Literal["mlp"] = "mlp"
    hidden_dims: list[Dim] = Field(default_factory=lambda: [4096])
    out_dim: Dim = 256
    hidden_bias: bool = Field(True, description="bias in the hidden linear layers")
    hidden_norm: Literal["batch", "none"] = "batch"
    output_bias: bool = True
    output_norm: Literal["none", "batch", "batch-no-affine"] = "none"

    @field_validator("hidden_dims", "out_dim")
    @classmethod
    def _positive_widths(cls, value: int | list[int]) -> int | list[int]:
        # a safety net for subclasses that redefine these fields without ``Dim``
        if any(width < 1 for width in (value if isinstance(value, list) else [value])):
            raise ValueError("layer widths must be >= 1")
        return value


class MLPHead(nn.Module):
    def __init__(self, cfg: MLPHeadConfig) -> None:
        super().__init__()
        if cfg.in_dim is None:
            raise ValueError(
                f"head '{cfg.name}' needs in_dim (the method fills it from the module before it;"
                " pass in_dim=... when building a head by hand)"
            )
        layers: list[nn.Module] = []
        dim = cfg.in_dim
        for hidden in cfg.hidden_dims:
            layers.append(nn.Linear(dim, hidden, bias=cfg.hidden_bias))
            if cfg.hidden_norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU(inplace=True))
            dim = hidden
        layers.append(nn.Linear(dim, cfg.out_dim, bias=cfg.output_bias))
        if cfg.output_norm != "none":
            layers.append(nn.BatchNorm1d(cfg.out_dim, affine=cfg.output_norm == "batch"))
        self.layers = nn.Sequential(*layers)
        self.out_dim: int = cfg.out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def build_mlp_head(cfg: MLPHeadConfig) -> MLPHead:
    """Factory for every config class derived from :class:`MLPHeadConfig`."""
    return MLPHead(cfg)
