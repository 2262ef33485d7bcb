"""Stopping at a step boundary: preemption signals and non-finite values.

Each rank records SIGTERM / SIGUSR1 instead of dying. After every backward pass the
ranks exchange three flags (non-finite loss, non-finite gradients, stop signal) with one
tiny all-gather, so they all decide the same thing at the same step: a non-finite value
raises :class:`NonFiniteLossError` on every rank before the optimizer step; a signal on
any rank makes every rank finish the step, write one checkpoint and stop, and the command
line exits with :data:`PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from twinfold.signals import (
    PREEMPTED_EXIT_CODE,
    STOP_SIGNALS,
    ForwardSignals,
    StopSignals,
)


def gather_ranks(tensor: Tensor) -> Tensor:
    """``[world, *tensor.shape]``: every rank's ``tensor`` (a collective; ``[1, ...]``
    without a process group). Plain ``all_gather``, no autograd."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor.unsqueeze(0)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def grads_finite(module: nn.Module) -> Tensor:
    """A 0-d bool tensor: every gradient of ``module`` is finite (one device sync)."""
    peaks = [p.grad.detach().abs().amax() for p in module.parameters() if p.grad is not None]
    if not peaks:
        return torch.tensor(True)
    return torch.stack([x.float() for x in peaks]).isfinite().all()


@dataclass
class StepVerdict:
    """What all ranks agreed on after one backward pass."""

    bad_loss_ranks: list[int] = field(default_factory=list)
    bad_grad_ranks: list[int] = field(default_factory=list)
    signal_ranks: list[int] = field(default_factory=list)
    signal_number: int | None = None

    @property
    def non_finite(self) -> bool:
        return bool(self.bad_loss_ranks or self.bad_grad_ranks)

    @property
    def stop(self) -> bool:
        return bool(self.signal_ranks)

    @property
    def signal_name(self) -> str | None:
        if self.signal_number is None:
            return None
        return signal.Signals(self.signal_number).name

    def describe_non_finite(self, step: int, loss: float, rank: int, world: int) -> str:
        parts = []
        if self.bad_loss_ranks:
            parts.append(f"a non-finite loss on rank(s) {_ranks(self.bad_loss_ranks)}")
        if self.bad_grad_ranks:
            parts.append(f"non-finite gradients on rank(s) {_ranks(self.bad_grad_ranks)}")
        local = "" if math.isfinite(loss) else f" (this rank's loss: {loss})"
        return (
            f"{' and '.join(parts)} at step {step}; rank {rank} of {world} stopped before "
            f"the optimizer step, as did every rank{local}"
        )


def _ranks(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks)


def agree(
    fabric: Any, loss: Tensor, module: nn.Module, received: int | None, check_grads: bool = True
) -> StepVerdict:
    """Exchange this rank's flags with every rank (one all-gather of 3 integers)."""
    device = fabric.device
    bad_loss = ~torch.isfinite(loss.detach()).all()
    bad_grad = ~grads_finite(module) if check_grads else torch.tensor(False)
    local = torch.stack(
        [
            bad_loss.to(device).long(),
            bad_grad.to(device).long(),
            torch.tensor(received or 0, device=device),
        ]
    )
    flags = gather_ranks(local).cpu().tolist()
    verdict = StepVerdict(
        bad_loss_ranks=[r for r, f in enumerate(flags) if f[0]],
        bad_grad_ranks=[r for r, f in enumerate(flags) if f[1]],
        signal_ranks=[r for r, f in enumerate(flags) if f[2]],
    )
    if verdict.signal_ranks:
        verdict.signal_number = int(flags[verdict.signal_ranks[0]][2])
    return verdict


def worker_failure(exc: BaseException) -> str | None:
    """The twinfold error inside a failed spawned worker (``ddp_spawn``) as one line, or
    ``None`` when ``exc`` is not a worker failure."""
    try:
        from torch.multiprocessing import ProcessExitedException, ProcessRaisedException
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, ProcessRaisedException):
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        for line in reversed(lines):
            if line.startswith("twinfold.errors."):
                return f"(rank {exc.error_index}) {line.split(': ', 1)[-1]}"
        return f"(rank {exc.error_index}) {lines[-1] if lines else exc}"
    if isinstance(exc, ProcessExitedException):
        return f"worker process {exc.error_index} ended unexpectedly: {exc}"
    return None


__all__ = [
    "PREEMPTED_EXIT_CODE",
    "STOP_SIGNALS",
    "ForwardSignals",
    "StepVerdict",
    "StopSignals",
    "agree",
    "gather_ranks",
    "grads_finite",
    "worker_failure",
]
