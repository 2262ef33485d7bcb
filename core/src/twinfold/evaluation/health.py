"""Collapse diagnostics of a batch of embeddings, computed over the global batch.

* ``embedding_std``: mean over dimensions of the per-dimension standard deviation of the
  L2-normalised embeddings (SimSiam, Chen & He 2021, Sec. 4.1). A collapsed output gives 0;
  a spread-out one (isotropic Gaussian) gives about ``1/sqrt(dim)``, so the loop also logs
  ``embedding_std_ratio = embedding_std * sqrt(dim)`` (about 1 when healthy).
* ``rankme``: the effective rank of the embedding matrix (Garrido et al. 2023, eq. 1):
  ``exp(-sum_k p_k log p_k)`` with ``p_k = sigma_k / ||sigma||_1 + eps`` over its singular
  values; from 1 (rank-one collapse) to ``min(batch, dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from twinfold import distributed as D

#: ``embedding_std_ratio`` under this value counts as collapse (healthy runs stay near 1)
COLLAPSE_STD_RATIO = 0.1


def embedding_std(z: Tensor) -> Tensor:
    """Mean per-dimension std of the L2-normalised rows of ``z`` [batch, dim]."""
    zn = torch.nn.functional.normalize(z.float(), dim=1)
    return zn.std(dim=0).mean()


def rankme(z: Tensor, eps: float = 1e-7) -> Tensor:
    """Effective rank of ``z`` [batch, dim] (Garrido et al. 2023, eq. 1)."""
    sigma = torch.linalg.svdvals(z.float())
    p = sigma / sigma.sum().clamp_min(1e-12) + eps
    return torch.exp(-(p * p.log()).sum())


@torch.no_grad()
def health_metrics(z: Tensor) -> dict[str, float]:
    """Collapse diagnostics of ``z`` gathered from all ranks (call it on every rank)."""
    full = D.gather(z.detach()) if D.is_distributed() else z.detach()
    std = float(embedding_std(full))
    return {
        "health/embedding_std": std,
        "health/embedding_std_ratio": std * math.sqrt(full.shape[1]),
        "health/rankme": float(rankme(full)),
    }


@dataclass
class CollapseWatch:
    """Warns once when ``embedding_std_ratio`` stays under the threshold for ``patience``
    consecutive logged steps."""

    threshold: float = COLLAPSE_STD_RATIO
    patience: int = 3
    _below: int = 0
    warned: bool = False

    def update(self, metrics: dict[str, float], step: int) -> str | None:
        ratio = metrics.get("health/embedding_std_ratio")
        if ratio is None or self.warned:
            return None
        self._below = self._below + 1 if ratio < self.threshold else 0
        if self._below < self.patience:
            return None
        self.warned = True
        return (
            f"representation collapse suspected at step {step}: the std of the normalised "
            f"embeddings is {ratio:.3f} x 1/sqrt(dim) (healthy: about 1; rank-me "
            f"{metrics.get('health/rankme', float('nan')):.1f}). Try a lower optimizer.lr or "
            "a longer warm-up, stronger augmentations, a larger batch, and check the method's "
            "anti-collapse parts (predictor and its learning rate, target tau, loss "
            f"coefficients)."
        )
