"""DINO's loss (Caron et al. 2021, "Emerging properties in self-supervised vision
transformers", eq. 1 and Algorithm 1, with multi-crop as in sec. 3.1)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from twinfold import Loss, LossConfig, StepProgress
from twinfold.distributed import global_count, sum_over_ranks


class DINOLossConfig(LossConfig):
    """Cross-entropy between the centred, sharpened teacher outputs of the global views
    and the student outputs of every other view."""

    name: Literal["dino"] = "dino"
    out_dim: int = Field(65536, ge=1, description="K: the head's out_dim (size of the centre)")
    global_views: int = Field(2, ge=1, description="leading views the teacher sees")
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0, description="after the warm-up")
    warmup_teacher_temp: float = Field(0.04, gt=0, description="at epoch 0")
    warmup_teacher_temp_epochs: int = Field(
        30, ge=0, description="0: teacher_temp from the first epoch"
    )
    center_momentum: float = Field(0.9, ge=0, le=1)


def teacher_temperature(epoch: int, start: float, end: float, warmup_epochs: int) -> float:
    """The reference code's per-epoch schedule: ``linspace(start, end, W)[epoch]`` during
    the ``W`` warm-up epochs (``start`` at epoch 0, ``end`` at epoch W - 1), then ``end``."""
    if epoch >= warmup_epochs:
        return end
    if warmup_epochs == 1:
        return start
    return start + (end - start) * epoch / (warmup_epochs - 1)


class DINOLoss(Loss):
    """``sum over pairs (teacher view j < global_views, student view i != j) of the batch
    mean of H(Pt(x_j), Ps(x_i)) = -sum_k Pt log Ps``, divided by the number of pairs, with
    ``Pt = softmax((t - C) / tau_t)`` and ``Ps = softmax(s / tau_s)``. The batch mean is
    over the global batch; after the loss the centre ``C`` (a buffer) moves towards the
    global batch mean of the teacher outputs: ``C <- m C + (1 - m) mean(t)``. The teacher
    temperature follows :func:`teacher_temperature` through :meth:`before_step`."""

    def __init__(self, cfg: DINOLossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("center", torch.zeros(cfg.out_dim))
        start = teacher_temperature(
            0, cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_temp_epochs
        )
        self.register_buffer("teacher_temp", torch.tensor(start, dtype=torch.float64))

    def target_views(self, num_views: int) -> int:
        return min(self.cfg.global_views, num_views)

    def before_step(self, progress: StepProgress) -> None:
        cfg = self.cfg
        temp = teacher_temperature(
            progress.epoch,
            cfg.warmup_teacher_temp,
            cfg.teacher_temp,
            cfg.warmup_teacher_temp_epochs,
        )
        self.teacher_temp.fill_(temp)

    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        self._check(online, target)
        temp = float(self.teacher_temp)
        teacher = [F.softmax((t.detach() - self.center) / temp, dim=-1) for t in target]
        student = [F.log_softmax(s / self.cfg.student_temp, dim=-1) for s in online]
        total = online[0].new_zeros(())
        for j, q in enumerate(teacher):
            for i, log_p in enumerate(student):
                if i != j:
                    total = total + (q * log_p).sum().neg()
        pairs = len(teacher) * (len(student) - 1)
        batch = global_count(online[0].shape[0], online[0].device)
        loss = sum_over_ranks(total) / (batch * pairs)
        with torch.no_grad():
            entropy = sum(-(q * q.clamp_min(1e-30).log()).sum() for q in teacher)
            entropy = sum_over_ranks(entropy) / (batch * len(teacher))
            self.update_center(target)
        temp_t = torch.tensor(temp, device=loss.device)
        return {"loss": loss, "teacher_temp": temp_t, "teacher_entropy": entropy}

    @torch.no_grad()
    def update_center(self, target: Sequence[Tensor]) -> None:
        """``C <- m C + (1 - m) x`` the mean of the teacher outputs over every global view
        and the global batch (an all-reduced sum: every rank holds the same centre)."""
        local = torch.stack([t.detach().sum(dim=0) for t in target]).sum(dim=0)
        count = global_count(target[0].shape[0] * len(target), local.device)
        batch_center = sum_over_ranks(local) / count
        m = self.cfg.center_momentum
        self.center.mul_(m).add_(batch_center, alpha=1 - m)

    def _check(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> None:
        k = self.cfg.out_dim
        if not target or len(online) < 2 or len(target) > len(online):
            raise ValueError(
                f"loss 'dino' needs at least 2 student views and 1..{len(online)} teacher "
                f"views (the leading global ones); got {len(online)} and {len(target)}"
            )
        for i, x in enumerate([*online, *target]):
            if x.ndim != 2 or x.shape[1] != k or x.shape[0] != online[0].shape[0]:
                raise ValueError(
                    f"loss 'dino' expects [batch, {k}] outputs for every view (out_dim={k}); "
                    f"tensor {i} is {tuple(x.shape)}: set method.loss.out_dim to the head's "
                    "out_dim"
                )


def build_dino_loss(cfg: DINOLossConfig) -> DINOLoss:
    return DINOLoss(cfg)
