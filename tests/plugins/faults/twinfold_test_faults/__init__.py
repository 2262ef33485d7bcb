"""Fixture plugin: the toy normalised MSE, made non-finite on purpose. On rank
``bad_rank`` the ``bad_call``-th call (0-based, one call per training step) returns a NaN
loss (``fault: loss``) or a finite loss whose gradient is NaN (``fault: grad``)."""

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F

from twinfold import Component, Loss, LossConfig, hookimpl


class FaultyMSEConfig(LossConfig):
    name: Literal["faulty-mse"] = "faulty-mse"
    fault: Literal["loss", "grad"] = "loss"
    bad_call: int = 3
    bad_rank: int = 0


class _NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class FaultyMSE(Loss):
    def __init__(self, cfg: FaultyMSEConfig) -> None:
        super().__init__()
        self.cfg, self.calls = cfg, 0

    def terms(self, online, target):
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        bad = self.calls == self.cfg.bad_call and rank == self.cfg.bad_rank
        self.calls += 1
        if bad and self.cfg.fault == "grad":
            online = [_NanGrad.apply(o) for o in online]
        pairs = self.view_pairs(online, target)
        loss = sum(
            (F.normalize(o, dim=1) - F.normalize(t, dim=1)).pow(2).sum(1).mean() for o, t in pairs
        ) / len(pairs)
        if bad and self.cfg.fault == "loss":
            loss = loss * float("nan")
        return {"loss": loss}


@hookimpl
def twinfold_losses():
    yield Component(FaultyMSEConfig, FaultyMSE, "normalised MSE that fails on purpose")
