"""Stage 1 of a run, before any training process starts: everything decided and checked
once (:func:`prepare_run`). The config is validated and its ``auto`` step settings and
``run.resume`` resolved; the world size, per-process batch and view engine fixed; the
checkpoint to continue chosen and checked; the data sources and every component built
once, so that a bad config, a missing dataset, a component that cannot be built or a
metric sink that is not installed fails with exit status 2 before a file is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from lightning_fabric import Fabric
from lightning_fabric.strategies import DDPStrategy
from torch import nn

from twinfold.components import ViewPipeline
from twinfold.config import RunConfig
from twinfold.data import DataSources, build_sources
from twinfold.errors import ConfigError
from twinfold.fast_path import (
    BackendSettings,
    FastSettings,
    backend_settings,
    with_fast_settings,
    with_loader_workers,
)
from twinfold.method import SiameseMethod, build_method
from twinfold.metric_sinks import check_installed
from twinfold.optim import group_name_problems
from twinfold.registry import Registry, default_registry
from twinfold.resume import ResumeDecision, decide_resume

VIEW_ENGINES = ("batched", "per-sample")


@dataclass  # not frozen: Fabric's spawn launcher copies the launch arguments field by field
class RunPlan:
    """What every training process starts from. ``registry`` None stands for the
    process-wide default registry (each spawned process builds its own)."""

    cfg: RunConfig
    """Validated, with step settings and ``run.resume`` resolved: what config.yaml records."""
    settings: FastSettings
    world_size: int
    batch_size: int
    """Samples per process and step."""
    view_engine: str
    resume: ResumeDecision
    registry: Registry | None = None

    @property
    def components(self) -> Registry:
        return self.registry or default_registry()

    @property
    def backend(self) -> BackendSettings:
        """The process-wide torch settings and host-to-device transfers of the run."""
        return backend_settings(self.settings.accelerator, self.cfg.trainer.matmul_precision)

    def describe(self) -> str:
        """The run's first line: device, step settings and view engine, and why."""
        return (
            f"training on {self.settings.accelerator} x {self.cfg.trainer.devices}: "
            f"{self.settings.describe()}; views: {self.view_engine} "
            f"(data.view_engine={self.cfg.data.view_engine})"
        )


@dataclass
class RunParts:
    """What each process builds from a plan: data sources, the views component and the
    method (in this order, after seeding, so that every process builds the same)."""

    sources: DataSources
    pipeline: ViewPipeline
    method: SiameseMethod


def make_fabric(cfg: RunConfig) -> Fabric:
    """The Fabric object for a config whose step settings are resolved."""
    t = cfg.trainer
    if t.precision == "auto":
        raise ValueError("resolve the step settings first (twinfold.fast_path.with_fast_settings)")
    strategy: Any = t.strategy
    if strategy in {"ddp", "ddp_spawn"}:
        start = "spawn" if strategy == "ddp_spawn" else "popen"
        strategy = DDPStrategy(start_method=start, timeout=_timeout(cfg))
    fabric = _fabric(cfg, strategy)
    chosen = fabric.strategy
    if strategy == "auto" and isinstance(chosen, DDPStrategy):
        # Fabric chose DDP for several devices with its own default timeout: rebuild it
        # with trainer.collective_timeout_s (same launcher: popen, or fork in notebooks)
        start = getattr(chosen, "_start_method", "popen")
        fabric = _fabric(cfg, DDPStrategy(start_method=start, timeout=_timeout(cfg)))
    return fabric


def _timeout(cfg: RunConfig) -> timedelta:
    """How long a collective (NCCL or gloo) waits: ``trainer.collective_timeout_s``."""
    return timedelta(seconds=cfg.trainer.collective_timeout_s)


def _fabric(cfg: RunConfig, strategy: Any) -> Fabric:
    t = cfg.trainer
    return Fabric(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=strategy,
        precision=t.precision,  # type: ignore[arg-type]
    )


def per_process_batch(cfg: RunConfig, world: int) -> int:
    """``data.batch_size``, or ``data.global_batch_size / world`` when that is set."""
    total = cfg.data.global_batch_size
    if total is None:
        return cfg.data.batch_size
    if total % world:
        raise ConfigError(
            [
                (
                    "data.global_batch_size",
                    f"{total} is not divisible by the {world} processes (devices x nodes)",
                )
            ]
        )
    return total // world


def build_parts(cfg: RunConfig, registry: Registry) -> RunParts:
    """Sources, views component and method of ``cfg``."""
    pipeline = registry.build(cfg.views_config())
    return RunParts(build_sources(cfg.data), pipeline, build_method(cfg.method, registry))


def choose_view_engine(cfg: RunConfig, pipeline: ViewPipeline, registry: Registry) -> str:
    """``data.view_engine`` resolved: ``auto`` is ``batched`` when the built views
    component offers a batched engine (:meth:`ViewPipeline.batched_engine`), else
    ``per-sample``; ``batched`` for a component without one is a config error."""
    offers = pipeline.batched_engine() is not None
    setting = cfg.data.view_engine
    if setting == "auto":
        return "batched" if offers else "per-sample"
    if setting == "batched" and not offers:
        views = cfg.method.views
        provider = registry.get("augmentation", views.name).provider
        raise ConfigError(
            [
                (
                    "data.view_engine",
                    f"'batched' needs a views component with a batched engine; "
                    f"'{views.name}' from {provider} has none. Set data.view_engine=per-sample "
                    "or use a views component of the simclr-views family",
                )
            ]
        )
    return setting


def check_decode_on(cfg: RunConfig, engine: str, pipeline: ViewPipeline, fixed_size: bool) -> None:
    """``data.decode_on: device`` needs JPEG files (an image folder or shards), the
    batched engine of the simclr-views family and JPEGs decoded in full."""
    if cfg.data.decode_on == "workers":
        return
    why = None
    if fixed_size:
        why = f"dataset '{cfg.data.dataset}' holds decoded images (for 'folder' and 'streaming')"
    elif engine != "batched" or not hasattr(pipeline.batched_engine(), "crop_per_sample"):
        why = "it needs the batched views of the simclr-views family (data.view_engine: batched)"
    elif cfg.data.jpeg_reduction != 1:
        why = "data.jpeg_reduction decodes in the workers; set it to 1 (the device decodes in full)"
    if why is not None:
        raise ConfigError([("data.decode_on", f"'device': {why}, or set data.decode_on=workers")])


def _check_one_batch(train_images: int, world: int, batch: int) -> None:
    if train_images // world < batch:
        raise ConfigError(
            [
                (
                    "data.batch_size",
                    f"the training set has {train_images} images, fewer than one global batch "
                    f"of {batch * world}; lower the batch size",
                )
            ]
        )


def _check_knn_bank(cfg: RunConfig, sources: DataSources) -> None:
    """kNN needs at least ``evaluation.knn_k`` labelled images in its memory bank; found
    here, not at the end of training."""
    evaluates = cfg.evaluation.at_end or cfg.evaluation.every_n_epochs > 0
    bank = sources.eval_train
    if evaluates and bank is not None and len(bank) < cfg.evaluation.knn_k:
        raise ConfigError(
            [
                (
                    "evaluation.knn_k",
                    f"{cfg.evaluation.knn_k} neighbours, but the kNN memory bank holds "
                    f"{len(bank)} labelled images; lower it, or turn evaluation off "
                    "(evaluation.at_end=false, evaluation.every_n_epochs=0)",
                )
            ]
        )


def check_encoder_input(cfg: RunConfig, encoder: nn.Module) -> None:
    """A dry forward of two blank views at the size the views component makes: an encoder
    that cannot take them (a ViT built for another size, a ConvNeXt on too small images)
    or whose output is not ``[2, out_dim]`` is a :class:`ConfigError` before the run
    starts. The trial-built encoder runs in eval mode and is thrown away afterwards."""
    side = getattr(cfg.views_config(), "image_size", None) or cfg.data.image_size
    name = cfg.method.encoder.name
    try:
        with torch.no_grad():
            shape = tuple(encoder.eval()(torch.zeros(2, 3, side, side)).shape)
    except (RuntimeError, ValueError, TypeError, AssertionError, IndexError) as exc:
        raise ConfigError(
            [
                (
                    "data.image_size",
                    f"encoder '{name}' does not take {side}x{side} views "
                    f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); change "
                    "data.image_size or the encoder's input size (image_size / img_size)",
                )
            ]
        ) from exc
    out_dim = getattr(encoder, "out_dim", None)
    if shape != (2, out_dim):
        raise ConfigError(
            [("method.encoder", f"encoder '{name}' returned {shape} for 2 views, not (2, "
              f"{out_dim}) (its out_dim)")]
        )  # fmt: skip


def _check_param_group_names(cfg: RunConfig, online: nn.Module) -> None:
    """``optimizer.fixed_lr`` and ``optimizer.lr_multipliers`` name sub-modules of the
    online network (``encoder``, ``projector``, ``predictor``): a typo is a config error
    before the run starts, not an error in the training process."""
    problems = group_name_problems(online, cfg.optimizer)
    if problems:
        raise ConfigError(problems)


def prepare_run(cfg: RunConfig, registry: Registry | None = None) -> tuple[RunPlan, Fabric]:
    """Decide and check everything before launch; the plan and the Fabric to launch."""
    components = registry or default_registry()
    cfg, settings = with_fast_settings(cfg)
    check_installed(cfg)
    cfg, resume = decide_resume(cfg, components)
    fabric = make_fabric(cfg)
    per_node = max(fabric.world_size // cfg.trainer.num_nodes, 1)
    cfg, workers = with_loader_workers(cfg, settings.accelerator, per_node)
    if workers:
        settings.reasons = (*settings.reasons, workers)
    batch = per_process_batch(cfg, fabric.world_size)
    with torch.random.fork_rng(devices=[]):  # a trial build: the run's seed is set later
        parts = build_parts(cfg, components)
        check_encoder_input(cfg, parts.method.backbone)
        _check_param_group_names(cfg, parts.method.online)
    engine = choose_view_engine(cfg, parts.pipeline, components)
    fixed = parts.sources.train.fixed_size
    check_decode_on(cfg, engine, parts.pipeline, fixed)
    _check_one_batch(len(parts.sources.train), fabric.world_size, batch)
    _check_knn_bank(cfg, parts.sources)
    plan = RunPlan(cfg, settings, fabric.world_size, batch, engine, resume, registry)
    return plan, fabric


__all__ = [
    "RunParts",
    "RunPlan",
    "build_parts",
    "check_decode_on",
    "check_encoder_input",
    "choose_view_engine",
    "make_fabric",
    "per_process_batch",
    "prepare_run",
]
