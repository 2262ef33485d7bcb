"""What a run reports while it trains (rank 0 writes): one metrics row every
``trainer.log_every`` steps (loss terms, target-rule values, learning rates, speed, and
the embedding health metrics, which every rank computes together) to metrics.csv,
TensorBoard and the trackers of ``run.trackers``, the collapse warning and the progress
bar."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from twinfold.config import RunConfig
from twinfold.evaluation.health import CollapseWatch, health_metrics
from twinfold.method import StepOutput
from twinfold.metric_sinks import MetricSinks, default_loggers, rows_until
from twinfold.rundir import RunDir
from twinfold.trackers import open_trackers


def group_lrs(optimizer: Any) -> dict[str, float]:
    """The learning rate of every parameter group, by the group's name."""
    return {f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}


def last_logged_loss(run: RunDir, step: int) -> dict[str, float]:
    """``{"loss": ...}`` of the last row logged up to ``step`` in the run's metrics (what a
    run resumed at ``step`` reports as its last loss before it logs one), else empty."""
    losses = [row["loss"] for row in rows_until(run.path, step) if "loss" in row]
    return {"loss": float(losses[-1])} if losses else {}


class StepMonitor:
    """Metrics rows, the collapse watch and the progress bar of one run."""

    def __init__(
        self, cfg: RunConfig, run: RunDir, *, rank_zero: bool, step: int, total_steps: int
    ) -> None:
        self.cfg = cfg
        self.logger = (
            MetricSinks(
                [
                    *default_loggers(run.path, cfg.run.tensorboard, resumed_from=step),
                    *open_trackers(cfg, run.path, resumed_from=step),
                ]
            )
            if rank_zero
            else None
        )
        self.watch = CollapseWatch()
        self.logged = 0
        self.last = last_logged_loss(run, step)
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            desc=run.path.name,
            dynamic_ncols=True,
            disable=not (rank_zero and cfg.trainer.progress_bar) or None,
        )
        self.samples, self.window = 0, time.perf_counter()

    def after_step(
        self, step: int, total_steps: int, row: dict[str, float], out: StepOutput, samples: int
    ) -> None:
        """Count the step; every ``log_every`` steps (and at the last) log ``row`` with
        the step's loss terms, speed and, every ``health_every`` rows, the embedding
        health (a collective: every rank calls this)."""
        self.samples += samples
        self.bar.update(1)
        if step % self.cfg.trainer.log_every and step != total_steps:
            return
        elapsed = time.perf_counter() - self.window
        metrics = {
            "loss": float(out.loss.detach()),
            **{k: float(v) for k, v in out.metrics.items()},
            **row,
            "images_per_s": self.samples / max(elapsed, 1e-9),
        }
        every = self.cfg.evaluation.health_every
        if out.embeddings is not None and every and self.logged % every == 0:
            metrics.update(health_metrics(out.embeddings))  # collective: all ranks
        self.logged += 1
        self.samples, self.window = 0, time.perf_counter()
        self.last = metrics
        self.bar.set_postfix(
            loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.0f}", refresh=False
        )
        self.log(metrics, step)
        self._check_collapse(metrics, step)

    def _check_collapse(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is None or not self.cfg.evaluation.warn_on_collapse:
            return
        alarm = self.watch.update(metrics, step)
        if alarm:
            warnings.warn(alarm, RuntimeWarning, stacklevel=2)

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log(metrics, step=step)

    def close_bar(self) -> None:
        self.bar.close()

    def finalize(self, status: str, files: list[Path] | None = None) -> None:
        """Close the metric sinks (``success``, ``failed``, ``preempted``), first handing
        ``files`` (the run's outputs) to the trackers."""
        if self.logger is not None:
            if files:
                self.logger.log_artifacts(files)
            self.logger.finalize(status)


__all__ = ["StepMonitor", "group_lrs"]
