"""DirectPred's predictor (Tian, Chen & Ganguli 2021, "Understanding self-supervised
learning dynamics without contrastive pairs", ICML, arXiv:2102.06810, section 5).

The predictor is linear, ``p = W_p f``, and its weight is never learned: it is set from a
running estimate ``F`` of the correlation matrix of its own inputs ``f`` (the online
projector outputs):

- Eq. 19: ``F <- rho F + (1 - rho) E_B[f f^T]`` once per training step, ``E_B`` over the
  whole global batch of every view of the step;
- Eq. 18: with ``F = U diag(s) U^T``: ``W_p = U diag(p) U^T``,
  ``p_j = sqrt(s_j) / max_j sqrt(s_j) + eps``, recomputed every ``freq`` steps.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from twinfold import HeadConfig
from twinfold.distributed import global_count, sum_over_ranks


class DirectPredConfig(HeadConfig):
    """A linear predictor set directly from the eigen-decomposition of ``F``. Its output
    dimension is its input dimension (``W_p`` is square)."""

    name: Literal["directpred"] = "directpred"
    rho: float = Field(0.3, ge=0, lt=1, description="EMA factor of F (Eq. 19)")
    eps: float = Field(0.01, ge=0, description="added to every normalised eigenvalue (Eq. 18)")
    freq: int = Field(1, ge=1, description="recompute W_p every this many steps")


def correlation_update(corr: Tensor, batch_corr: Tensor, rho: float) -> Tensor:
    """Eq. 19: ``rho * F + (1 - rho) * E_B[f f^T]``."""
    return rho * corr + (1.0 - rho) * batch_corr


def directpred_weight(corr: Tensor, eps: float) -> Tensor:
    """Eq. 18: ``U diag(p) U^T`` with ``p_j = sqrt(s_j) / max_j sqrt(s_j) + eps`` for the
    eigen-decomposition ``corr = U diag(s) U^T``.

    ``corr`` is symmetric positive semi-definite up to rounding: eigenvalues below zero
    are clipped to zero (as in the authors' code). An all-zero ``corr`` (a collapsed
    batch) gives ``eps * I``.
    """
    s, u = torch.linalg.eigh(corr.double())
    root = s.clamp(min=0).sqrt()
    top = root.max()
    p = (root / top if top > 0 else torch.zeros_like(root)) + eps
    return ((u * p) @ u.T).to(corr.dtype)


class DirectPredictor(nn.Module):
    """``f -> f @ W_p^T`` with ``W_p`` a buffer, never a parameter.

    In training mode each forward call that needs gradients adds ``sum f f^T`` and the
    sample count of its (global) batch to the step's pending statistics and registers a
    hook on its output that marks the step's backward pass. The next training forward
    after a backward pass folds the pending statistics into ``F`` (Eq. 19; the first
    step's statistics initialise ``F``) and, every ``freq`` steps, recomputes ``W_p``
    (Eq. 18) before it is used. So one optimizer step uses one ``W_p``, computed from the
    steps before it, whatever the number of views. Every piece of state is a buffer: it
    is checkpointed and restored with the online network.
    """

    def __init__(self, cfg: DirectPredConfig) -> None:
        super().__init__()
        if cfg.in_dim is None:
            raise ValueError(
                "head 'directpred' needs in_dim (the method fills it from the projector; "
                "pass in_dim=... when building it by hand)"
            )
        d = cfg.in_dim
        self.rho, self.eps, self.freq = cfg.rho, cfg.eps, cfg.freq
        self.out_dim: int = d
        weight = torch.empty(d, d)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.register_buffer("weight", weight)
        self.register_buffer("corr", torch.zeros(d, d))
        self.register_buffer("pending_sum", torch.zeros(d, d))
        self.register_buffer("pending_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("stepped", torch.zeros((), dtype=torch.bool))

    def forward(self, f: Tensor) -> Tensor:
        if f.ndim != 2 or f.shape[1] != self.out_dim:
            raise ValueError(
                f"directpred predictor expects [batch, {self.out_dim}] inputs, got "
                f"{tuple(f.shape)}; its in_dim must be the projector's out_dim"
            )
        recording = self.training and torch.is_grad_enabled() and f.requires_grad
        if recording:
            if bool(self.stepped):
                self.fold()
            self.record(f)
        out = f @ self.weight.to(f.dtype).T
        if recording:
            out.register_hook(self._mark_stepped)
        return out

    @torch.no_grad()
    def record(self, f: Tensor) -> None:
        """Add ``sum f f^T`` and the count of the global batch to the pending statistics
        (a collective under ``torch.distributed``: every rank must call it)."""
        x = f.detach().to(self.pending_sum.dtype)  # float32 statistics under autocast
        self.pending_sum += sum_over_ranks(x.T @ x)
        self.pending_count += global_count(x.shape[0], x.device)

    @torch.no_grad()
    def fold(self) -> None:
        """End of a step: fold its statistics into ``F`` (Eq. 19) and, every ``freq``
        steps, set ``W_p`` from ``F`` (Eq. 18)."""
        if int(self.pending_count) > 0:
            batch_corr = self.pending_sum / self.pending_count
            if int(self.steps) == 0:  # the first step initialises F (authors' code)
                self.corr.copy_(batch_corr)
            else:
                self.corr.copy_(correlation_update(self.corr, batch_corr, self.rho))
            if int(self.steps) % self.freq == 0:
                self.weight.copy_(directpred_weight(self.corr, self.eps))
            self.steps += 1
        self.pending_sum.zero_()
        self.pending_count.zero_()
        self.stepped.fill_(False)

    def _mark_stepped(self, grad: Tensor) -> None:
        self.stepped.fill_(True)

    def extra_repr(self) -> str:
        return f"dim={self.out_dim}, rho={self.rho}, eps={self.eps}, freq={self.freq}"


def build_directpred(cfg: DirectPredConfig) -> DirectPredictor:
    return DirectPredictor(cfg)
