"""Autograd-aware collectives used by the losses. Works with any initialised
``torch.distributed`` process group (Fabric's, torchrun's, a user's); no Fabric needed.

Convention (the "DDP convention"): every rank returns the loss of the GLOBAL batch, and
the gradient with respect to its LOCAL inputs is ``world_size`` times the gradient of that
global loss. DistributedDataParallel then averages parameter gradients over ranks, which
gives exactly the gradient of one process on the whole batch. Both collectives below
therefore SUM the incoming gradients over ranks in backward (the upstream gradient is
identical on every rank because every rank computes the same global loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.rank, ctx.size = dist.get_rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


class _SumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _check_equal_batches(x: Tensor) -> None:
    sizes = torch.tensor([x.shape[0]], device=x.device)
    low, high = sizes.clone(), sizes.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise RuntimeError(
            f"rank {rank()} holds {x.shape[0]} samples but batch sizes differ across ranks "
            f"({low.item()}..{high.item()}); use equal per-rank batches (drop_last=True)"
        )


def gather(x: Tensor, check: bool = False) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order, with gradients
    flowing back to every rank's slice (summed over ranks; see the module docstring)."""
    if not is_distributed():
        return x
    if check:
        _check_equal_batches(x)
    return _GatherWithGrad.apply(x)


def sum_over_ranks(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks with an autograd-aware all-reduce (backward sums too)."""
    if not is_distributed():
        return x
    return _SumWithGrad.apply(x)


def global_count(n: int, device: torch.device | None = None) -> int:
    """Sum of a per-rank count over ranks (e.g. the global batch size)."""
    if not is_distributed():
        return n
    t = torch.tensor([n], device=device, dtype=torch.long)
    dist.all_reduce(t)
    return int(t.item())


def global_mean(local_sum: Tensor, local_count: int) -> Tensor:
    """Mean over the global batch from per-rank sums and counts (autograd-aware)."""
    total = global_count(local_count, local_sum.device)
    return sum_over_ranks(local_sum) / total


def mean_over_ranks(x: Tensor) -> Tensor:
    """Average of a detached value over ranks, for logging."""
    if not is_distributed():
        return x.detach()
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / dist.get_world_size()
