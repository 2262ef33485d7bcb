"""The run configuration: pydantic models, validated in full before anything runs.

Component slots (``method.encoder``, ``method.loss``, ...) accept either an instance of
a registered config class or a mapping with a ``name``; the mapping is validated with
the class the registry holds for that name. A ``preset`` names a registered default
composition that the rest of the config is merged onto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeInt,
    SerializeAsAny,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from twinfold.components import (
    AugmentationConfig,
    ComponentConfig,
    EncoderConfig,
    HeadConfig,
    LossConfig,
    StrictModel,
    TargetRuleConfig,
)
from twinfold.config.merge import deep_merge
from twinfold.errors import UnknownComponentError


def _registry(info: ValidationInfo | None):
    ctx = info.context if info is not None else None
    if isinstance(ctx, dict) and ctx.get("registry") is not None:
        return ctx["registry"]
    from twinfold.registry import default_registry

    return default_registry()


def _dispatch(kind: str, value: Any, info: ValidationInfo) -> Any:
    """Validate a ``{"name": ...}`` mapping with the registered config class."""
    if value is None or isinstance(value, ComponentConfig) or not isinstance(value, dict):
        return value
    name = value.get("name")
    registry = _registry(info)
    try:
        cls = registry.config_class(kind, name if isinstance(name, str) else "")
    except UnknownComponentError as exc:
        text = (
            str(exc)
            if isinstance(name, str)
            else f"a {kind} needs a 'name'. " + str(exc).split(". ", 1)[-1]
        )
        raise ValidationError.from_exception_data(
            "component",
            [
                {
                    "type": PydanticCustomError("unknown_component", text),
                    "loc": ("name",),
                    "input": name,
                }
            ],
        ) from None
    return cls.model_validate(value, context=info.context)


StorageUri = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9+.-]*://")]
"""An object-store address such as ``s3://bucket/shards`` (kept as text: a ``Path``
would fold its ``//``)."""


class DataConfig(StrictModel):
    """Where images come from and how they are batched."""

    dataset: Literal["digits", "folder", "streaming", "cifar10", "cifar100", "stl10"] = "digits"
    root: StorageUri | Path | None = Field(
        None,
        description="image folder, torchvision data root, or for 'streaming' the shards "
        "of 'twinfold data pack' (a directory or an object-store URI such as s3://...)",
    )
    eval_root: Path | None = Field(
        None, description="labelled image folder (one sub-folder per class) for evaluation"
    )
    download: bool = Field(False, description="let torchvision datasets download")
    image_size: int = Field(32, ge=8, description="side of the decoded square image")
    batch_size: int = Field(256, ge=2, description="samples per device and step")
    global_batch_size: int | None = Field(
        None, ge=2, description="if set, the per-device batch is this / (devices x nodes)"
    )
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        0,
        description="data-loader worker processes per training process; 'auto': on CUDA the "
        "node's CPUs shared by its processes, one kept for each process, at most 16; 0 on CPU",
    )
    holdout_fraction: float = Field(
        0.2, gt=0, lt=1, description="held-out share for the digits and folder datasets"
    )
    skip_bad_images: bool = Field(
        False, description="skip (and count) unreadable images instead of failing"
    )
    max_image_pixels: int = Field(
        100_000_000,
        ge=1,
        description="largest image (width x height) an image folder may hold; a larger "
        "one is refused from its header, before decoding (a decompression bomb)",
    )
    symlinks: Literal["inside", "follow"] = Field(
        "inside",
        description="symbolic links in an image folder: 'inside' follows only those whose "
        "target lies inside the folder (others are an error naming the link); 'follow' "
        "follows every link",
    )
    jpeg_reduction: Literal[1, 2, 4, 8] = Field(
        1,
        description="largest factor by which a JPEG may be decoded smaller per side in the "
        "DCT domain (Pillow's draft), used for a sample only where every view's crop box "
        "still spans at least the view size in pixels at that scale; batched views of image "
        "folders and shards only; 1 (the default) decodes every JPEG in full",
    )
    decode_on: Literal["workers", "device"] = Field(
        "workers",
        description="where JPEGs of an image folder or shards are decoded: 'workers' (the "
        "data-loader workers, libjpeg-turbo); 'device': kept encoded in the workers and "
        "decoded a batch at a time on the training device (nvJPEG through TorchCodec on "
        "CUDA), then cropped there; batched views only; other formats and EXIF-rotated "
        "JPEGs are decoded in the workers either way",
    )
    view_engine: Literal["auto", "per-sample", "batched"] = Field(
        "auto",
        description="'batched': uint8 images batched and augmented on the training device "
        "by twinfold.augment (simclr-views family only; image folders are cropped per image "
        "in the workers first); 'per-sample': "
        "views made in the data-loader workers, image by image (torchvision); 'auto': "
        "batched where it applies, else per-sample. Views are seeded per sample either way",
    )

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        """One message for the two accepted forms (instead of one per union member)."""
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 0):
            return value
        raise ValueError("data.num_workers must be a count >= 0 or 'auto'")

    @model_validator(mode="after")
    def _needs_root(self) -> DataConfig:
        if self.dataset == "folder" and self.root is None:
            raise ValueError("data.root is required for dataset 'folder' (an image folder)")
        if self.dataset == "streaming" and self.root is None:
            raise ValueError(
                "data.root is required for dataset 'streaming' (the output directory of "
                "'twinfold data pack', or its s3:// copy)"
            )
        return self


SLOTS: dict[str, str] = {
    "encoder": "encoder",
    "projector": "head",
    "predictor": "head",
    "target": "target",
    "loss": "loss",
    "views": "augmentation",
}
"""The one slot map: :class:`MethodConfig` field -> component kind. The field
validator, the JSON schema, checkpoints' component records and exports derive from it
(a test checks it against the fields' config base classes)."""


class MethodConfig(StrictModel):
    """A composition of components; any registered names may be mixed."""

    encoder: SerializeAsAny[EncoderConfig]
    projector: SerializeAsAny[HeadConfig]
    predictor: SerializeAsAny[HeadConfig] | None = None
    target: SerializeAsAny[TargetRuleConfig]
    loss: SerializeAsAny[LossConfig]
    views: SerializeAsAny[AugmentationConfig]

    @field_validator(*SLOTS, mode="before")
    @classmethod
    def _component(cls, v: Any, info: ValidationInfo) -> Any:
        assert info.field_name is not None
        return _dispatch(SLOTS[info.field_name], v, info)



NO_DECAY_NAMES = (
    "*pos_embed*",
    "*cls_token",
    "*class_token",
    "*reg_token",
    "*dist_token",
    "*relative_position_bias_table",
)
"""Parameter names (fnmatch patterns) treated like biases and norms by default: position
embeddings (timm ``pos_embed``, torchvision ``pos_embedding``, Swin
``absolute_pos_embed``), class/register/distillation tokens (timm ``cls_token``,
``reg_token``, ``dist_token``; torchvision ``class_token``) and Swin's relative position
bias tables; what timm's ``no_weight_decay()`` lists for its ViTs and Swins."""


class OptimizerConfig(StrictModel):
    """Optimizer and parameter groups. ``lr`` is the base rate before batch scaling."""

    name: Literal["sgd", "adamw", "lars"] = "lars"
    lr: float = Field(0.2, gt=0)
    weight_decay: float = Field(1e-6, ge=0)
    weight_decay_end: float | None = Field(
        None,
        ge=0,
        description="cosine from weight_decay at the first step to this at the end of "
        "training, in the groups that decay (DINO's ViTs: 0.04 -> 0.4); None: constant",
    )
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD and LARS momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    trust_coefficient: float = Field(1e-3, gt=0, description="LARS trust coefficient")
    exclude_bias_and_norm: bool = Field(
        True, description="biases and norm parameters get no weight decay / LARS adaptation"
    )
    bias_and_norm_lr: float | None = Field(
        None, gt=0, description="separate base lr for biases and norm parameters"
    )
    no_decay_names: list[str] = Field(
        default_factory=lambda: list(NO_DECAY_NAMES),
        description="fnmatch patterns of parameter names grouped with the biases and norms "
        "(position embeddings, class and register tokens of ViTs)",
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, description="clip the global L2 norm of the gradients to this (None: off)"
    )
    fixed_lr: list[str] = Field(
        default_factory=list,
        description="online sub-modules (e.g. 'predictor') that keep their initial lr",
    )
    lr_multipliers: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="online sub-module -> factor on its learning rate, biases and norms "
        "included (e.g. {predictor: 10}: a faster predictor); the others keep factor 1",
    )
    implementation: Literal["auto", "fused", "foreach", "for-loop"] = Field(
        "auto",
        description="optimizer kernels; 'auto': fused for sgd and adamw where torch has "
        "them for the device, multi-tensor (foreach) LARS on accelerators",
    )

    @model_validator(mode="after")
    def _kernels_exist(self) -> OptimizerConfig:
        if self.name == "lars" and self.implementation == "fused":
            raise ValueError(
                "optimizer.implementation 'fused' is not available for lars; use 'foreach' "
                "or 'auto'"
            )
        return self


class ScheduleConfig(StrictModel):
    """Linear warm-up, then cosine decay; learning rates scaled by the global batch."""

    warmup_epochs: float = Field(10, ge=0)
    final_lr_ratio: float = Field(0.0, ge=0, le=1, description="end of the cosine, x peak")
    lr_scaling: Literal["linear", "none"] = Field(
        "linear", description="'linear': lr x global_batch / reference_batch_size"
    )
    reference_batch_size: int = Field(256, ge=1)


Precision = Literal[
    "auto",
    "32-true",
    "bf16-mixed",
    "16-mixed",
    "bf16-true",
    "16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
]

PRECISION_ALIASES = {"64": "64-true", "32": "32-true", "16": "16-mixed", "bf16": "bf16-mixed"}


class TrainerConfig(StrictModel):
    """Lightning Fabric settings and the length of training."""

    accelerator: str = "auto"
    devices: int | str = Field(
        1, description="processes per node: a count >= 1, -1 or 'auto' for all, or Fabric's "
        "device list such as '0,1'"
    )
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Precision = Field(
        "auto",
        description="Fabric precision; 'auto': bf16-mixed where the device multiplies bf16 "
        "natively (CUDA compute capability >= 8.0, CPUs with AMX-BF16/AVX512-BF16), else "
        "32-true",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="NHWC memory format for the networks and views; 'auto': on with 16-bit "
        "mixed precision on CPU and CUDA",
    )
    compile: bool = Field(
        False, description="torch.compile the encoder and heads (slow start, may be faster)"
    )
    sync_batchnorm: bool = Field(True, description="convert BatchNorm to SyncBatchNorm")
    epochs: int = Field(100, ge=1)
    max_steps: int | None = Field(None, ge=1, description="train for at most this many steps")
    stop_after: int | None = Field(
        None,
        ge=1,
        description="end this invocation after this global step, keeping the "
        "schedule of the whole run (for job time limits); continue with run.resume=true",
    )
    log_every: int = Field(10, ge=1, description="steps between metric rows")
    progress_bar: bool = True
    collective_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="seconds a collective (all-reduce, barrier) may wait for the other "
        "processes before the run fails with an error instead of hanging (dead peer, "
        "mismatched collective)",
    )
    matmul_precision: Literal["auto", "highest", "high", "medium"] = Field(
        "auto",
        description="torch.set_float32_matmul_precision (cuDNN's float32 convolutions follow "
        "on CUDA); 'auto': 'high' (TF32) on CUDA, 'highest' elsewhere",
    )

    @field_validator("devices")
    @classmethod
    def _some_devices(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value != -1 and value < 1:
            raise ValueError("trainer.devices must be >= 1, or -1 / 'auto' for all devices")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_alias(cls, value: Any) -> Any:
        """Fabric's short forms (32, "16", "bf16", ...) as its canonical names."""
        return PRECISION_ALIASES.get(str(value), value) if isinstance(value, int | str) else value


TrackerName = Literal["mlflow", "wandb"]
"""The experiment trackers ``run.trackers`` may list (:data:`twinfold.trackers.TRACKERS`)."""


class MlflowSettings(StrictModel):
    """MLflow, used when run.trackers lists mlflow (pip install 'twinfold[mlflow]')."""

    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI (an http(s) server, sqlite:///path.db, any URI "
        "MLflow accepts); default: MLFLOW_TRACKING_URI when set, else the SQLite store "
        "sqlite:///<run.output_dir>/mlflow.db beside the run directories, artifacts in "
        "<run.output_dir>/mlartifacts (works offline)",
    )
    artifact_location: str | None = Field(
        None,
        description="where a new experiment keeps its artifacts (default: "
        "<run.output_dir>/mlartifacts for the default store, else the server's choice)",
    )
    experiment: str | None = Field(
        None, min_length=1, description="default: MLFLOW_EXPERIMENT_NAME, else 'twinfold'"
    )
    run_name: str | None = Field(None, description="default: the run directory's name")
    tags: dict[str, str] = Field(default_factory=dict, description="extra run tags")


class WandbSettings(StrictModel):
    """Weights & Biases, used when run.trackers lists wandb (pip install
    'twinfold[wandb]')."""

    project: str | None = Field(
        None, min_length=1, description="default: WANDB_PROJECT, else 'twinfold'"
    )
    entity: str | None = Field(
        None, description="team or user; default: WANDB_ENTITY, else your default"
    )
    run_name: str | None = Field(None, description="default: the run directory's name")
    mode: Literal["auto", "online", "offline"] = Field(
        "auto",
        description="'auto': the WANDB_MODE environment variable if set, else 'online' "
        "when an API key is configured (WANDB_API_KEY or wandb login), else 'offline' "
        "(files in <run>/wandb; upload later with wandb sync)",
    )
    tags: list[str] = Field(default_factory=list, description="extra run tags")


class RunSettings(StrictModel):
    """Output directory, seeding, checkpoints, resuming and where metrics go."""

    output_dir: Path = Path("runs")
    name: str | None = Field(None, description="run directory name (default: preset-time)")
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0, description="steps; 0 = at the end of each epoch")
    resume: bool | Literal["auto"] = Field(
        False,
        description="continue from the run directory's newest checkpoint; 'auto': when it "
        "has one, else start afresh (for jobs that are requeued; give run.name)",
    )
    overwrite: bool = Field(
        False, description="allow a non-empty run directory (its old checkpoints are deleted)"
    )
    force_resume: bool = Field(
        False,
        description="resume even though the config differs from the checkpoint's in keys "
        "that change the computation (they are listed in the error otherwise)",
    )
    keep_checkpoints: int = Field(
        1,
        ge=1,
        description="checkpoint files kept: the newest N step-*.ckpt (last.ckpt "
        "always holds the newest)",
    )
    tensorboard: Literal["auto", "on", "off"] = Field(
        "auto",
        description="TensorBoard logs in <run>/tensorboard: 'auto' when tensorboard is "
        "installed, 'on' requires it (metrics.csv is always written)",
    )
    trackers: list[TrackerName] = Field(
        default_factory=list,
        description="experiment trackers that also get the params, metrics and files "
        "(besides metrics.csv and TensorBoard); each needs its extra, e.g. "
        "pip install 'twinfold[mlflow]'",
    )
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    plots: bool = Field(True, description="PNG plots in the run directory at the end")

    @field_validator("trackers", mode="before")
    @classmethod
    def _tracker_names(cls, value: Any) -> Any:
        """One name or a comma list (``--set run.trackers=mlflow,wandb``) as a list; the
        sinks that have their own keys named."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        for name in value:
            if name == "tensorboard":
                raise ValueError("TensorBoard is set by run.tensorboard (auto, on or off)")
            if name == "csv":
                raise ValueError("metrics.csv is always written; list only mlflow or wandb")
        if len(set(map(str, value))) < len(value):
            raise ValueError(f"{value} names a tracker twice")
        return value

    @field_validator("tensorboard", mode="before")
    @classmethod
    def _yaml_switch(cls, value: Any) -> Any:
        """YAML 1.1 reads a bare ``on`` / ``off`` (``--set run.tensorboard=off``) as a bool."""
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "/" in v or "\\" in v or v in {".", ".."}):
            raise ValueError("run.name must be a plain directory name without '/' or '..'")
        return v


class EvaluationConfig(StrictModel):
    """Weighted kNN on frozen backbone features (Wu et al. 2018) on the held-out labelled
    split, and the collapse diagnostics logged during training."""

    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0)
    at_end: bool = True
    every_n_epochs: int = Field(1, ge=0, description="online kNN period; 0 = only at the end")
    compare_random_init: bool = True
    health_every: int = Field(
        1,
        ge=0,
        description="log embedding std / rank-me every this many logged steps; 0 = never",
    )
    warn_on_collapse: bool = True


class RunConfig(StrictModel):
    """The whole run. ``preset`` names a registered default composition."""

    preset: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    run: RunSettings = Field(default_factory=RunSettings)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)

    def views_config(self) -> AugmentationConfig:
        """``method.views`` with an unset ``image_size`` (if the component has one)
        filled from ``data.image_size``: what the views component is built from."""
        views = self.method.views
        if getattr(views, "image_size", "absent") is None:
            return views.model_copy(update={"image_size": self.data.image_size})
        return views

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("preset"), str):
            return data
        try:
            preset = _registry(info).preset(data["preset"])
        except UnknownComponentError as exc:
            raise ValidationError.from_exception_data(
                "preset",
                [
                    {
                        "type": PydanticCustomError("unknown_preset", str(exc)),
                        "loc": ("preset",),
                        "input": data["preset"],
                    }
                ],
            ) from None
        user = {k: (v.model_dump() if isinstance(v, StrictModel) else v) for k, v in data.items()}
        return deep_merge(dict(preset.config), user)
