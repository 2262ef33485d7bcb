"""The Fabric training loop. It knows the method protocol (``online``, ``target``,
``training_step``, ``after_optimizer_step``) and nothing about particular methods:
launch, seed, setup, step, backward, optimizer, schedule, target update, log,
checkpoint, resume, evaluate."""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger
from lightning_fabric.strategies import DDPStrategy
from tqdm.auto import tqdm

from twinfold.config import RunConfig
from twinfold.data import (
    MultiViewDataset,
    PlainDataset,
    build_eval_loader,
    build_sources,
    build_train_loader,
)
from twinfold.errors import CheckpointError, ConfigError, NonFiniteLossError
from twinfold.evaluation import extract_features, knn_top1
from twinfold.method import SiameseMethod, build_method
from twinfold.optim import build_optimizer, lr_scale
from twinfold.registry import Registry, default_registry
from twinfold.rundir import (
    RunDir,
    default_run_name,
    export_backbone,
    resolve_run_dir,
    write_config,
)
from twinfold.schedule import LRSchedule
from twinfold.sync_batchnorm import convert_sync_batchnorm

DDP_TIMEOUT = timedelta(minutes=30)


@dataclass
class TrainResult:
    """What :func:`train` returns (from global rank 0)."""

    run_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def make_fabric(cfg: RunConfig) -> Fabric:
    t = cfg.trainer
    strategy: Any = t.strategy
    if strategy in {"ddp", "ddp_spawn"}:
        start = "spawn" if strategy == "ddp_spawn" else "popen"
        strategy = DDPStrategy(start_method=start, timeout=DDP_TIMEOUT)
    return Fabric(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,  # type: ignore[arg-type]
    )


def train(cfg: RunConfig, *, registry: Registry | None = None) -> TrainResult:
    """Run ``cfg`` with Lightning Fabric; returns rank 0's result."""
    if cfg.run.name is not None:  # fail before any process starts
        resolve_run_dir(cfg, cfg.run.name)
    fabric = make_fabric(cfg)
    return fabric.launch(_run, cfg, registry)


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


def _run(fabric: Fabric, cfg: RunConfig, registry: Registry | None) -> TrainResult:
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
    dataset = MultiViewDataset(sources.train, pipeline, cfg.run.seed)
    loader, sampler = build_train_loader(
        dataset,
        batch,
        world_size=world,
        rank=rank,
        seed=cfg.run.seed,
        num_workers=cfg.data.num_workers,
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
    optimizer = build_optimizer(
        method.online_raw, cfg.optimizer, lr_scale(cfg.schedule, batch * world)
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
    step = 0
    state: dict[str, Any] = {"online": method.online, "optimizer": optimizer}
    if method.target is not None:
        state["target"] = method.target
    if cfg.run.resume:
        step = _load_checkpoint(fabric, run, cfg, state)
    start_epoch = step // steps_per_epoch

    logger = _metrics_logger(run) if fabric.is_global_zero else None
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
        for views in loader:
            if step >= end_step:
                break
            views = fabric.to_device(views)
            factor = schedule.apply(optimizer, step)
            with fabric.autocast():
                out = method.training_step(views)
            if not torch.isfinite(out.loss.detach()):
                raise NonFiniteLossError(
                    f"loss is {out.loss.item()} at step {step} (rank {rank}); stopped before the "
                    f"optimizer step. The last checkpoint in {run.path} is intact. Lower "
                    "optimizer.lr or check the data."
                )
            fabric.backward(out.loss)
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
                    "lr_factor": factor,
                    "epoch": epoch,
                    "images_per_s": samples_seen / max(elapsed, 1e-9),
                }
                samples_seen, t_window = 0, time.perf_counter()
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
                if logger is not None:
                    logger.log_metrics(metrics, step=step)
            every = cfg.run.checkpoint_every
            if every and step % every == 0:
                _save_checkpoint(fabric, run, cfg, state, step)
        if not cfg.run.checkpoint_every or step == end_step:
            _save_checkpoint(fabric, run, cfg, state, step)
        n_eval = cfg.evaluation.every_n_epochs
        if n_eval and (epoch + 1) % n_eval == 0 and step < end_step:
            acc = _evaluate(fabric, cfg, method, sources, pipeline)
            if acc is not None and logger is not None:
                logger.log_metrics({"knn_top1": acc, "epoch": epoch}, step=step)
    bar.close()

    final: dict[str, float] = {"loss": metrics.get("loss", math.nan)}
    if cfg.evaluation.at_end and step >= total_steps:
        acc = _evaluate(fabric, cfg, method, sources, pipeline)
        if acc is not None:
            final["knn_top1"] = acc
            if cfg.evaluation.compare_random_init:
                random_backbone = copy.deepcopy(method.backbone)
                random_backbone.load_state_dict(initial_backbone)
                final["knn_top1_random_init"] = (
                    _evaluate(fabric, cfg, method, sources, pipeline, backbone=random_backbone)
                    or math.nan
                )
    final["seconds"] = time.perf_counter() - started
    if fabric.is_global_zero:
        if logger is not None:
            logger.log_metrics({f"final/{k}": v for k, v in final.items()}, step=step)
            logger.finalize("success")
        export_backbone(run, method.backbone, cfg, {"step": step})
        run.summary.write_text(json.dumps({"steps": step, **final}, indent=2), encoding="utf-8")
    fabric.barrier()
    return TrainResult(run.path, final, step, final["seconds"])


def _metrics_logger(run: RunDir) -> CSVLogger:
    """Fabric's CSV logger writing ``metrics.csv`` into the run directory."""
    warnings.filterwarnings("ignore", message="Experiment logs directory", module=r"lightning")
    return CSVLogger(str(run.path), name="", version="")


def _evaluate(
    fabric: Fabric,
    cfg: RunConfig,
    method: SiameseMethod,
    sources: Any,
    pipeline: Any,
    backbone: torch.nn.Module | None = None,
) -> float | None:
    """Weighted kNN top-1 on the held-out split (rank 0 computes, all ranks agree)."""
    if sources.eval_train is None or sources.eval_test is None:
        return None
    acc = torch.zeros(1)
    if fabric.is_global_zero:
        net = (backbone or method.backbone).to(fabric.device)
        bank = build_eval_loader(PlainDataset(sources.eval_train, pipeline), 512, 0)
        test = build_eval_loader(PlainDataset(sources.eval_test, pipeline), 512, 0)
        with fabric.autocast():
            xb, yb = extract_features(net, bank, fabric.device)
            xt, yt = extract_features(net, test, fabric.device)
        acc[0] = knn_top1(
            xb, yb, xt, yt, k=cfg.evaluation.knn_k, temperature=cfg.evaluation.knn_temperature
        )
    return float(fabric.broadcast(acc, src=0)[0])


def _save_checkpoint(
    fabric: Fabric, run: RunDir, cfg: RunConfig, state: dict[str, Any], step: int
) -> None:
    """Write the checkpoint to a temporary file, then rename it over the last one."""
    path = run.last_checkpoint
    tmp = path.with_name(path.name + ".tmp")
    if fabric.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
    fabric.barrier()
    fabric.save(tmp, {**state, "step": step, "config": cfg.model_dump_json()})
    fabric.barrier()
    if fabric.is_global_zero:
        os.replace(tmp, path)
    fabric.barrier()


def _load_checkpoint(fabric: Fabric, run: RunDir, cfg: RunConfig, state: dict[str, Any]) -> int:
    path = run.last_checkpoint
    try:
        rest = fabric.load(path, state)
    except Exception as exc:
        raise CheckpointError(
            f"cannot resume from {path}: {type(exc).__name__}: {exc}. It may come from "
            "another config; start a new run or set run.overwrite=true."
        ) from None
    saved = json.loads(rest.get("config", "{}"))
    now = json.loads(cfg.model_dump_json())
    changed = sorted(_diff(saved.get("method", {}), now["method"], "method"))
    if changed:
        raise CheckpointError(
            f"checkpoint {path} was written by another method config (changed: "
            f"{', '.join(changed)}); start a new run instead"
        )
    return int(rest["step"])


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}")
        return out
    return [] if a == b else [prefix]


__all__ = ["TrainResult", "make_fabric", "train"]
