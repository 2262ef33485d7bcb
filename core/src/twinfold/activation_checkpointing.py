"""Activation checkpointing for any network built from ``nn.Sequential`` stages.

Each *block* (a child with parameters of an ``nn.Sequential`` that is not itself an
``nn.Sequential``: a ResNet bottleneck, a ConvNeXt block, a ViT encoder layer) keeps only
its input during the forward pass and recomputes its activations in the backward pass
(``torch.utils.checkpoint``, non-reentrant). Parameter names, state dicts, ``deepcopy``
and pickling are unchanged: the block's ``forward`` is replaced on the instance only.

Batch-norm running statistics inside a block are NOT updated a second time by the
recomputation (momentum 0 and the batch counter restored while it runs), so a
checkpointed run keeps exactly the statistics, outputs and gradients of a plain one.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_blocks", "checkpointed_blocks"]


@contextmanager
def _frozen_running_stats(block: nn.Module) -> Iterator[None]:
    """Batch norms of ``block`` leave their running statistics and counter as they were."""
    norms = [m for m in block.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def _checkpointed_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    plain = type(self).forward
    if not (self.training and torch.is_grad_enabled()):
        return plain(self, *args, **kwargs)
    return checkpoint(
        plain,
        self,
        *args,
        use_reentrant=False,
        context_fn=lambda: (nullcontext(), _frozen_running_stats(self)),
        **kwargs,
    )


def _blocks(module: nn.Module) -> Iterator[nn.Module]:
    for child in module.children():
        is_block = (
            isinstance(module, nn.Sequential)
            and not isinstance(child, nn.Sequential)
            and any(True for _ in child.parameters())
        )
        if is_block:
            yield child
        else:
            yield from _blocks(child)


def checkpoint_blocks(network: nn.Module) -> int:
    """Checkpoint every block of ``network`` (see the module docstring); returns how many.
    Raises ``ValueError`` for a network without ``nn.Sequential`` stages."""
    blocks = list(_blocks(network))
    if not blocks:
        raise ValueError(
            f"{type(network).__name__} has no nn.Sequential stages to checkpoint block by block"
        )
    for block in blocks:
        block.forward = types.MethodType(_checkpointed_forward, block)
    return len(blocks)


def checkpointed_blocks(network: nn.Module) -> list[str]:
    """Names of the sub-modules of ``network`` whose forward is checkpointed."""
    return [
        name
        for name, m in network.named_modules()
        if getattr(m.__dict__.get("forward"), "__func__", None) is _checkpointed_forward
    ]
