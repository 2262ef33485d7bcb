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
  of twinfold's encoder (the step of ``step.py``'s "lightly-built" row).

All rows use the same data-loader workers (``--workers``, default the preset's
``data.num_workers``) and kNN evaluation is off (``evaluation.every_n_epochs=0``,
``evaluation.at_end=false``; also no plots, no TensorBoard, no progress bar). twinfold
still writes its checkpoint at the end of each epoch, as by default. Every run trains
``--epochs`` + 1 epochs and the first is left out (start-up, first-call costs): for
twinfold the seconds come from its ``metrics.csv``, logged once per epoch
(``trainer.log_every`` = steps per epoch), whose ``images_per_s`` covers the time from
the previous row to the end of the epoch's last step; for lightly from the clock at the
end of each epoch. The table gives the median seconds per epoch and the ratio to lightly
(issue 4's target for twinfold: <= 0.6x).

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


def time_lightly(cfg: RunConfig, epochs: int, workers: int, seed: int = 0) -> Timing:
    """The lightly loop on ``cfg``'s data, sizes, views and optimizer for ``epochs``
    epochs; the seconds of each epoch by the clock (fp32, one process)."""
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
    seconds, last = [], time.perf_counter()
    for _ in range(epochs):
        for batch in loader:
            built(batch)
            schedule.step()
        now = time.perf_counter()
        seconds.append(now - last)
        last = now
    return Timing(seconds, {"lightly": built.description, "precision": "fp32 (no autocast)"})


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
        lightly_name = "lightly, fp32"
        if lightly is not None:
            times[lightly_name] = []
        settings: dict[str, dict[str, object]] = {}
        for _ in range(args.repeats):
            for name, cfg in configs.items():
                timing = time_twinfold(cfg)
                times[name] += timing.epoch_seconds[1:]
                settings[name] = timing.settings
            if lightly is not None:
                timing = time_lightly(first, epochs + 1, workers)
                times[lightly_name] += timing.epoch_seconds[1:]
                settings[lightly_name] = timing.settings

    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = medians.get(lightly_name, math.nan)
    header = f"{'run':<38}{'s/epoch':>9}{'range':>15}{'vs lightly':>12}"
    print(header + "\n" + "-" * len(header))
    for name, t in times.items():
        ratio = "" if math.isnan(ref) else f"{medians[name] / ref:.2f}x"
        spread = f"{min(t):.2f}-{max(t):.2f}"
        print(f"{name:<38}{medians[name]:>9.2f}{spread:>15}{ratio:>12}")
    if lightly is None:
        print(f"{lightly_name:<38}{'skipped':>9}  lightly not importable")
        print("  (pip install -e core[benchmarks])")
    print()
    for name, used in settings.items():
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in used.items()))
    if lightly is not None:
        default = next(iter(configs))
        print(
            f"\ntwinfold (default) / lightly = {medians[default] / ref:.2f}x "
            "(issue 4 target <= 0.6x)"
        )
    return times


if __name__ == "__main__":
    main()
