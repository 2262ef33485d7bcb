"""Optimizers and parameter groups: SGD, AdamW and LARS.

Biases and normalisation parameters can be excluded from weight decay and from the LARS
trust ratio and given their own learning rate (Barlow Twins: 0.2 for weights, 0.0048 for
biases and norms); position embeddings and class tokens of ViTs join the biases and norms
(``no_decay_names``); sub-modules named in ``fixed_lr`` keep their peak learning rate through
the schedule (SimSiam's predictor, Chen & He 2021, Sec. 4.4); ``lr_multipliers`` scale the
rate of whole sub-modules (a faster predictor, Tian et al. 2021).
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from twinfold.config.models import OptimizerConfig, ScheduleConfig

__all__ = ["LARS", "build_optimizer", "group_name_problems", "lr_scale", "param_groups"]


def lr_scale(cfg: ScheduleConfig, global_batch_size: int) -> float:
    """Learning-rate multiplier: ``global_batch_size / reference_batch_size`` for
    ``lr_scaling='linear'`` (Goyal et al. 2017, Eq. "linear scaling rule"), else 1."""
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}")
    if cfg.lr_scaling == "linear":
        return global_batch_size / cfg.reference_batch_size
    return 1.0


def _is_bias_or_norm(name: str, p: Tensor, no_decay_names: Iterable[str]) -> bool:
    """Biases and BatchNorm/LayerNorm/GroupNorm affine parameters are the 1-D tensors (a
    learnable scalar, 0-D, counts too); names matching a ``no_decay_names`` pattern
    (position embeddings, class tokens) join them."""
    return p.ndim <= 1 or any(fnmatch.fnmatchcase(name, pattern) for pattern in no_decay_names)


def _top_level_names(module: nn.Module) -> list[str]:
    """The first components of ``module``'s parameter names, sorted (``encoder``,
    ``predictor``, ``projector`` for an online network)."""
    return sorted({name.split(".", 1)[0] for name, _ in module.named_parameters()})


def group_name_problems(module: nn.Module, cfg: OptimizerConfig) -> list[tuple[str, str]]:
    """``(config path, message)`` for every ``cfg.fixed_lr`` entry and ``cfg.lr_multipliers``
    key that names no top-level sub-module of ``module`` with parameters; the message
    suggests close matches and lists the valid names."""
    tops = _top_level_names(module)
    problems = []
    for path, names in (
        ("optimizer.fixed_lr", cfg.fixed_lr),
        ("optimizer.lr_multipliers", list(cfg.lr_multipliers)),
    ):
        for entry in (name for name in names if name not in tops):
            close = difflib.get_close_matches(entry, tops, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                (
                    path,
                    f"entry {entry!r} matches no parameter of the online module{hint}; its "
                    f"top-level sub-modules with parameters are: {', '.join(tops)}",
                )
            )
    return problems


def _group_label(fixed: bool, factor: float, modules: list[str]) -> str:
    """``scheduled`` for the groups that follow the schedule at the base rate, else the
    names of the sub-modules split off into the group (``predictor``, ``projector+predictor``)."""
    return "+".join(modules) if fixed or factor != 1.0 else "scheduled"


def param_groups(module: nn.Module, cfg: OptimizerConfig, scale: float) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``module`` by (in a ``fixed_lr`` sub-module or not)
    x (learning-rate factor from ``cfg.lr_multipliers``, 1 by default) x (bias/norm or
    not); empty groups are dropped. "bias/norm" are the tensors with at most one dimension
    and those whose full name (``encoder.backbone.pos_embed``) matches a
    ``cfg.no_decay_names`` pattern.

    Each group holds ``params``, ``lr`` and ``base_lr`` (both the peak rate: ``cfg.lr x
    scale x factor``, or ``cfg.bias_and_norm_lr x scale x factor`` for biases and norms
    when set), ``weight_decay`` and ``lars_exclude`` (0 and True for biases and norms when
    ``cfg.exclude_bias_and_norm``), ``decays`` (whether ``weight_decay`` follows a
    :class:`twinfold.schedule.WeightDecaySchedule`), ``fixed_lr``, ``lr_multiplier`` (the
    factor) and a readable ``name``: ``scheduled/weights``, ``scheduled/bias_norm``, and
    for the groups split off by ``fixed_lr`` or ``lr_multipliers`` the sub-module names,
    e.g. ``predictor/weights``. Scheduled weights at factor 1 come first.

    ``fixed_lr`` entries and ``lr_multipliers`` keys are matched against the first
    component of the parameter names (``predictor`` matches ``predictor.layers.0.weight``);
    one matching no parameter raises ``ValueError`` (:func:`group_name_problems`).
    """
    problems = group_name_problems(module, cfg)
    if problems:
        path, message = problems[0]
        raise ValueError(f"{path} {message}")
    fixed_names = set(cfg.fixed_lr)
    no_decay = tuple(cfg.no_decay_names)
    buckets: dict[tuple[bool, float, bool], list[nn.Parameter]] = {}
    modules: dict[tuple[bool, float], list[str]] = {}
    order = {name: i for i, name in enumerate([*cfg.fixed_lr, *cfg.lr_multipliers])}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".", 1)[0]
        fixed, factor = top in fixed_names, float(cfg.lr_multipliers.get(top, 1.0))
        buckets.setdefault((fixed, factor, _is_bias_or_norm(name, p, no_decay)), []).append(p)
        members = modules.setdefault((fixed, factor), [])
        if top not in members:
            members.append(top)

    groups: list[dict[str, Any]] = []
    # (not fixed, factor 1, weights) first: the logged group
    for fixed, factor, bias_norm in sorted(buckets, key=lambda k: (k[0], k[1] != 1.0, *k[1:])):
        excluded = bias_norm and cfg.exclude_bias_and_norm
        base = cfg.bias_and_norm_lr if bias_norm and cfg.bias_and_norm_lr is not None else cfg.lr
        peak = base * scale * factor
        members = sorted(modules[(fixed, factor)], key=lambda m: order.get(m, -1))
        groups.append(
            {
                "params": buckets[(fixed, factor, bias_norm)],
                "name": f"{_group_label(fixed, factor, members)}/"
                f"{'bias_norm' if bias_norm else 'weights'}",
                "lr": peak,
                "base_lr": peak,
                "weight_decay": 0.0 if excluded else cfg.weight_decay,
                "decays": not excluded,
                "lars_exclude": excluded,
                "fixed_lr": fixed,
                "lr_multiplier": factor,
            }
        )
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You, Gitman & Ginsburg 2017, arXiv:1708.03888,
    Alg. 1) as used by BYOL (Grill et al. 2020) and Barlow Twins (Zbontar et al. 2021).

    Per parameter ``p`` with gradient ``g``, per step:

    - ``d = g + wd * p``
    - unless the group has ``lars_exclude``: ``d = d * eta * ||p|| / ||d||`` when both
      norms are > 0 (else the ratio is 1), ``eta`` being ``trust_coefficient``
    - ``m = momentum * m + d`` (``m`` starts at 0), ``p = p - lr * m``

    ``foreach=None`` uses multi-tensor ``torch._foreach_*`` kernels when all parameters are
    on an accelerator; ``True``/``False`` force either path (same result).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 1e-3,
        *,
        foreach: bool | None = None,
    ) -> None:
        if lr < 0:
            raise ValueError(f"LARS lr must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"LARS weight_decay must be >= 0, got {weight_decay}")
        if not 0 <= momentum < 1:
            raise ValueError(f"LARS momentum must be in [0, 1), got {momentum}")
        if trust_coefficient <= 0:
            raise ValueError(f"LARS trust_coefficient must be > 0, got {trust_coefficient}")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "trust_coefficient": trust_coefficient,
            "lars_exclude": False,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _buffers(self, params: list[Tensor]) -> list[Tensor]:
        bufs = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            bufs.append(state["momentum_buffer"])
        return bufs

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One LARS update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients")
            foreach = group.get("foreach")  # absent in groups loaded from older checkpoints
            if foreach is None:
                foreach = all(p.device.type != "cpu" for p in params)
            if foreach:
                by_kind: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
                for p in params:
                    by_kind.setdefault((p.device, p.dtype), []).append(p)
                for same in by_kind.values():
                    self._step_foreach(group, same)
            else:
                self._step_single(group, params)
        return loss

    def _step_single(self, group: dict[str, Any], params: list[Tensor]) -> None:
        wd, eta = group["weight_decay"], group["trust_coefficient"]
        for p, m in zip(params, self._buffers(params)):
            d = p.grad.add(p, alpha=wd) if wd != 0 else p.grad.clone()
            if not group["lars_exclude"]:
                p_norm, d_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                ratio = torch.where(
                    (p_norm > 0) & (d_norm > 0), eta * p_norm / d_norm, torch.ones_like(p_norm)
                )
                d.mul_(ratio)
            m.mul_(group["momentum"]).add_(d)
            p.add_(m, alpha=-group["lr"])

    def _step_foreach(self, group: dict[str, Any], params: list[Tensor]) -> None:
        wd, eta = group["weight_decay"], group["trust_coefficient"]
        grads = [p.grad for p in params]
        d = torch._foreach_add(grads, params, alpha=wd) if wd != 0 else [g.clone() for g in grads]
        if not group["lars_exclude"]:
            p_norms = torch._foreach_norm(params)
            d_norms = torch._foreach_norm(d)
            ratios = [
                torch.where((pn > 0) & (dn > 0), eta * pn / dn, torch.ones_like(pn))
                for pn, dn in zip(p_norms, d_norms)
            ]
            torch._foreach_mul_(d, ratios)
        bufs = self._buffers(params)
        torch._foreach_mul_(bufs, group["momentum"])
        torch._foreach_add_(bufs, d)
        torch._foreach_add_(params, bufs, alpha=-group["lr"])


FUSED_DEVICES = frozenset({"cpu", "cuda"})
"""Devices on which torch has fused SGD and AdamW kernels that ``implementation='auto'``
uses (one kernel for all parameters instead of a Python loop over them)."""


def kernel_options(cfg: OptimizerConfig, device_type: str) -> dict[str, bool | None]:
    """The ``fused`` / ``foreach`` keyword arguments for ``cfg.implementation`` on
    ``device_type``; empty for torch's own default."""
    impl = cfg.implementation
    if impl == "auto":
        if cfg.name == "lars":
            return {"foreach": None}  # multi-tensor kernels on accelerators
        return {"fused": True} if device_type in FUSED_DEVICES else {}
    if impl == "fused":  # not for lars: OptimizerConfig refuses that combination
        return {"fused": True}
    return {"foreach": impl == "foreach"}


def build_optimizer(
    module: nn.Module, cfg: OptimizerConfig, scale: float, device_type: str = "cpu"
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg`` over :func:`param_groups` of ``module``: SGD with
    momentum, AdamW (Loshchilov & Hutter 2019) with ``cfg.betas``, or :class:`LARS`,
    with the kernels of ``cfg.implementation`` for parameters on ``device_type`` (see
    :func:`kernel_options`; every choice computes the same update up to rounding)."""
    groups = param_groups(module, cfg, scale)
    peak = cfg.lr * scale
    kernels = kernel_options(cfg, device_type)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=peak, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **kernels
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=peak, betas=cfg.betas, weight_decay=cfg.weight_decay, **kernels
        )
    if cfg.name == "lars":
        return LARS(
            groups,
            lr=peak,
            weight_decay=cfg.weight_decay,
            momentum=cfg.momentum,
            trust_coefficient=cfg.trust_coefficient,
            foreach=kernels.get("foreach"),
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}; choose sgd, adamw or lars")
