"""The ``timm`` encoder: ``timm.create_model(model, pretrained=False, num_classes=0, ...)``,
whose forward returns the pooled features. timm is imported when a config is validated or
an encoder built, never when twinfold loads its plugins."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from twinfold.builtins.encoders import BuilderArgument, unknown_name_message
from twinfold.components import EncoderConfig

RESERVED = ("pretrained", "num_classes", "checkpoint_path", "pretrained_cfg",
            "pretrained_cfg_overlay", "cache_dir")  # fmt: skip
"""``create_model`` arguments twinfold sets itself (or that would load weights)."""


@cache
def timm_models() -> tuple[str, ...]:
    """Every architecture name of the installed timm (``timm.list_models()``)."""
    import timm

    return tuple(timm.list_models())


class TimmConfig(EncoderConfig):
    """Any timm model without its classifier (``num_classes=0``: pooled features), never
    with pretrained weights; ``out_dim`` is the model's feature width."""

    name: Literal["timm"] = "timm"
    model: str = Field(
        "vit_small_patch16_224", description="a name of timm.list_models(), e.g. convnext_atto"
    )
    img_size: int | None = Field(
        None, ge=8, description="input side (ViT, Swin, ...); default: the model's own"
    )
    patch_size: int | None = Field(None, ge=1, description="patch side (ViT); default: model's")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="stochastic depth (drop-path)")
    kwargs: dict[str, BuilderArgument] = Field(
        default_factory=dict,
        description="more create_model arguments, e.g. {depth: 4, embed_dim: 96, num_heads: 3}",
    )
    grad_checkpointing: bool = Field(
        False, description="timm's set_grad_checkpointing: recompute block activations"
    )

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model.split(".", 1)[0] not in timm_models():
            raise ValueError(unknown_name_message("timm", model, timm_models()))
        return model

    @field_validator("kwargs")
    @classmethod
    def _not_reserved(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        taken = [k for k in RESERVED if k in kwargs]
        if taken:
            raise ValueError(
                f"{taken[0]!r} is set by twinfold (pretrained=False, num_classes=0: nothing is "
                "downloaded, the classifier is removed); remove it from kwargs"
            )
        return kwargs

    def create_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``timm.create_model`` besides the name (the fields left
        at their defaults are not passed, so models without them still build)."""
        out: dict[str, Any] = {"num_classes": 0, **self.kwargs}
        for key in ("img_size", "patch_size"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.drop_path_rate:
            out["drop_path_rate"] = self.drop_path_rate
        return out


class TimmEncoder(nn.Module):
    """A timm model with ``num_classes=0``; ``backbone`` keeps timm's key names, so an
    export loads with ``timm.create_model(model, num_classes=0, ...)`` strictly."""

    def __init__(self, cfg: TimmConfig) -> None:
        super().__init__()
        import timm

        kwargs = cfg.create_kwargs()
        net = timm.create_model(cfg.model, pretrained=False, **kwargs)
        width = getattr(net, "head_hidden_size", None) or net.num_features
        self.out_dim: int = int(width)
        if cfg.grad_checkpointing:
            net.set_grad_checkpointing(True)
        self.backbone = net
        self._recipe = {"model_name": cfg.model, "kwargs": kwargs, "version": timm.__version__}

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def export_recipe(self) -> dict[str, Any]:
        """The sidecar's ``timm`` entry: ``timm.create_model(model_name, **kwargs)``."""
        return {"timm": self._recipe}
