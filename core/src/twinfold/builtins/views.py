"""The SimCLR family of view augmentations, per sample, with torchvision (builtin
``simclr-views``). Each view has its own parameters, so asymmetric recipes such as
BYOL's (Grill et al. 2020, Table 6) are one config."""

from __future__ import annotations

from typing import Literal

import torch
import torchvision.transforms.v2 as v2
from pydantic import Field, ValidationInfo, field_validator
from torch import Tensor

from twinfold.augment.blur import blur_kernel_size
from twinfold.augment.views import BatchedViews
from twinfold.components import AugmentationConfig, StrictModel, ViewPipeline

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ViewConfig(StrictModel):
    """Parameters of one view. Probabilities are per sample."""

    crop_scale: tuple[float, float] = Field((0.08, 1.0), description="area range")
    crop_ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="aspect ratio range")
    flip_p: float = Field(0.5, ge=0, le=1)
    jitter_p: float = Field(0.8, ge=0, le=1)
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.2, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    grayscale_p: float = Field(0.2, ge=0, le=1)
    blur_p: float = Field(0.5, ge=0, le=1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_fraction: float = Field(0.1, gt=0, le=1, description="kernel side / image side")
    solarize_p: float = Field(0.0, ge=0, le=1)
    solarize_threshold: float = Field(0.5, ge=0, le=1)
    size: int | None = Field(
        None, ge=1, description="this view's output side; default the pipeline's image_size"
    )

    def output_size(self, image_size: int) -> int:
        """The side of this view: ``size`` when set (e.g. multi-crop's small local crops),
        else the pipeline's ``image_size``."""
        return image_size if self.size is None else self.size

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("crop_scale must be (min, max) with 0 < min <= max <= 1")
        return value

    @field_validator("crop_ratio", "blur_sigma")
    @classmethod
    def _positive_range(
        cls, value: tuple[float, float], info: ValidationInfo
    ) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"{info.field_name} must be (min, max) with 0 < min <= max")
        return value


class SimCLRViewsConfig(AugmentationConfig):
    """Two (or more) independently augmented views of each image."""

    name: Literal["simclr-views"] = "simclr-views"
    image_size: int | None = Field(None, ge=1, description="output side; default data.image_size")
    views: list[ViewConfig] = Field(default_factory=lambda: [ViewConfig(), ViewConfig()])
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @field_validator("views")
    @classmethod
    def _at_least_two_views(cls, value: list[ViewConfig]) -> list[ViewConfig]:
        if len(value) < 2:
            raise ValueError(
                f"views must list at least 2 views (the losses compare views pairwise); "
                f"got {len(value)}"
            )
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(s > 0 for s in value):
            raise ValueError("std must be > 0 for every channel (images are divided by it)")
        return value


def _maybe(p: float, transform: v2.Transform) -> list[v2.Transform]:
    """Apply with probability p; p == 0 drops the op, p == 1 always applies it."""
    if p <= 0:
        return []
    return [transform] if p >= 1 else [v2.RandomApply([transform], p=p)]


def view_transform(view: ViewConfig, size: int) -> v2.Compose:
    """One view's augmentation on uint8 tensors (SimCLR, Chen et al. 2020; BYOL Table 6):
    random resized crop, flip, colour jitter (its four ops in random order), grayscale,
    Gaussian blur, solarize. Ops with probability 0 are left out."""
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(size, scale=view.crop_scale, ratio=view.crop_ratio, antialias=True)
    ]
    if view.flip_p > 0:
        ops.append(v2.RandomHorizontalFlip(p=view.flip_p))
    jitter = v2.ColorJitter(view.brightness, view.contrast, view.saturation, view.hue)
    ops += _maybe(view.jitter_p, jitter)
    if view.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=view.grayscale_p))
    kernel = blur_kernel_size(size, view.blur_kernel_fraction)
    ops += _maybe(view.blur_p, v2.GaussianBlur(kernel, sigma=view.blur_sigma))
    if view.solarize_p > 0:
        ops.append(v2.RandomSolarize(threshold=view.solarize_threshold * 255, p=view.solarize_p))
    return v2.Compose(ops)


def _rgb(image: Tensor) -> Tensor:
    """Check a decoded image and expand gray ``[1, H, W]`` to three channels."""
    if image.dtype != torch.uint8:
        raise TypeError(f"views expect uint8 images, got {image.dtype}")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"views expect [C, H, W] images with C = 1 or 3, got {tuple(image.shape)}")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


class SimCLRViews(ViewPipeline):
    """Per-sample view pipeline (torchvision v2); randomness from torch's global
    generator, which the data layer seeds per (seed, epoch, sample)."""

    def __init__(self, cfg: SimCLRViewsConfig) -> None:
        if cfg.image_size is None:
            raise ValueError(
                "views.image_size must be set (the training loop fills it from data.image_size)"
            )
        if not cfg.views:
            raise ValueError("views.views must list at least one view")
        self.cfg = cfg
        self.size = cfg.image_size
        self.num_views = len(cfg.views)
        self.views = [view_transform(v, v.output_size(self.size)) for v in cfg.views]
        self.finish = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg.mean, cfg.std)]
        )
        self.plain_resize = v2.Compose(
            [v2.Resize(self.size, antialias=True), v2.CenterCrop(self.size)]
        )

    def __call__(self, image: Tensor) -> list[Tensor]:
        image = _rgb(image)
        return [self.finish(t(image)) for t in self.views]

    def plain(self, image: Tensor) -> Tensor:
        return self.finish(self.plain_resize(_rgb(image)))

    def batched_engine(self) -> BatchedViews | None:
        """The same recipe a batch at a time on the device (:mod:`twinfold.augment`);
        None for a subclass that makes its own per-sample views (overrides ``__call__``)
        without offering an engine of its own, so its views are never replaced."""
        if type(self).__call__ is not SimCLRViews.__call__:
            return None
        return BatchedViews.from_config(self.cfg)


def build_simclr_views(cfg: SimCLRViewsConfig) -> SimCLRViews:
    """Factory for every config class derived from :class:`SimCLRViewsConfig`."""
    return SimCLRViews(cfg)
