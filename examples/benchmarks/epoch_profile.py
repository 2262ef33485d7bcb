"""Where an epoch of ``byol-small`` goes: twinfold's loop split into data loading, views,
forward, backward, optimizer, target update, logging and checkpointing (from cProfile's
cumulative times of the loop's own calls), and lightly's loop of ``end_to_end.py`` split
into waiting for its views and its step, side by side in one run.

The last lines give the ceiling this sets on the end-to-end ratio: with twinfold's views,
logging and checkpointing free, twinfold's epoch would still hold its forward, backward
and optimizer, which compute the same model at the same precision as lightly's step.

    python examples/benchmarks/epoch_profile.py                # about 1 minute on 2 cores
    python examples/benchmarks/epoch_profile.py --workers 2
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import tempfile
from pathlib import Path

import end_to_end as e2e  # the sibling script: its configs and lightly loop
import torch

import twinfold
from twinfold.config import RunConfig

#: (file name, function) of the loop's calls -> part of the epoch
PARTS = {
    ("dataloader.py", "__next__"): "data loading (crops, collate)",
    ("training_data.py", "make_views"): "views (the batched engine)",
    ("method.py", "training_step"): "forward (online + target, loss)",
    ("fabric.py", "backward"): "backward",
    ("stopping.py", "agree"): "finiteness and signal check",
    ("loop.py", "_clip_gradients"): "gradient clipping",
    ("optim.py", "step"): "optimizer step",
    ("method.py", "after_optimizer_step"): "target update",
    ("monitoring.py", "after_step"): "logging",
    ("loop.py", "_save"): "checkpointing",
}
EPOCH = ("loop.py", "_epoch")
COMPUTE = ("forward (online + target, loss)", "backward", "optimizer step")


def cumulative(stats: pstats.Stats) -> dict[tuple[str, str], float]:
    """Cumulative seconds per (file name, function name), summed over equal names."""
    out: dict[tuple[str, str], float] = {}
    for (path, _, func), (_, _, _, cum, _) in stats.stats.items():  # type: ignore[attr-defined]
        key = (Path(path).name, func)
        out[key] = out.get(key, 0.0) + cum
    return out


def twinfold_parts(cfg: RunConfig) -> tuple[dict[str, float], float, str]:
    """Seconds per part of the epochs of ``twinfold.train(cfg)``, the epochs' total, and
    the precision and memory format the run resolved (from its ``config.yaml``)."""
    profile = cProfile.Profile()
    profile.enable()
    result = twinfold.train(cfg)
    profile.disable()
    used = twinfold.load_config(result.run_dir / "config.yaml").trainer
    switches = f"{used.precision}, channels_last={used.channels_last}"
    cum = cumulative(pstats.Stats(profile))
    parts: dict[str, float] = {}
    for key, part in PARTS.items():
        parts[part] = parts.get(part, 0.0) + cum.get(key, 0.0)
    total = cum[EPOCH]
    parts["other (the loop's own Python)"] = total - sum(parts.values())
    return parts, total, switches


def print_parts(title: str, parts: dict[str, float], total: float, epochs: int) -> None:
    print(f"{title}: {total / epochs:.2f} s per epoch")
    for part, seconds in parts.items():
        print(f"  {part:<36}{seconds / epochs:>7.3f} s  {100 * seconds / total:>5.1f}%")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run")
    parser.add_argument("--workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    overrides = [*args.overrides, f"data.num_workers={args.workers}"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = e2e.timed_config(overrides, args.epochs, Path(tmp), "profile")
        parts, total, switches = twinfold_parts(cfg)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; {e2e.PRESET}, {args.epochs} epochs of "
        f"{e2e.steps_per_epoch(cfg)} steps, {args.workers} data-loader workers, "
        f"twinfold resolved {switches}\n"
    )
    print_parts("twinfold, as configured by default", parts, total, args.epochs)
    result = {"twinfold": total / args.epochs}
    if e2e.sibling("step").lightly_version() is None:
        print("\nlightly not importable: its split is skipped (pip install -e core[benchmarks])")
        return result
    lightly = e2e.time_lightly(cfg, args.epochs, args.workers, fast=True)
    epoch, views = sum(lightly.epoch_seconds), sum(lightly.data_seconds)
    split = {"waiting for views": views, "step (forward, backward, optimizer)": epoch - views}
    print()
    print_parts(e2e.LIGHTLY_FAST, split, epoch, args.epochs)
    compute = sum(parts[p] for p in COMPUTE)
    result.update(lightly=epoch / args.epochs, ceiling=compute / epoch)
    print(
        f"\ntwinfold / lightly, whole epochs: {total / epoch:.2f}x; with twinfold's views, "
        f"data, logging and checkpointing free: {compute / epoch:.2f}x (the ceiling)"
    )
    return result


if __name__ == "__main__":
    main()
