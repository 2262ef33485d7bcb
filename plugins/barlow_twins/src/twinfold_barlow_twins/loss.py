"""The Barlow Twins loss (Zbontar et al. 2021, eqs. 1 and 2), exact under multi-process
training.

Every embedding dimension is standardised over the GLOBAL batch (batch norm without
affine parameters: mean and biased variance over all samples of all ranks, eps 1e-5),
then ``C = BN(z1)^T BN(z2) / B`` (eq. 2) and
``L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2`` (eq. 1).

Under ``torch.distributed`` each rank computes its partial sums (of z, of the centred
squares, of ``BN(z1)^T BN(z2)``) and adds them up with
:func:`twinfold.distributed.sum_over_ranks`, the autograd-aware reduction: its backward
sums the incoming gradients over ranks, so the local input gradient is ``world_size`` x
the gradient of the global loss, as the DDP convention requires. (A plain ``all_reduce``
would give the right value but a gradient ``1/world_size`` too small.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from twinfold import Loss, LossConfig
from twinfold.distributed import global_count, sum_over_ranks

BN_EPS = 1e-5


class BarlowTwinsLossConfig(LossConfig):
    """Redundancy-reduction loss on the cross-correlation of two views' embeddings."""

    name: Literal["barlow-twins"] = "barlow-twins"
    lambda_: float = Field(
        0.0051, ge=0, description="weight of the off-diagonal term (authors' code; paper 5e-3)"
    )
    normalize: bool = Field(
        True,
        description="standardise each dimension over the global batch before the "
        "cross-correlation (the paper's batch norm); false uses the raw embeddings",
    )


def global_batch_norm(z: Tensor, batch: int, eps: float = BN_EPS) -> Tensor:
    """``(z - mean) / sqrt(var + eps)`` per dimension, with the mean and the BIASED
    variance taken over the global batch of ``batch`` samples (autograd-aware)."""
    mean = sum_over_ranks(z.sum(0)) / batch
    centred = z - mean
    var = sum_over_ranks(centred.pow(2).sum(0)) / batch
    return centred / torch.sqrt(var + eps)


def cross_correlation(a: Tensor, b: Tensor, batch: int) -> Tensor:
    """``C = a^T b / B`` summed over ranks (eq. 2 once ``a``, ``b`` are normalised)."""
    return sum_over_ranks(a.T @ b) / batch


def barlow_terms(c: Tensor, lambda_: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, on_diag, off_diag)`` of eq. 1 for a cross-correlation matrix ``c``;
    ``off_diag`` is the unweighted ``sum_{i != j} C_ij^2``."""
    diag = torch.diagonal(c)
    on_diag = (1 - diag).pow(2).sum()
    off_diag = c.pow(2).sum() - diag.pow(2).sum()
    return on_diag + lambda_ * off_diag, on_diag, off_diag


class BarlowTwinsLoss(Loss):
    """Eq. 1 on the global batch. With the same tensors on both sides (target rule
    ``none``) the loss of views (0, 1) is computed once (for more views, averaged over
    the unordered pairs i < j; eq. 1 is symmetric in its two views). With a separate
    target branch it is averaged over the ordered pairs (online i, target j), i != j."""

    def __init__(self, cfg: BarlowTwinsLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or BarlowTwinsLossConfig()

    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(online, target)
        batch = global_count(online[0].shape[0], online[0].device)
        normalised: dict[int, Tensor] = {}

        def norm(z: Tensor) -> Tensor:
            if not self.cfg.normalize:
                return z
            if id(z) not in normalised:
                normalised[id(z)] = global_batch_norm(z, batch)
            return normalised[id(z)]

        pairs = self.symmetric_view_pairs(online, target)
        loss = on_diag = off_diag = online[0].new_zeros(())
        for a, b in pairs:
            c = cross_correlation(norm(a), norm(b), batch)
            pair_loss, pair_on, pair_off = barlow_terms(c, self.cfg.lambda_)
            loss = loss + pair_loss
            on_diag = on_diag + pair_on.detach()
            off_diag = off_diag + pair_off.detach()
        n = len(pairs)
        return {"loss": loss / n, "on_diag": on_diag / n, "off_diag": off_diag / n}


def build_barlow_twins_loss(cfg: BarlowTwinsLossConfig) -> BarlowTwinsLoss:
    return BarlowTwinsLoss(cfg)
