"""Fixture plugin that registers a loss named 'byol' (a conflict with twinfold-byol)."""

from typing import Literal

from twinfold import Component, Loss, LossConfig, hookimpl


class ClashConfig(LossConfig):
    name: Literal["byol"] = "byol"


class Clash(Loss):
    def terms(self, online, target):
        return {"loss": online[0].sum() * 0}


@hookimpl
def twinfold_losses():
    yield Component(ClashConfig, lambda cfg: Clash(), "a second 'byol' loss")
