"""SimSiam's loss (Chen & He 2021, eqs. 1-2): negative cosine similarity between the
prediction of one view and the stop-gradient projection of the other, symmetrised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from twinfold import Loss, LossConfig
from twinfold.distributed import global_count, sum_over_ranks


class SimSiamLossConfig(LossConfig):
    """Symmetrised negative cosine similarity D(p, z) = -cos(p, z) (eq. 1)."""

    name: Literal["simsiam"] = "simsiam"


class SimSiamLoss(Loss):
    """``L = -1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))]`` averaged over the global batch
    (eq. 2). With V views the mean of ``-cos(p_i, z_j)`` over the ordered pairs i != j
    (for two views exactly eq. 2). The stop-gradient belongs to the target rule
    (``stop-gradient``); this loss differentiates whatever it is given.

    Named terms: ``cosine`` (mean cos over the pairs, = -loss) and ``output_std``, the
    per-channel std of the l2-normalised targets over the global batch, averaged over
    channels (the collapse indicator of sec. 4.1, Fig. 2: ~1/sqrt(d) healthy, 0 collapsed).
    """

    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(online, target)
        views = len(online)
        same = all(o is t for o, t in zip(online, target, strict=True))
        if same:  # one branch: cos is symmetric, the unordered pairs give the same mean
            pairs = [(online[i], online[j]) for i in range(views) for j in range(i + 1, views)]
        else:
            pairs = self.view_pairs(online, target)
        local = online[0].shape[0]
        cos_sum = online[0].new_zeros(())
        for p, z in pairs:
            cos_sum = cos_sum + F.cosine_similarity(p, z, dim=-1).sum()
        batch = global_count(local, online[0].device)
        loss = -sum_over_ranks(cos_sum) / (batch * len(pairs))
        with torch.no_grad():
            std = torch.stack([_normalized_std(t.detach(), batch) for t in target]).mean()
        return {"loss": loss, "cosine": -loss.detach(), "output_std": std}


def _normalized_std(z: Tensor, batch: int) -> Tensor:
    """Mean over channels of the global-batch std of ``z / ||z||`` (biased)."""
    zn = F.normalize(z, dim=-1)
    first = sum_over_ranks(zn.sum(0)) / batch
    second = sum_over_ranks(zn.pow(2).sum(0)) / batch
    return (second - first.pow(2)).clamp_min(0).sqrt().mean()


def build_simsiam_loss(cfg: SimSiamLossConfig) -> SimSiamLoss:
    return SimSiamLoss()
