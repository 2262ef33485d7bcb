"""BYOL's loss (Grill et al. 2020, eqs. 2 and 4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from twinfold import Loss, LossConfig
from twinfold.distributed import global_count, sum_over_ranks


class BYOLLossConfig(LossConfig):
    """Normalised mean squared error between predictions and targets."""

    name: Literal["byol"] = "byol"


class BYOLLoss(Loss):
    """Sum over ordered view pairs (i != j) of the batch mean of
    ``|| q_i/||q_i|| - z'_j/||z'_j|| ||^2 = 2 - 2 cos(q_i, z'_j)`` (eq. 2); with two views
    this is the symmetrised total of eq. 4. The mean is over the global batch."""

    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(online, target)
        local = online[0].shape[0]
        total = online[0].new_zeros(())
        cos_sum = online[0].new_zeros(())
        for q, z in self.view_pairs(online, target):
            cos = F.cosine_similarity(q, z, dim=-1)
            total = total + (2 - 2 * cos).sum()
            cos_sum = cos_sum + cos.detach().sum()
        batch = global_count(local, online[0].device)
        loss = sum_over_ranks(total) / batch
        pairs = len(online) * (len(online) - 1)
        with torch.no_grad():
            mean_cos = sum_over_ranks(cos_sum) / (batch * pairs)
        return {"loss": loss, "cosine": mean_cos}


def build_byol_loss(cfg: BYOLLossConfig) -> BYOLLoss:
    return BYOLLoss()
