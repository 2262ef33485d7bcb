"""End to end: seconds per training epoch of the small BYOL preset (``byol-small``: the
embedded digits at 16 px, small CNN, 512-wide heads with 128-d outputs, batch 256, LARS)
in twinfold's training loop and in a loop built from lightly's parts with the same
sizes, side by side in one run.

Rows:

- twinfold, as configured by default: ``twinfold.train`` on the preset with the
  defaults resolved at run time (the view engine and precision used are printed);
- twinfold forced to ``data.view_engine=per-sample`` and ``trainer.precision=32-true``;
- lightly, fp32: lightly's ``BYOLTransform`` with the preset's view parameters (per
  sample, on PIL images) in a DataLoader over the same digits, lightly's BYOL heads,
  ``NegativeCosineSimilarity`` symmetrised as BYOL's eq. 4, ``update_momentum`` at
  ``cosine_schedule`` (Grill et al. 2020, sec. 3.2), lightly's LARS with the preset's
  rate, weight decay and warm-up + cosine schedule (``CosineWarmupScheduler``), on a copy
  of twinfold's encoder (the step of ``step.py``'s "lightly-built" row);
- lightly, bf16 + channels_last: the same loop with the two switches twinfold's default
  turns on on this CPU (bf16 autocast, channels_last model and inputs), as a competent
  lightly user would: the like-for-like baseline of twinfold's default row.

All rows use the same data-loader workers (``--workers``, default the preset's
``data.num_workers``) and kNN evaluation is off (``evaluation.every_n_epochs=0``,
``evaluation.at_end=false``; also no plots, no TensorBoard, no progress bar). twinfold
still writes its checkpoint at the end of each epoch, as by default. Every run trains
``--epochs`` + 1 epochs and the first is left out (start-up, first-call costs): for
twinfold the seconds come from its ``metrics.csv``, logged once per epoch
(``trainer.log_every`` = steps per epoch), whose ``images_per_s`` covers the time from
the previous row to the end of the epoch's last step; for lightly from the clock at the
end of each epoch. The table gives the median seconds per epoch and the ratio of each row
to the lightly row of the same precision (fp32 rows to lightly fp32; twinfold's default,
bf16 here, to lightly bf16 + channels_last); the closing lines give both ratios of the
default row (issue 20's target: <= 0.5x the like-for-like lightly loop).

Run (an epoch is 5 steps of 256 images; the three rows take about 1 minute)::

    python examples/benchmarks/end_to_end.py                # 3 timed epochs per row
    python examples/benchmarks/end_to_end.py --workers 2    # all rows with 2 workers
    python examples/benchmarks/end_to_end.py --epochs 5 --repeats 2
    python examples/benchmarks/end_to_end.py --quick        # smoke check: 1 timed epoch
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch
from torch.utils.data import DataLoader

import twinfold
from twinfold.config import RunConfig
from twinfold.data import build_sources
from twinfold.method import build_method
from twinfold.optim import lr_scale

PRESET = "byol-small"
#: what every timed twinfold run sets: no kNN evaluation, no extra outputs
TIMING = [
    "evaluation.every_n_epochs=0",
    "evaluation.at_end=false",
    "run.plots=false",
    'run.tensorboard="off"',
    "trainer.progress_bar=false",
    "run.overwrite=true",
]
FORCED = ["data.view_engine=per-sample", "trainer.precision=32-true"]


def sibling(name: str) -> ModuleType:
    """Another script of examples/benchmarks (the folder is not a package), imported once."""
    key = f"twinfold_benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclass
class Timing:
    """Seconds of every epoch of one run (the first included) and what the run used."""

    epoch_seconds: list[float]
    settings: dict[str, object] = field(default_factory=dict)
    data_seconds: list[float] = field(default_factory=list)
    """lightly: seconds of each epoch spent waiting for the loader's next batch (its views)"""


def steps_per_epoch(cfg: RunConfig) -> int:
    """Batches per epoch of a one-process run: training images // batch (drop-last)."""
    return len(build_sources(cfg.data).train) // cfg.data.batch_size


def timed_config(overrides: list[str], epochs: int, output_dir: Path, name: str) -> RunConfig:
    """The preset with ``overrides``, trained for ``epochs`` epochs with :data:`TIMING` and
    one metrics row per epoch."""
    base = [*TIMING, f"trainer.epochs={epochs}", f"run.output_dir={output_dir}"]
    cfg = twinfold.load_config({"preset": PRESET}, [*base, *overrides, f"run.name={name}"])
    steps = steps_per_epoch(cfg)
    return twinfold.load_config(cfg, [f"trainer.log_every={steps}"])


def epoch_seconds_from_metrics(path: Path, batch: int) -> list[float]:
    """Seconds per epoch from a run's ``metrics.csv``: each row's window holds
    ``(step - previous step) x batch`` images at ``images_per_s``; the windows of an
    epoch are added up."""
    with path.open(newline="", encoding="utf-8") as file:
        rows = [r for r in csv.DictReader(file) if r.get("images_per_s")]
    seconds: dict[int, float] = {}
    previous = 0
    for row in rows:
        step, epoch = int(row["step"]), int(float(row["epoch"]))
        window = (step - previous) * batch / float(row["images_per_s"])
        seconds[epoch] = seconds.get(epoch, 0.0) + window
        previous = step
    return [seconds[e] for e in sorted(seconds)]


def time_twinfold(cfg: RunConfig) -> Timing:
    """Train ``cfg`` with ``twinfold.train``; the seconds of each epoch from its metrics,
    and the settings the run used, read back from the run's ``config.yaml`` (where
    twinfold records ``auto`` settings resolved): the view engine, the precision and
    any memory-format or compile switch (the view engine from the run's plan)."""
    plans = []
    result = twinfold.train(cfg, on_start=plans.append)
    seconds = epoch_seconds_from_metrics(result.run_dir / "metrics.csv", cfg.data.batch_size)
    used = twinfold.load_config(result.run_dir / "config.yaml")
    trainer = {
        f"trainer.{k}": v
        for k, v in used.trainer.model_dump().items()
        if k == "precision" or any(w in k for w in ("compile", "channels", "memory_format"))
    }
    return Timing(seconds, {"data.view_engine": plans[0].view_engine, **trainer})


LIGHTLY_FP32, LIGHTLY_FAST = "lightly, fp32", "lightly, bf16 + channels_last"


def time_lightly(
    cfg: RunConfig, epochs: int, workers: int, seed: int = 0, fast: bool = False
) -> Timing:
    """The lightly loop on ``cfg``'s data, sizes, views and optimizer for ``epochs``
    epochs; the seconds of each epoch by the clock (one process; fp32, or with ``fast``
    bf16 autocast + channels_last as :func:`step.variant` applies them)."""
    step_module, augmentation = sibling("step"), sibling("augmentation")
    torch.manual_seed(seed)
    from lightly.utils.scheduler import CosineWarmupScheduler

    size = cfg.data.image_size
    views = cfg.views_config()
    transform = augmentation.lightly_byol_transform(views, size)
    source = build_sources(cfg.data).train
    images = torch.stack([source.load(i) for i in range(len(source))])
    loader = DataLoader(
        augmentation.PILViews(images, transform),
        batch_size=cfg.data.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
    )
    steps = len(loader)
    total = epochs * steps
    lr = cfg.optimizer.lr * lr_scale(cfg.schedule, cfg.data.batch_size)
    method = build_method(cfg.method)
    built = step_module.LightlyStep(method, "byol", cfg, lr, total_steps=total)
    warmup = min(round(cfg.schedule.warmup_epochs * steps), total)
    schedule = CosineWarmupScheduler(
        built.opt, warmup, total, end_value=cfg.schedule.final_lr_ratio
    )
    go = step_module.variant(built, built.modules(), fast)
    seconds, waiting, last = [], [], time.perf_counter()
    for _ in range(epochs):
        batches, waited = iter(loader), 0.0
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            go(batch)
            schedule.step()
        now = time.perf_counter()
        seconds.append(now - last)
        waiting.append(waited)
        last = now
    precision = "bf16 autocast + channels_last" if fast else "fp32 (no autocast)"
    return Timing(seconds, {"lightly": built.description, "precision": precision}, waiting)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run")
    parser.add_argument("--quick", action="store_true", help="one timed epoch (smoke check)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each row, in turn")
    parser.add_argument(
        "--workers", type=int, default=None, help="data-loader workers of every row"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra twinfold config override for both twinfold rows (repeatable)",
    )
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    epochs = 1 if args.quick else args.epochs
    lightly = sibling("step").lightly_version()

    with tempfile.TemporaryDirectory() as tmp:
        out = args.output_dir or Path(tmp)
        extra = list(args.overrides)
        if args.workers is not None:
            extra.append(f"data.num_workers={args.workers}")
        variants = {
            "twinfold, as configured by default": extra,
            "twinfold, per-sample views, 32-true": [*extra, *FORCED],
        }
        configs = {
            name: timed_config(o, epochs + 1, out, f"e2e-{i}")
            for i, (name, o) in enumerate(variants.items())
        }
        first = next(iter(configs.values()))
        workers = first.data.num_workers
        print(
            f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}, lightly {lightly or 'not installed'}"
        )
        print(
            f"{PRESET}: {len(build_sources(first.data).train)} training digits at "
            f"{first.data.image_size} px, batch {first.data.batch_size}, "
            f"{steps_per_epoch(first)} steps per epoch, {workers} data-loader workers; "
            f"{epochs + 1} epochs per run, the first not timed, {args.repeats} run(s) per row\n"
        )
        times: dict[str, list[float]] = {name: [] for name in configs}
        lightly_rows = {LIGHTLY_FP32: False, LIGHTLY_FAST: True}
        if lightly is not None:
            times.update({name: [] for name in lightly_rows})
        settings: dict[str, dict[str, object]] = {}
        for _ in range(args.repeats):
            for name, cfg in configs.items():
                timing = time_twinfold(cfg)
                times[name] += timing.epoch_seconds[1:]
                settings[name] = timing.settings
            for name, fast in lightly_rows.items() if lightly is not None else ():
                timing = time_lightly(first, epochs + 1, workers, fast=fast)
                times[name] += timing.epoch_seconds[1:]
                settings[name] = timing.settings
    print_table(times, settings, next(iter(configs)))
    return times


def print_table(
    times: dict[str, list[float]], settings: dict[str, dict[str, object]], default: str
) -> None:
    """The median seconds per epoch of each row and its ratio to the lightly row of the
    same precision (as ``settings`` record it), then the default row's two ratios."""
    medians = {name: statistics.median(t) for name, t in times.items()}
    header = f"{'run':<38}{'s/epoch':>9}{'range':>15}{'vs lightly':>12}"
    print(header + "\n" + "-" * len(header))
    for name, t in times.items():
        precision = str(settings.get(name, {}).get("trainer.precision", ""))
        fast = name == LIGHTLY_FAST or "bf16" in precision
        ref = medians.get(LIGHTLY_FAST if fast else LIGHTLY_FP32, math.nan)
        ratio = "" if math.isnan(ref) else f"{medians[name] / ref:.2f}x"
        spread = f"{min(t):.2f}-{max(t):.2f}"
        print(f"{name:<38}{medians[name]:>9.2f}{spread:>15}{ratio:>12}")
    if LIGHTLY_FP32 not in medians:
        print(f"{'lightly rows':<38}{'skipped':>9}  lightly not importable")
        print("  (pip install -e core[benchmarks])")
    print()
    for name, used in settings.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in used.items()))
    if LIGHTLY_FP32 in medians:
        mine = medians[default]
        print(
            f"\ntwinfold (default) / lightly bf16 + channels_last = "
            f"{mine / medians[LIGHTLY_FAST]:.2f}x (like for like; issue 20 target <= 0.5x)"
            f"\ntwinfold (default) / lightly fp32 = {mine / medians[LIGHTLY_FP32]:.2f}x "
            "(switches on twinfold's side only; issue 4's ratio)"
        )


if __name__ == "__main__":
    main()
