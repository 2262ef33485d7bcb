"""The Fabric training loop. It knows the method protocol (``online``, ``target``,
``training_step``, ``after_optimizer_step``) and nothing about particular methods:
launch, seed, setup, step, backward, optimizer, schedule, target update, log,
checkpoint, resume, evaluate."""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy
from tqdm.auto import tqdm

from twinfold.augment import BatchedViews
from twinfold.builtins.views import SimCLRViewsConfig
from twinfold.checkpoints import Checkpointer, Checkpoints, check_resume
from twinfold.config import RunConfig
from twinfold.data import (
    BatchedViewsCollate,
    CroppedViewsCollate,
    MultiViewDataset,
    SeededImageDataset,
    build_sources,
    build_train_loader,
    collate_views,
)
from twinfold.data.build import log_skipped_files
from twinfold.data.folder import count_skipped
from twinfold.errors import ConfigError, NonFiniteLossError
from twinfold.evaluation import knn_top1
from twinfold.evaluation.health import CollapseWatch, health_metrics
from twinfold.evaluation.offline import LabelledFeatures, labelled_features
from twinfold.export import write_backbone
from twinfold.fast_path import apply_step_settings, resolve_fast_settings, with_fast_settings
from twinfold.method import SiameseMethod, build_method
from twinfold.metric_sinks import MetricSinks, default_loggers
from twinfold.optim import build_optimizer, lr_scale
from twinfold.registry import Registry, default_registry
from twinfold.reporting import write_plots
from twinfold.rundir import (
    default_run_name,
    resolve_resume,
    resolve_run_dir,
    write_config,
)
from twinfold.schedule import LRSchedule
from twinfold.stopping import ForwardSignals, StopSignals, agree
from twinfold.sync_batchnorm import convert_sync_batchnorm


@dataclass
class TrainResult:
    """What :func:`train` returns (from global rank 0)."""

    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    stopped_by: str | None = None  # the signal (e.g. 'SIGTERM') that stopped the run early


def make_fabric(cfg: RunConfig) -> Fabric:
    t = cfg.trainer
    strategy: Any = t.strategy
    if strategy in {"ddp", "ddp_spawn"}:
        start = "spawn" if strategy == "ddp_spawn" else "popen"
        timeout = timedelta(seconds=t.collective_timeout_s)
        strategy = DDPStrategy(start_method=start, timeout=timeout)
    return Fabric(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=resolve_fast_settings(cfg).precision,  # type: ignore[arg-type]
    )


def train(cfg: RunConfig, *, registry: Registry | None = None) -> TrainResult:
    """Run ``cfg`` with Lightning Fabric; returns rank 0's result. ``auto`` step
    settings (precision, channels_last) are resolved for this machine first
    (:mod:`twinfold.fast_path`) and recorded resolved in the run's ``config.yaml``."""
    cfg, _ = with_fast_settings(cfg)
    cfg = resolve_resume(cfg)
    check_view_engine(cfg)
    if cfg.data.dataset == "folder":  # a missing or empty folder fails before any process
        build_sources(cfg.data)
    if cfg.run.name is not None:  # fail before any process starts
        run = resolve_run_dir(cfg, cfg.run.name)
        latest = Checkpoints(run.checkpoints).latest() if cfg.run.resume else None
        if latest is not None:  # a refused checkpoint runs nothing
            check_resume(latest, cfg, registry or default_registry())
    fabric = make_fabric(cfg)
    if cfg.trainer.strategy == "ddp_spawn":  # the ranks are this process's children
        with ForwardSignals():
            return fabric.launch(_run_with_signals, cfg, registry)
    return fabric.launch(_run_with_signals, cfg, registry)


def view_engine(cfg: RunConfig) -> str:
    """The view engine a run uses: ``data.view_engine``, with ``auto`` resolved to
    ``batched`` for a ``simclr-views``-family component, else ``per-sample``."""
    if cfg.data.view_engine != "auto":
        return cfg.data.view_engine
    return "batched" if isinstance(cfg.method.views, SimCLRViewsConfig) else "per-sample"


def check_view_engine(cfg: RunConfig) -> None:
    """``data.view_engine='batched'`` needs a ``simclr-views``-family views component; a
    :class:`ConfigError` otherwise."""
    if cfg.data.view_engine != "batched":
        return
    problems = []
    views = cfg.method.views
    if not isinstance(views, SimCLRViewsConfig):
        problems.append(
            (
                "data.view_engine",
                f"'batched' supports views components of the simclr-views family "
                f"(simclr-, byol-, simsiam-, barlow-twins-, vicreg-views), not "
                f"'{getattr(views, 'name', type(views).__name__)}'; set "
                "data.view_engine=per-sample or use one of those views components",
            )
        )
    if problems:
        raise ConfigError(problems)


def _run_with_signals(fabric: Fabric, cfg: RunConfig, registry: Registry | None) -> TrainResult:
    with StopSignals() as signals:
        return _run(fabric, cfg, registry, signals)


def _per_device_batch(cfg: RunConfig, world: int) -> int:
    if cfg.data.global_batch_size is None:
        return cfg.data.batch_size
    if cfg.data.global_batch_size % world:
        raise ConfigError(
            [
                (
                    "data.global_batch_size",
                    f"{cfg.data.global_batch_size} is not divisible by "
                    f"the {world} processes (devices x nodes)",
                )
            ]
        )
    return cfg.data.global_batch_size // world


def _run(
    fabric: Fabric, cfg: RunConfig, registry: Registry | None, signals: StopSignals
) -> TrainResult:
    registry = registry or default_registry()
    started = time.perf_counter()
    torch.set_float32_matmul_precision(cfg.trainer.matmul_precision)
    world, rank = fabric.world_size, fabric.global_rank

    name = fabric.broadcast(cfg.run.name or default_run_name(cfg), src=0)
    run = resolve_run_dir(cfg, name)
    fabric.barrier()
    if fabric.is_global_zero:
        write_config(run, cfg)
    fabric.seed_everything(cfg.run.seed, verbose=False)

    # --- data
    batch = _per_device_batch(cfg, world)
    views_cfg = cfg.method.views
    if getattr(views_cfg, "image_size", "absent") is None:
        views_cfg = views_cfg.model_copy(update={"image_size": cfg.data.image_size})
    pipeline = registry.build(views_cfg)
    sources = build_sources(cfg.data)
    if cfg.data.skip_bad_images:
        log_skipped_files(sources, run.skipped)
    engine: BatchedViews | None = None
    dataset: MultiViewDataset | SeededImageDataset
    if view_engine(cfg) == "batched":  # views made on the device, seeded per sample
        engine = BatchedViews.from_config(views_cfg)
        dataset = SeededImageDataset(sources.train, cfg.run.seed)
        # images of differing sizes (folders) are cropped per image in the workers
        folder = cfg.data.dataset == "folder"
        collate: Any = (CroppedViewsCollate if folder else BatchedViewsCollate)(engine)
    else:
        dataset = MultiViewDataset(sources.train, pipeline, cfg.run.seed)
        collate = collate_views
    loader, sampler = build_train_loader(
        dataset,
        batch,
        world_size=world,
        rank=rank,
        seed=cfg.run.seed,
        num_workers=cfg.data.num_workers,
        collate_fn=collate,
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(
            [
                (
                    "data.batch_size",
                    f"the training set has {len(dataset)} images, fewer than one "
                    f"global batch of {batch * world}; lower the batch size",
                )
            ]
        )
    total_steps = cfg.trainer.epochs * steps_per_epoch
    if cfg.trainer.max_steps is not None:
        total_steps = min(total_steps, cfg.trainer.max_steps)
    end_step = min(total_steps, cfg.trainer.stop_after or total_steps)

    # --- model
    method: SiameseMethod = build_method(cfg.method, registry)
    initial_backbone = copy.deepcopy(method.backbone.state_dict())
    if cfg.trainer.sync_batchnorm and world > 1:
        method.online_raw = convert_sync_batchnorm(method.online_raw, fabric.device)
        if method.target is not None:
            method.target = convert_sync_batchnorm(method.target, fabric.device)
    apply_step_settings(method, cfg.trainer)
    optimizer = build_optimizer(
        method.online_raw,
        cfg.optimizer,
        lr_scale(cfg.schedule, batch * world),
        device_type=fabric.device.type,
    )
    method.online, optimizer = fabric.setup(method.online_raw, optimizer)
    if method.target is not None:
        method.target = fabric.to_device(method.target)  # never wrapped: no gradient sync
    # the loader is NOT passed through fabric.setup_dataloaders: Fabric's wrapper would call
    # sampler.set_epoch with its own iteration count and undo a mid-epoch resume
    schedule = LRSchedule.from_config(
        cfg.schedule, steps_per_epoch, cfg.trainer.epochs, cfg.trainer.max_steps
    )

    # --- resume
    ckpt = Checkpointer(
        fabric, run.checkpoints, cfg, registry, method, optimizer, loader, steps_per_epoch
    )
    step = ckpt.resume() if cfg.run.resume else 0
    check_grads = cfg.trainer.precision not in {"16-mixed", "16"}  # the grad scaler's job
    stopped_by: str | None = None
    start_epoch = step // steps_per_epoch

    logger = (
        MetricSinks(default_loggers(run.path, cfg.run.tensorboard, resumed_from=step))
        if fabric.is_global_zero
        else None
    )
    watch = CollapseWatch()
    logged = 0
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=name,
        dynamic_ncols=True,
        disable=not (fabric.is_global_zero and cfg.trainer.progress_bar) or None,
    )
    metrics: dict[str, float] = {}
    samples_seen, t_window = 0, time.perf_counter()
    for epoch in range(start_epoch, cfg.trainer.epochs):
        if step >= end_step:
            break
        skip = step - epoch * steps_per_epoch  # batches of this epoch done before a resume
        sampler.set_epoch(epoch, skip=skip * batch)
        dataset.set_epoch(epoch)
        ckpt.epoch_started()
        for item in loader:
            if step >= end_step:
                break
            if engine is not None:  # uint8 batch and per-sample parameters to the device
                images, _, params = item
                images = fabric.to_device(images)
                params = [p.to(fabric.device) for p in params]
                if isinstance(images, list):  # one batch of crops per view (folders)
                    views = engine.apply_views(images, params)
                else:
                    views = engine.apply(images, params)
            else:
                views = fabric.to_device(item)
            if cfg.trainer.channels_last:
                views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            factor = schedule.apply(optimizer, step)
            with fabric.autocast():
                out = method.training_step(views)
            fabric.backward(out.loss)
            verdict = agree(fabric, out.loss, method.online_raw, signals.received, check_grads)
            if verdict.non_finite:  # every rank raises at the same step
                if logger is not None:
                    logger.finalize("failed")  # keep the rows that led here
                raise NonFiniteLossError(
                    f"{verdict.describe_non_finite(step, float(out.loss.detach()), rank, world)}; "
                    f"{ckpt.describe_last()}. Lower optimizer.lr or check the data."
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            extra = method.after_optimizer_step(step, total_steps)
            step += 1
            samples_seen += views[0].shape[0] * world
            bar.update(1)
            if step % cfg.trainer.log_every == 0 or step == total_steps:
                elapsed = time.perf_counter() - t_window
                metrics = {
                    "loss": float(out.loss.detach()),
                    **{k: float(v) for k, v in out.metrics.items()},
                    **extra,
                    "lr": optimizer.param_groups[0]["lr"],
                    **_group_lrs(optimizer),
                    "lr_factor": factor,
                    "epoch": epoch,
                    "images_per_s": samples_seen / max(elapsed, 1e-9),
                }
                every_health = cfg.evaluation.health_every
                if out.embeddings is not None and every_health and logged % every_health == 0:
                    metrics.update(health_metrics(out.embeddings))  # collective: all ranks
                logged += 1
                samples_seen, t_window = 0, time.perf_counter()
                bar.set_postfix(
                    loss=f"{metrics['loss']:.4f}",
                    img_s=f"{metrics['images_per_s']:.0f}",
                    refresh=False,
                )
                if logger is not None:
                    logger.log(metrics, step=step)
                    alarm = watch.update(metrics, step) if cfg.evaluation.warn_on_collapse else None
                    if alarm:
                        warnings.warn(alarm, RuntimeWarning, stacklevel=1)
            every = cfg.run.checkpoint_every
            if every and step % every == 0:
                ckpt.save(step)
            if verdict.stop:  # a signal on any rank: every rank stops here
                stopped_by = verdict.signal_name
                break
        if not cfg.run.checkpoint_every or step == end_step or stopped_by:
            ckpt.save(step)
        if stopped_by:
            break
        n_eval = cfg.evaluation.every_n_epochs
        if n_eval and (epoch + 1) % n_eval == 0 and step < end_step:
            acc, _ = _evaluate(fabric, cfg, method, sources, pipeline)
            if acc is not None and logger is not None:
                logger.log({"knn_top1": acc, "epoch": epoch}, step=step)
    bar.close()
    if stopped_by:  # preempted: one checkpoint written, nothing else
        if logger is not None:
            logger.finalize("preempted")
        fabric.barrier()
        seconds = time.perf_counter() - started
        loss = {"loss": metrics.get("loss", math.nan), "seconds": seconds}
        return TrainResult(run.path, loss, step, seconds, stopped_by)

    final: dict[str, float] = {"loss": metrics.get("loss", math.nan)}
    held_out: LabelledFeatures | None = None
    if cfg.evaluation.at_end and step >= total_steps:
        acc, held_out = _evaluate(fabric, cfg, method, sources, pipeline)
        if acc is not None:
            final["knn_top1"] = acc
            if cfg.evaluation.compare_random_init:
                random_backbone = copy.deepcopy(method.backbone)
                random_backbone.load_state_dict(initial_backbone)
                random_acc, _ = _evaluate(
                    fabric, cfg, method, sources, pipeline, backbone=random_backbone
                )
                final["knn_top1_random_init"] = math.nan if random_acc is None else random_acc
    if cfg.data.skip_bad_images:
        final["skipped_images"] = count_skipped(run.skipped)
    final["seconds"] = time.perf_counter() - started
    if fabric.is_global_zero:
        if logger is not None:
            logger.log({f"final/{k}": v for k, v in final.items()}, step=step)
            logger.finalize("success")
        write_backbone(method.backbone, cfg, run.backbone, {"step": step})
        if cfg.run.plots:
            embedding = None if held_out is None else (held_out.test, held_out.test_labels)
            write_plots(run.path, embedding)
        run.summary.write_text(json.dumps({"steps": step, **final}, indent=2), encoding="utf-8")
    fabric.barrier()
    return TrainResult(run.path, final, step, final["seconds"])


def _group_lrs(optimizer: Any) -> dict[str, float]:
    """The learning rate of every parameter group, by the group's name."""
    return {f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}


def _evaluate(
    fabric: Fabric,
    cfg: RunConfig,
    method: SiameseMethod,
    sources: Any,
    pipeline: Any,
    backbone: torch.nn.Module | None = None,
) -> tuple[float | None, LabelledFeatures | None]:
    """Weighted kNN top-1 on the held-out split (rank 0 computes, all ranks agree), and
    rank 0's features (None elsewhere or without labels)."""
    if sources.eval_train is None or sources.eval_test is None:
        return None, None
    acc = torch.zeros(1)
    feats = None
    if fabric.is_global_zero:  # no autocast: as `twinfold eval` computes it afterwards
        feats = labelled_features(
            cfg,
            backbone or method.backbone,
            device=fabric.device,
            sources=sources,
            pipeline=pipeline,
        )
        acc[0] = knn_top1(
            feats.train,
            feats.train_labels,
            feats.test,
            feats.test_labels,
            k=cfg.evaluation.knn_k,
            temperature=cfg.evaluation.knn_temperature,
        )
    return float(fabric.broadcast(acc, src=0)[0]), feats


__all__ = ["TrainResult", "make_fabric", "train", "view_engine"]
