"""The random number generator states a checkpoint carries, per rank: torch (CPU and the
current CUDA device), numpy, Python ``random`` and the data loader's private generator
(whose draws seed the data-loader workers)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import Tensor

from twinfold.stopping import gather_ranks


def rng_state(loader_generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
    """This process's generator states as tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    assert kind == "MT19937"
    version, py_state, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor(  # [has a cached value, the value]
            [0.0, 0.0] if py_gauss is None else [1.0, py_gauss], dtype=torch.float64
        ),
    }
    if loader_generator is not None:
        out["loader"] = loader_generator.get_state()
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Tensor], loader_generator: torch.Generator | None) -> None:
    """Restore what :func:`rng_state` captured (one rank's row)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    np_vals = state["numpy"].tolist()
    gauss = float(state["numpy_gauss"][0])
    np.random.set_state(
        ("MT19937", np.array(np_vals[:624], dtype=np.uint32), np_vals[624], np_vals[625], gauss)
    )
    py = state["python"].tolist()
    has_gauss, py_gauss = state["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), py_gauss if has_gauss else None))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"].to(torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu())


def gather_rng(fabric: Any, local: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every rank's :func:`rng_state`, stacked ``[world, ...]`` (a collective)."""
    return {k: gather_ranks(v.to(fabric.device)).cpu() for k, v in local.items()}


def restore_rank_rng(
    rng: dict[str, Tensor], rank: int, loader_generator: torch.Generator | None
) -> None:
    """Restore this rank's row of a checkpoint's stacked states (a run resumed on more
    ranks than it was saved with reuses rows cyclically)."""
    saved_world = min((v.shape[0] for v in rng.values()), default=0)
    if saved_world:
        row = rank % saved_world
        set_rng_state({k: v[row].clone() for k, v in rng.items()}, loader_generator)


__all__ = ["gather_rng", "restore_rank_rng", "rng_state", "set_rng_state"]
