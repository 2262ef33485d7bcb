"""The VICReg loss (Bardes et al. 2022, eqs. 1-6), exact under multi-process training.

For embeddings Z, Z' of shape [n, d] (``B`` = the global batch over all ranks):

- invariance (eq. 5): ``s(Z, Z') = mean((Z - Z')^2)`` over all B x d entries, as the
  authors' code (``F.mse_loss``); the paper writes the per-sample squared norm, i.e. d
  times this. Computed from local sums added up with ``sum_over_ranks``.
- Z and Z' are gathered over all ranks (``twinfold.distributed.gather``) and centred;
- variance (eqs. 1-2): ``v(Z) = mean_j relu(gamma - sqrt(Var(z_j) + eps))``, ``Var``
  unbiased over the global batch;
- covariance (eqs. 3-4): ``c(Z) = (1/d) sum_{i != j} Cov(Z)_ij^2``,
  ``Cov(Z) = Z^T Z / (B - 1)`` of the centred Z;
- total (eq. 6): ``sim_coeff * s + std_coeff * V + cov_coeff * (c(Z) + c(Z'))`` with
  ``V = (v(Z) + v(Z')) / 2`` (``variance_convention="code"``, the authors' code, default)
  or ``V = v(Z) + v(Z')`` (``"paper"``, eq. 6 as printed).

Both collectives sum their incoming gradients over ranks in backward, so every rank
returns the global loss and its local input gradient is ``world_size`` x the gradient of
that loss (the DDP convention of :mod:`twinfold.distributed`). There is deliberately no
switch to use local-batch statistics: the value never depends on the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from twinfold import Loss, LossConfig
from twinfold.distributed import gather, global_count, sum_over_ranks


class VICRegLossConfig(LossConfig):
    """Variance-invariance-covariance regularisation (Bardes et al. 2022, eq. 6).

    ``variance_convention`` chooses how the two variance terms enter the total:
    ``"code"`` (default, the authors' code and the published results) uses
    ``std_coeff * (v(Z) + v(Z')) / 2``; ``"paper"`` uses ``std_coeff * (v(Z) + v(Z'))``
    as eq. 6 is printed. The two totals differ by exactly ``std_coeff * (v(Z) + v(Z')) / 2``.
    """

    name: Literal["vicreg"] = "vicreg"
    sim_coeff: float = Field(25.0, ge=0, description="lambda: weight of the invariance s")
    std_coeff: float = Field(25.0, ge=0, description="mu: weight of the variance term")
    cov_coeff: float = Field(1.0, ge=0, description="nu: weight of c(Z) + c(Z')")
    eps: float = Field(1e-4, gt=0, description="added to Var before the square root (eq. 1)")
    gamma: float = Field(1.0, gt=0, description="target standard deviation (eq. 1)")
    variance_convention: Literal["code", "paper"] = Field(
        "code",
        description="'code': std_coeff * (v(Z) + v(Z')) / 2 as the authors' code; "
        "'paper': std_coeff * (v(Z) + v(Z')) as eq. 6",
    )


def invariance(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error over the global batch and all dimensions (eq. 5, code form)."""
    count = global_count(a.shape[0], a.device) * a.shape[1]
    return sum_over_ranks((a - b).pow(2).sum()) / count


def gathered_centred(z: Tensor, check: bool = False) -> Tensor:
    """Z of all ranks (in rank order, autograd-aware) minus its global mean."""
    full = gather(z, check=check)
    if full.shape[0] < 2:
        raise ValueError(
            f"VICReg needs a global batch of at least 2 samples (unbiased variance); "
            f"got {full.shape[0]}"
        )
    return full - full.mean(0)


def variance(centred: Tensor, gamma: float = 1.0, eps: float = 1e-4) -> Tensor:
    """v(Z) = mean_j relu(gamma - sqrt(Var(z_j) + eps)), Var unbiased (eqs. 1-2)."""
    var = centred.pow(2).sum(0) / (centred.shape[0] - 1)
    return F.relu(gamma - torch.sqrt(var + eps)).mean()


def covariance(centred: Tensor) -> Tensor:
    """c(Z) = (1/d) sum_{i != j} Cov(Z)_ij^2, Cov = Z^T Z / (B - 1) (eqs. 3-4)."""
    cov = centred.T @ centred / (centred.shape[0] - 1)
    off = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return off / centred.shape[1]


class VICRegLoss(Loss):
    """Eq. 6 on the global batch. With the same tensors on both sides (target rule
    ``none``) the loss of views (0, 1) is computed once (for more views, averaged over the
    unordered pairs i < j; eq. 6 is symmetric). With a separate target branch (e.g. an
    EMA target and a predictor) it is averaged over the ordered pairs (online i,
    target j), i != j. Logged terms (unweighted, averaged over pairs): ``invariance`` s,
    ``variance`` V, ``covariance`` c(Z) + c(Z'); ``loss = sim_coeff * invariance +
    std_coeff * variance + cov_coeff * covariance``."""

    def __init__(self, cfg: VICRegLossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or VICRegLossConfig()

    def terms(self, online: Sequence[Tensor], target: Sequence[Tensor]) -> dict[str, Tensor]:
        self.check_views(online, target)
        cfg = self.cfg
        stats: dict[int, tuple[Tensor, Tensor]] = {}

        def var_cov(z: Tensor) -> tuple[Tensor, Tensor]:
            if id(z) not in stats:
                centred = gathered_centred(z, check=not stats)  # check batch sizes once
                stats[id(z)] = (variance(centred, cfg.gamma, cfg.eps), covariance(centred))
            return stats[id(z)]

        share = 0.5 if cfg.variance_convention == "code" else 1.0
        pairs = self.symmetric_view_pairs(online, target)
        loss = inv_sum = var_sum = cov_sum = online[0].new_zeros(())
        for a, b in pairs:
            s = invariance(a, b)
            (va, ca), (vb, cb) = var_cov(a), var_cov(b)
            v = share * (va + vb)
            c = ca + cb
            loss = loss + cfg.sim_coeff * s + cfg.std_coeff * v + cfg.cov_coeff * c
            inv_sum = inv_sum + s.detach()
            var_sum = var_sum + v.detach()
            cov_sum = cov_sum + c.detach()
        n = len(pairs)
        return {
            "loss": loss / n,
            "invariance": inv_sum / n,
            "variance": var_sum / n,
            "covariance": cov_sum / n,
        }


def build_vicreg_loss(cfg: VICRegLossConfig) -> VICRegLoss:
    return VICRegLoss(cfg)
