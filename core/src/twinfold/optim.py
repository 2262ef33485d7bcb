"""Optimizers and parameter groups: SGD, AdamW and LARS, with biases and norm parameters
optionally excluded from weight decay and LARS adaptation, a separate bias/norm learning
rate, and sub-modules whose learning rate stays fixed (SimSiam's predictor)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from twinfold.config.models import OptimizerConfig, ScheduleConfig


def lr_scale(cfg: ScheduleConfig, global_batch_size: int) -> float:
    """``global_batch / reference`` for linear scaling (Goyal et al. 2017), else 1."""
    return global_batch_size / cfg.reference_batch_size if cfg.lr_scaling == "linear" else 1.0


def param_groups(module: nn.Module, cfg: OptimizerConfig, scale: float) -> list[dict[str, Any]]:
    """Groups by (fixed-lr sub-module or not) x (bias/norm or not); each carries its peak
    ``lr`` and ``base_lr``, ``weight_decay``, ``lars_exclude`` and ``fixed_lr``."""
    top = {name for name, _ in module.named_children()}
    for entry in cfg.fixed_lr:
        if entry not in top:
            raise ValueError(
                f"optimizer.fixed_lr entry '{entry}' names no sub-module; available: "
                f"{', '.join(sorted(top))}"
            )
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        fixed = name.split(".", 1)[0] in cfg.fixed_lr
        bias_norm = p.ndim <= 1
        buckets.setdefault((fixed, bias_norm), []).append(p)
    groups = []
    for (fixed, bias_norm), params in sorted(buckets.items()):
        excluded = bias_norm and cfg.exclude_bias_and_norm
        base = cfg.bias_and_norm_lr if bias_norm and cfg.bias_and_norm_lr else cfg.lr
        groups.append(
            {
                "params": params,
                "name": ("fixed/" if fixed else "scheduled/")
                + ("bias_norm" if bias_norm else "weights"),
                "lr": base * scale,
                "base_lr": base * scale,
                "weight_decay": 0.0 if excluded else cfg.weight_decay,
                "lars_exclude": excluded,
                "fixed_lr": fixed,
            }
        )
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as used by BYOL and Barlow
    Twins: g <- g + wd p; g <- eta ||p|| / ||g|| g (if both norms > 0; skipped for
    ``lars_exclude`` groups); m <- mu m + g; p <- p - lr m."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 1e-3,
    ) -> None:
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            trust_coefficient=trust_coefficient,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[Tensor] = [p.grad for p in params]
            if group["weight_decay"]:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if not group["lars_exclude"]:
                p_norm = torch._foreach_norm(params)
                g_norm = torch._foreach_norm(grads)
                ratios = [
                    torch.where(
                        (pn > 0) & (gn > 0),
                        group["trust_coefficient"] * pn / gn,
                        torch.ones_like(pn),
                    )
                    for pn, gn in zip(p_norm, g_norm, strict=True)
                ]
                grads = torch._foreach_mul(grads, ratios)
            bufs = []
            for p, _g in zip(params, grads, strict=True):
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


def build_optimizer(module: nn.Module, cfg: OptimizerConfig, scale: float) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` over :func:`param_groups` of ``module``."""
    groups = param_groups(module, cfg, scale)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr * scale, momentum=cfg.momentum, foreach=True)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr * scale, betas=cfg.betas, foreach=True)
    return LARS(
        groups, lr=cfg.lr * scale, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient
    )
