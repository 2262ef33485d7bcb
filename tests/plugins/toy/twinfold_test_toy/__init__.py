"""Fixture plugin: a mean-squared-error loss between normalised views, and a preset."""

from typing import Literal

import torch.nn.functional as F

from twinfold import Component, Loss, LossConfig, Preset, hookimpl


class ToyMSEConfig(LossConfig):
    name: Literal["toy-mse"] = "toy-mse"
    scale: float = 1.0


class ToyMSE(Loss):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def terms(self, online, target):
        self.check_views(online, target)
        pairs = self.view_pairs(online, target)
        loss = sum(
            (F.normalize(o, dim=1) - F.normalize(t, dim=1)).pow(2).sum(1).mean() for o, t in pairs
        )
        return {"loss": self.scale * loss / len(pairs)}


@hookimpl
def twinfold_losses():
    yield Component(ToyMSEConfig, lambda cfg: ToyMSE(cfg.scale), "toy normalised MSE")


@hookimpl
def twinfold_presets():
    yield Preset(
        name="toy-small",
        summary="toy loss with the stop-gradient-free 'none' target on digits",
        config={
            "method": {
                "encoder": {"name": "small-cnn", "widths": [8, 16]},
                "projector": {"name": "mlp", "hidden_dims": [32], "out_dim": 16},
                "target": {"name": "none"},
                "loss": {"name": "toy-mse"},
                "views": {"name": "simclr-views"},
            },
            "data": {"image_size": 16, "batch_size": 64},
            "trainer": {"epochs": 1, "accelerator": "cpu"},
        },
        deviations=("not a published method",),
    )
