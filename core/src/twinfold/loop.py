"""The run path after the config: :func:`train` prepares a run once
(:func:`twinfold.plan.prepare_run`), launches Fabric, and every process runs
:func:`run_training`: open the run directory, seed, build the data and the method, then
the step loop (views, forward, backward, checks, optimizer, schedule, method update, log,
checkpoint) and the finish (evaluation, export, plots, summary). The loop knows only the
method protocol (:class:`twinfold.method.TrainingMethod`)."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from lightning_fabric import Fabric

from twinfold.checkpoints import Checkpointer
from twinfold.components import StepProgress
from twinfold.config import RunConfig
from twinfold.data.build import log_skipped_files
from twinfold.data.folder import count_skipped
from twinfold.errors import NonFiniteLossError
from twinfold.evaluation.in_training import held_out_knn
from twinfold.evaluation.offline import LabelledFeatures
from twinfold.export import sidecar_path, write_backbone
from twinfold.fast_path import apply_backend_settings
from twinfold.method import SetupOptions, StepOutput, TrainingMethod
from twinfold.metric_sinks import rows_until
from twinfold.monitoring import StepMonitor, group_lrs
from twinfold.optim import build_optimizer, lr_scale
from twinfold.plan import RunParts, RunPlan, build_parts, prepare_run
from twinfold.registry import Registry
from twinfold.reporting import write_plots
from twinfold.resume import check_fresh, run_directory
from twinfold.rundir import RunDir, default_run_name, write_config
from twinfold.schedule import LRSchedule, WeightDecaySchedule
from twinfold.stopping import ForwardSignals, StepVerdict, StopSignals, agree
from twinfold.training_data import training_data


@dataclass
class TrainResult:
    """What :func:`train` returns (each process its own; ``rank`` 0 holds the numbers)."""

    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None  # the signal (e.g. 'SIGTERM') that stopped the run early
    rank: int = 0
    started: bool = True  # False: stopped before training began (nothing was written)


def train(
    cfg: RunConfig,
    *,
    registry: Registry | None = None,
    on_start: Callable[[RunPlan], None] | None = None,
) -> TrainResult:
    """Run ``cfg`` with Lightning Fabric. Everything is decided and checked before a
    process starts (:func:`twinfold.plan.prepare_run`); ``on_start(plan)`` is called on
    global rank 0 once training starts (the CLI prints the plan there; with
    ``ddp_spawn`` it must be picklable: a module-level function)."""
    with StopSignals() as early:  # a stop before training starts writes nothing
        plan, fabric = prepare_run(cfg, registry)
        if early.received is not None:
            out = Path(plan.cfg.run.output_dir) / (plan.resume.run_name or "")
            return TrainResult(out, steps=plan.resume.step, stopped_by=early.signal_name,
                               started=False)
        if plan.cfg.trainer.strategy == "ddp_spawn":  # the ranks are this process's children
            with ForwardSignals():
                return fabric.launch(run_training, plan, on_start)
        return fabric.launch(run_training, plan, on_start)


def run_training(
    fabric: Fabric, plan: RunPlan, on_start: Callable[[RunPlan], None] | None = None
) -> TrainResult:
    """Every process: open the run directory, seed, build the parts, train."""
    with StopSignals() as signals:
        started = time.perf_counter()
        if on_start is not None and fabric.is_global_zero:
            on_start(plan)
        apply_backend_settings(plan.backend)
        run = open_run_dir(fabric, plan)
        fabric.seed_everything(plan.cfg.run.seed, verbose=False)
        parts = build_parts(plan.cfg, plan.components)
        return Training(fabric, plan, run, parts, signals).run(started)


def open_run_dir(fabric: Fabric, plan: RunPlan) -> RunDir:
    """The run directory (named by rank 0), with ``config.yaml`` written by rank 0."""
    name = fabric.broadcast(plan.resume.run_name or default_run_name(plan.cfg), src=0)
    path = run_directory(plan.cfg, name)
    if plan.resume.run_name is None:  # a name made from the time: checked here
        check_fresh(path, plan.cfg)
    fabric.barrier()
    run = RunDir(path)
    if fabric.is_global_zero:
        write_config(run, plan.cfg)
    return run


class Training:
    """One process's training: the pieces built from the plan, and the step loop."""

    def __init__(
        self, fabric: Fabric, plan: RunPlan, run: RunDir, parts: RunParts, signals: StopSignals
    ) -> None:
        cfg = self.cfg = plan.cfg
        self.fabric, self.plan, self.run_dir, self.parts, self.signals = (
            fabric,
            plan,
            run,
            parts,
            signals,
        )
        if cfg.data.skip_bad_images:
            log_skipped_files(parts.sources, run.skipped)
        self.data = training_data(
            cfg,
            parts.sources.train,
            parts.pipeline,
            batched=plan.view_engine == "batched",
            batch_size=plan.batch_size,
            world_size=fabric.world_size,
            rank=fabric.global_rank,
            pin_memory=plan.backend.pin_memory,
        )
        self._set_up_method()
        self.ckpt = Checkpointer(
            fabric,
            run.checkpoints,
            cfg,
            plan.components,
            self.method,
            self.optimizer,
            self.data.loader,
            self.data.steps_per_epoch,
        )
        checkpoint = plan.resume.checkpoint
        self.step = self.ckpt.load(checkpoint) if checkpoint is not None else 0
        self.monitor = StepMonitor(
            cfg, run, rank_zero=fabric.is_global_zero, step=self.step, total_steps=self.total
        )
        self.stopped_by: str | None = None

    def _set_up_method(self) -> None:
        cfg, fabric = self.cfg, self.fabric
        per_epoch = self.data.steps_per_epoch
        self.total = cfg.trainer.epochs * per_epoch
        if cfg.trainer.max_steps is not None:
            self.total = min(self.total, cfg.trainer.max_steps)
        self.end = min(self.total, cfg.trainer.stop_after or self.total)
        self.method: TrainingMethod = self.parts.method
        self.initial_backbone = copy.deepcopy(self.method.backbone.state_dict())
        scale = lr_scale(cfg.schedule, self.plan.batch_size * fabric.world_size)
        self.optimizer = self.method.setup(
            fabric,
            lambda module: build_optimizer(
                module, cfg.optimizer, scale, device_type=fabric.device.type
            ),
            SetupOptions.from_trainer(cfg.trainer),
        )
        # the loader is NOT passed through fabric.setup_dataloaders: Fabric's wrapper would
        # call sampler.set_epoch with its own iteration count and undo a mid-epoch resume
        self.schedule = LRSchedule.from_config(
            cfg.schedule, per_epoch, cfg.trainer.epochs, cfg.trainer.max_steps
        )
        self.wd_schedule = WeightDecaySchedule.from_config(cfg.optimizer, self.schedule.total_steps)
        self.check_grads = cfg.trainer.precision != "16-mixed"  # else the grad scaler's job

    def run(self, started: float) -> TrainResult:
        if self.plan.resume.checkpoint is not None:
            self._catch_up_evaluation()
        for epoch in range(self.step // self.data.steps_per_epoch, self.cfg.trainer.epochs):
            if self.step >= self.end:
                break
            self._epoch(epoch)
            if self.stopped_by:
                break
        self.monitor.close_bar()
        if self.stopped_by:  # preempted: one checkpoint written, nothing else
            self.monitor.finalize("preempted")
            self.fabric.barrier()
            seconds = time.perf_counter() - started
            metrics = {"loss": self.monitor.last.get("loss", math.nan), "seconds": seconds}
            return self._result(metrics, seconds)
        return self._finish(started)

    def _epoch(self, epoch: int) -> None:
        self.data.start_epoch(epoch, self.step)
        self.ckpt.epoch_started()
        every = self.cfg.run.checkpoint_every
        for batch in self.data.loader:
            if self.step >= self.end:
                break
            self._step(batch, epoch)
            if every and self.step % every == 0:
                self._save()
            if self.stopped_by:  # a signal on any rank: every rank stops here
                break
        if not every or self.step == self.end or self.stopped_by:
            self._save()
        if not self.stopped_by and self._evaluation_due(epoch):
            self._epoch_evaluation(epoch)

    def _evaluation_due(self, epoch: int) -> bool:
        """Whether the kNN after ``epoch`` runs (every ``evaluation.every_n_epochs``,
        but not after the last step, where the final evaluation runs)."""
        n_eval = self.cfg.evaluation.every_n_epochs
        return bool(n_eval) and (epoch + 1) % n_eval == 0 and self.step < self.end

    def _epoch_evaluation(self, epoch: int) -> None:
        acc, _ = self._knn(self.method.backbone)
        if acc is not None:
            self.monitor.log({"knn_top1": acc, "epoch": epoch}, self.step)

    def _catch_up_evaluation(self) -> None:
        """A run resumed at an epoch's end whose kNN was due but never logged (stopped
        between the checkpoint and the evaluation, or during it) runs it first; rank 0
        reads metrics.csv and every rank follows its decision."""
        per_epoch = self.data.steps_per_epoch
        epoch = self.step // per_epoch - 1
        if self.step % per_epoch or epoch < 0 or not self._evaluation_due(epoch):
            return
        logged = any(
            row.get("knn_top1") and int(float(row.get("epoch", -1))) == epoch
            for row in rows_until(self.run_dir.path, self.step)
        )
        if not self.fabric.broadcast(logged, src=0):
            self._epoch_evaluation(epoch)

    def _step(self, batch: Any, epoch: int) -> None:
        views = self.data.make_views(batch, self.fabric)
        factor = self.schedule.apply(self.optimizer, self.step)
        wd = self._apply_weight_decay()
        per_epoch = self.data.steps_per_epoch
        self.method.before_step(StepProgress(self.step, epoch, per_epoch, self.total))
        with self.fabric.autocast():
            out = self.method.training_step(views)
        self.fabric.backward(out.loss)
        verdict = agree(
            self.fabric, out.loss, self.method.online, self.signals.received, self.check_grads
        )
        if verdict.non_finite:  # every rank raises at the same step
            self._fail(verdict, out)
        clipped = self._clip_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        extra = self.method.after_optimizer_step(self.step, self.total)
        self.step += 1
        row = {
            **extra,
            **clipped,
            "lr": self.optimizer.param_groups[0]["lr"],
            **group_lrs(self.optimizer),
            "lr_factor": factor,
            **wd,
            "epoch": epoch,
        }
        samples = views[0].shape[0] * self.fabric.world_size
        self.monitor.after_step(self.step, self.total, row, out, samples)
        self.stopped_by = verdict.signal_name if verdict.stop else None

    def _apply_weight_decay(self) -> dict[str, float]:
        """This step's weight decay when ``optimizer.weight_decay_end`` sets a schedule
        (logged as ``weight_decay``), else nothing."""
        if self.wd_schedule is None:
            return {}
        return {"weight_decay": self.wd_schedule.apply(self.optimizer, self.step)}

    def _clip_gradients(self) -> dict[str, float]:
        """Scale the gradients down to ``optimizer.clip_grad_norm`` (global L2 norm, after
        the all-reduce, so every rank clips alike); the norm before clipping, to log."""
        max_norm = self.cfg.optimizer.clip_grad_norm
        if max_norm is None:
            return {}
        norm = self.fabric.clip_gradients(self.method.online, self.optimizer, max_norm=max_norm)
        return {"grad_norm": float(norm)}

    def _save(self) -> None:
        try:
            self.ckpt.save(self.step)
        except NonFiniteLossError:  # weights that overflowed in the step: never written
            self.monitor.finalize("failed")
            raise

    def _fail(self, verdict: StepVerdict, out: StepOutput) -> NoReturn:
        self.monitor.finalize("failed")  # keep the rows that led here
        fabric, loss = self.fabric, float(out.loss.detach())
        where = verdict.describe_non_finite(self.step, loss, fabric.global_rank, fabric.world_size)
        raise NonFiniteLossError(
            f"{where}; "
            f"{self.ckpt.describe_last()}. Lower optimizer.lr or check the data."
        )

    def _knn(self, backbone: torch.nn.Module) -> tuple[float | None, LabelledFeatures | None]:
        """Held-out kNN; the training's random number generators are left as they were
        (evaluation must not change what training draws, nor what a resume restores)."""
        sources, pipeline = self.parts.sources, self.parts.pipeline
        cuda = [self.fabric.device] if self.fabric.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return held_out_knn(self.fabric, self.cfg, backbone, sources, pipeline)

    def _finish(self, started: float) -> TrainResult:
        """Final evaluation (with the random-init baseline), then rank 0 logs the final
        numbers and writes the exported backbone, plots and ``summary.json``, then hands
        those files to the trackers and closes the metric sinks."""
        final: dict[str, float] = {"loss": self.monitor.last.get("loss", math.nan)}
        held_out = None
        if self.cfg.evaluation.at_end and self.step >= self.total:
            held_out = self._final_knn(final)
        if self.cfg.data.skip_bad_images:
            final["skipped_images"] = count_skipped(self.run_dir.skipped)
        final["seconds"] = time.perf_counter() - started
        if self.fabric.is_global_zero:
            self.monitor.log({f"final/{k}": v for k, v in final.items()}, self.step)
            try:
                files = self._write_outputs(final, held_out)
            except BaseException:
                self.monitor.finalize("failed")
                raise
            self.monitor.finalize("success", files)
        self.fabric.barrier()
        return self._result(final, final["seconds"])

    def _final_knn(self, final: dict[str, float]) -> LabelledFeatures | None:
        acc, held_out = self._knn(self.method.backbone)
        if acc is None:
            return held_out
        final["knn_top1"] = acc
        if self.cfg.evaluation.compare_random_init:
            random_backbone = copy.deepcopy(self.method.backbone)
            random_backbone.load_state_dict(self.initial_backbone)
            random_acc, _ = self._knn(random_backbone)
            final["knn_top1_random_init"] = math.nan if random_acc is None else random_acc
        return held_out

    def _write_outputs(
        self, final: dict[str, float], held_out: LabelledFeatures | None
    ) -> list[Path]:
        """The exported backbone, the plots and ``summary.json``; returns the run's
        files for the trackers (``config.yaml`` first)."""
        run, step = self.run_dir, self.step
        write_backbone(
            self.method.backbone, self.cfg, run.backbone, {"step": step}, self.plan.components
        )
        plots: list[Path] = []
        if self.cfg.run.plots:
            embedding = None if held_out is None else (held_out.test, held_out.test_labels)
            plots = write_plots(run.path, embedding)
        run.summary.write_text(json.dumps({"steps": step, **final}, indent=2), encoding="utf-8")
        return [run.config, run.backbone, sidecar_path(run.backbone), *plots, run.summary]

    def _result(self, metrics: dict[str, float], seconds: float) -> TrainResult:
        rank = self.fabric.global_rank
        return TrainResult(self.run_dir.path, metrics, self.step, seconds, self.stopped_by, rank)


__all__ = ["TrainResult", "Training", "open_run_dir", "run_training", "train"]
