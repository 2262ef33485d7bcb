"""Batched view augmentation: the SimCLR / BYOL view recipe (Grill et al. 2020, Table 6;
Chen et al. 2020, Appendix A) applied to a whole uint8 batch at once, on any device, with
per-sample random parameters from a caller's ``torch.Generator``.

Same parameters and op order as the per-sample pipeline
(:mod:`twinfold.builtins.views`, built on torchvision v2): random resized crop,
horizontal flip, colour jitter (brightness, contrast, saturation, hue in a random order
per sample), grayscale, Gaussian blur, solarize, normalisation. The differences: the
per-sample pipeline rounds to uint8 after each op, here all arithmetic is float32; and
the parameters come from the caller's generator batch by batch, not from torch's global
generator reseeded per sample, so views depend on how samples are batched, unless they
are drawn with :meth:`BatchedViews.sample_per_sample` from one seed per sample (as
training with ``data.view_engine = "batched"`` does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from twinfold.augment.blur import blur_kernel_size, gaussian_blur
from twinfold.augment.collate import BatchedViewsCollate, CroppedViewsCollate
from twinfold.augment.color import color_jitter_, grayscale, solarize
from twinfold.augment.crop import (
    CROP_TRIES,
    crop_box_size,
    crop_boxes_from_uniforms,
    resized_crop,
)

if TYPE_CHECKING:  # the configs live with the per-sample pipeline, which builds this engine
    from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig


@dataclass(frozen=True)
class ViewParams:
    """Random parameters of one view for a batch of ``B`` images (all tensors ``[B]``
    or ``[B, k]``, on the generator's device)."""

    boxes: Tensor
    """int64 ``[B, 4]``: crop (top, left, height, width) in source pixels."""
    flip: Tensor
    """bool: mirror horizontally."""
    jitter: Tensor
    """bool: apply the colour jitter."""
    order: Tensor
    """int64 ``[B, 4]``: permutation of (brightness, contrast, saturation, hue)."""
    factors: Tensor
    """float32 ``[B, 4]``: brightness, contrast, saturation factors and hue shift."""
    grayscale: Tensor
    """bool: convert to grayscale."""
    blur: Tensor
    """bool: apply the Gaussian blur."""
    sigma: Tensor
    """float32: blur sigma in pixels."""
    solarize: Tensor
    """bool: solarize."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ViewParams:
        return ViewParams(
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                for f in fields(self)
            }
        )

    def pin_memory(self) -> ViewParams:
        """The parameters in page-locked memory (what a DataLoader with ``pin_memory``
        calls on each batch element that has this method)."""
        return ViewParams(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def select(self, index: Tensor) -> ViewParams:
        """The parameters of the samples ``index`` (int64 ``[k]``), in that order."""
        return ViewParams(
            **{f.name: getattr(self, f.name).index_select(0, index) for f in fields(self)}
        )

    def narrow(self, start: int, length: int) -> ViewParams:
        """The parameters of samples ``start`` to ``start + length - 1`` (views, no copy)."""
        return ViewParams(
            **{f.name: getattr(self, f.name).narrow(0, start, length) for f in fields(self)}
        )

    def with_full_boxes(self, size: int) -> ViewParams:
        """The same parameters with every crop box the whole ``size x size`` image: for
        views already cropped and resized (see :meth:`BatchedViews.crop_per_sample`)."""
        boxes = torch.tensor([0, 0, size, size], dtype=torch.int64, device=self.boxes.device)
        return replace(self, boxes=boxes.expand_as(self.boxes).clone())

    @staticmethod
    def cat(parts: Sequence[ViewParams]) -> ViewParams:
        """The parameters of the concatenated batches ``parts``, in order."""
        if not parts:
            raise ValueError("ViewParams.cat needs at least one part")
        return ViewParams(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(ViewParams)}
        )


CHUNK_BYTES = 4 << 20
"""On one CPU thread, float32 views of at most this many bytes go through the ops at once
(see :meth:`BatchedView.apply_float`): 4 MiB, i.e. batches up to 341 at 32 px, 6 samples
at 224 px; a few times a core's L2 cache, well inside L3. Measured at 224 px, batch 64,
one thread: 4.3 ms per image for both views against 5.0 ms for the whole batch (1 and
8 MiB chunks were slower)."""

UNIFORMS = 14
"""float32 uniforms per sample and view besides the crop's float64 ones (see
:meth:`BatchedView.from_uniforms`)."""


def jitter_ranges(view: ViewConfig) -> list[tuple[float, float]]:
    """torchvision ``ColorJitter``'s factor ranges: ``[max(0, 1 - b), 1 + b]`` for
    brightness, contrast and saturation, ``[-h, h]`` for hue."""
    factors = (view.brightness, view.contrast, view.saturation)
    ranges = [(max(0.0, 1.0 - v), 1.0 + v) for v in factors]
    return [*ranges, (-view.hue, view.hue)]


class BatchedView:
    """One view: ``view(images, generator)`` maps uint8 ``[B, C, H, W]`` (C = 1 or 3) to
    normalised float32 ``[B, 3, size, size]`` on the images' device.

    ``antialias=True`` (the default) resamples like the per-sample pipeline's
    ``RandomResizedCrop(antialias=True)``; ``False`` like plain bilinear interpolation.
    """

    def __init__(
        self,
        view: ViewConfig,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        antialias: bool = True,
    ) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            lo, hi = getattr(view, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be a positive (min, max) range, got {(lo, hi)}")
        self.view, self.size, self.antialias = view, size, antialias
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need one value per RGB channel, got {mean}, {std}")
        self.scale = [1.0 / s for s in std]
        self.shift = [-m / s for m, s in zip(mean, std, strict=True)]
        self.kernel_size = blur_kernel_size(size, view.blur_kernel_fraction)
        self.ranges = jitter_ranges(view)
        identity = (1.0, 1.0, 1.0, 0.0)
        # torchvision's ColorJitter skips an op whose range is the single identity value
        self.enabled = tuple(r != (i, i) for r, i in zip(self.ranges, identity, strict=True))

    def sample(self, batch: int, height: int, width: int, generator: torch.Generator) -> ViewParams:
        """Draw the parameters of ``batch`` samples from ``generator`` (on its device);
        the same generator state gives the same parameters."""
        device = generator.device
        f64 = dict(dtype=torch.float64, device=device)
        crop = torch.rand(batch, CROP_TRIES, 2, generator=generator, **f64)
        position = torch.rand(batch, 2, generator=generator, **f64)
        u = [torch.rand(batch, n, generator=generator, device=device) for n in (5, 4, 4, 1)]
        return self.from_uniforms(crop, position, torch.cat(u, dim=1), height, width)

    def from_uniforms(
        self, crop: Tensor, position: Tensor, u: Tensor, height: int, width: int
    ) -> ViewParams:
        """The parameters for uniform draws in [0, 1): float64 ``crop`` ``[B, 10, 2]``
        and ``position`` ``[B, 2]`` (see :func:`crop_boxes_from_uniforms`), float32 ``u``
        ``[B, UNIFORMS]``: 5 for the coin flips (flip, jitter, grayscale, blur,
        solarize), 4 for the jitter order, 4 for the jitter factors, 1 for sigma."""
        v = self.view
        boxes = crop_boxes_from_uniforms(crop, position, height, width, v.crop_scale, v.crop_ratio)
        coins, order, unit, s = u[:, :5], u[:, 5:9].argsort(dim=1), u[:, 9:13], u[:, 13]
        lo = torch.tensor([r[0] for r in self.ranges], device=u.device)
        hi = torch.tensor([r[1] for r in self.ranges], device=u.device)
        s_lo, s_hi = v.blur_sigma
        return ViewParams(
            boxes=boxes,
            flip=coins[:, 0] < v.flip_p,
            jitter=coins[:, 1] < v.jitter_p,
            order=order,
            factors=lo + (hi - lo) * unit,
            grayscale=coins[:, 2] < v.grayscale_p,
            blur=coins[:, 3] < v.blur_p,
            sigma=s_lo + (s_hi - s_lo) * s,
            solarize=coins[:, 4] < v.solarize_p,
        )

    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """The view of ``images`` for the given parameters."""
        images = check_images(images)
        return self.apply_float(images, params, value_range(images))

    @torch.no_grad()
    def apply_float(self, images: Tensor, params: ViewParams, value_max: float) -> Tensor:
        """:meth:`apply` on checked images (uint8 or float) with values in ``[0, value_max]``.

        On a CPU with one intra-op thread (a data-loader worker, a benchmark per core),
        batches larger than :data:`CHUNK_BYTES` of float32 views go in chunks of samples
        that fit in it, each through every op before the next: the ops work per sample,
        so the views are the same, and large images stay in the core's cache. With
        several threads every op is a parallel region whose synchronisation costs more
        than the cache saves (96 px, batch 256, 2 threads: 1.5x slower), on a GPU every
        op a kernel launch: there the batch goes whole."""
        batch = images.shape[0]
        step = max(1, CHUNK_BYTES // (3 * self.size * self.size * 4))
        if step >= batch or images.device.type != "cpu" or torch.get_num_threads() > 1:
            return self._view(images, params, value_max)
        out = torch.empty(batch, 3, self.size, self.size, device=images.device)
        for start in range(0, batch, step):
            n = min(step, batch - start)
            chunk = slice(start, start + n)
            self._view(images[chunk], params.narrow(start, n), value_max, out[chunk])
        return out

    def _view(
        self, images: Tensor, params: ViewParams, value_max: float, out: Tensor | None = None
    ) -> Tensor:
        """The view of ``images``, normalised into ``out`` (in place where None)."""
        x = resized_crop(
            images,
            params.boxes,
            self.size,
            flip=params.flip,
            antialias=self.antialias,
            scale=1.0 / value_max,
        )
        if any(self.enabled) and bool(params.jitter.any()):
            x = color_jitter_(x, params.order, params.factors, params.jitter, self.enabled)
        x = _where(params.grayscale, grayscale, x)
        x = _where(params.blur, lambda y, s: gaussian_blur(y, s, self.kernel_size), x, params.sigma)
        x = _where(params.solarize, lambda y: solarize(y, self.view.solarize_threshold), x)
        out = x if out is None else out
        for c in range(3):  # (x - mean) / std, with scalars (fast kernels)
            torch.mul(x[:, c], self.scale[c], out=out[:, c]).add_(self.shift[c])
        return out

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        height, width = images.shape[-2:]
        return self.apply(images, self.sample(images.shape[0], height, width, generator))


def _where(mask: Tensor, fn: Callable[..., Tensor], x: Tensor, *per_sample: Tensor) -> Tensor:
    """``fn`` applied to the samples selected by ``mask`` (all, some or none)."""
    chosen = mask.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return x
    if chosen.numel() == mask.numel():
        return fn(x, *(p.to(x.device) for p in per_sample))
    chosen = chosen.to(x.device)
    args = (p.to(x.device).index_select(0, chosen) for p in per_sample)
    return x.index_copy_(0, chosen, fn(x.index_select(0, chosen), *args))


def value_range(images: Tensor) -> float:
    """The value of white: 255 for uint8 images, 1 for float ones."""
    return 255.0 if images.dtype == torch.uint8 else 1.0


def check_images(images: Tensor) -> Tensor:
    """uint8 (or float in [0, 1]) ``[B, C, H, W]`` with C = 1 (expanded) or 3."""
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"batched views expect uint8 (or float) images, got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"batched views expect a [B, C, H, W] batch with C = 1 or 3, got {tuple(images.shape)}"
        )
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def _crop_uniforms(f64: Tensor, view: int) -> tuple[Tensor, Tensor]:
    """View ``view``'s crop draws in per-sample float64 uniforms (see
    :meth:`BatchedViews.sample_per_sample`): the tries ``[B, CROP_TRIES, 2]`` and the
    position ``[B, 2]``."""
    crop_n = CROP_TRIES * 2 + 2
    crop = f64[:, view * crop_n : (view + 1) * crop_n]
    return crop[:, : 2 * CROP_TRIES].reshape(-1, CROP_TRIES, 2), crop[:, 2 * CROP_TRIES :]


def scale_box(
    box: Sequence[int], full: tuple[int, int], actual: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A crop box (top, left, height, width) drawn for an image of size ``full`` mapped
    onto the same image at size ``actual`` (decoded smaller): edges scaled and rounded,
    at least one pixel wide."""
    if tuple(full) == tuple(actual):
        return (box[0], box[1], box[2], box[3])
    sy, sx = actual[0] / full[0], actual[1] / full[1]
    top, left = round(box[0] * sy), round(box[1] * sx)
    height = max(1, round((box[0] + box[2]) * sy) - top)
    width = max(1, round((box[1] + box[3]) * sx) - left)
    return top, left, height, width


class BatchedViews:
    """All views of a recipe: ``views(images, generator)`` returns one normalised float32
    ``[B, 3, s, s]`` tensor per configured view (``s`` the view's own ``size`` when set,
    else ``size``: multi-crop views of two sizes are one batch per view), drawn in view order from
    ``generator`` (give each rank or worker its own generator for its own stream).

    Build it from the per-sample pipeline's config with :meth:`from_config`.
    """

    def __init__(
        self,
        views: Sequence[ViewConfig],
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        antialias: bool = True,
    ) -> None:
        if not views:
            raise ValueError("views must list at least one view")
        self.size = size
        self.views = [
            BatchedView(v, v.output_size(size), mean, std, antialias=antialias) for v in views
        ]
        self.num_views = len(self.views)

    @classmethod
    def from_config(
        cls, cfg: SimCLRViewsConfig, image_size: int | None = None, *, antialias: bool = True
    ) -> BatchedViews:
        """The engine for a ``simclr-views`` config (or one derived from it, such as
        ``byol-views``); ``image_size`` overrides ``cfg.image_size``."""
        size = image_size if image_size is not None else cfg.image_size
        if size is None:
            raise ValueError("image_size must be given (or set views.image_size in the config)")
        return cls(cfg.views, size, cfg.mean, cfg.std, antialias=antialias)

    def sample(
        self, batch: int, height: int, width: int, generator: torch.Generator
    ) -> list[ViewParams]:
        return [v.sample(batch, height, width, generator) for v in self.views]

    def sample_per_sample(self, seeds: Sequence[int], height: int, width: int) -> list[ViewParams]:
        """Parameters of every view for a batch whose sample ``i`` draws its uniforms
        from its own CPU generator seeded with ``seeds[i]`` (two calls per sample: the
        crop's float64 uniforms of all views, then the other float32 uniforms of all
        views), turned into parameters for the whole batch at once: each sample's views
        depend only on its seed (and the image size), not on the batch it is in or its
        position there, so they can be seeded per (run seed, epoch, sample index)."""
        return self._params(*self._uniforms(seeds), height, width)

    def sample_per_sample_sizes(
        self, seeds: Sequence[int], sizes: Sequence[tuple[int, int]]
    ) -> list[ViewParams]:
        """:meth:`sample_per_sample` for images of differing sizes: sample ``i`` is
        ``sizes[i]`` = (height, width); the same draws, so a sample's parameters equal
        those :meth:`sample_per_sample` gives it in a batch of its own size."""
        f64, f32 = self._uniforms(seeds)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, size in enumerate(sizes):
            groups.setdefault((int(size[0]), int(size[1])), []).append(i)
        order = torch.tensor([i for rows in groups.values() for i in rows], dtype=torch.long)
        parts = [
            self._params(f64[rows], f32[rows], height, width)
            for (height, width), rows in groups.items()
        ]
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order))
        return [
            ViewParams.cat([part[v] for part in parts]).select(back) for v in range(self.num_views)
        ]

    def _uniforms(self, seeds: Sequence[int]) -> tuple[Tensor, Tensor]:
        views, crop_n = self.num_views, CROP_TRIES * 2 + 2
        f64 = torch.empty(len(seeds), views * crop_n, dtype=torch.float64)
        f32 = torch.empty(len(seeds), views * UNIFORMS)
        for i, seed in enumerate(seeds):  # two draws per sample, all views at once
            generator = torch.Generator().manual_seed(int(seed))
            torch.rand(views * crop_n, generator=generator, dtype=torch.float64, out=f64[i])
            torch.rand(views * UNIFORMS, generator=generator, out=f32[i])
        return f64, f32

    def _params(self, f64: Tensor, f32: Tensor, height: int, width: int) -> list[ViewParams]:
        params = []
        for v, view in enumerate(self.views):
            u = f32[:, v * UNIFORMS : (v + 1) * UNIFORMS]
            params.append(view.from_uniforms(*_crop_uniforms(f64, v), u, height, width))
        return params

    def crop_per_sample(
        self,
        images: Sequence[Tensor],
        params: Sequence[ViewParams],
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[list[Tensor], list[ViewParams]]:
        """For images of differing sizes: crop and resize each image to each view's box
        on the CPU, one image at a time (torchvision's ``resized_crop`` on uint8, as the
        per-sample pipeline does it), giving one uint8 ``[B, C, size, size]`` batch per
        view and the parameters with full-image boxes, for :meth:`apply_views` on the
        device (the flip and every later op run there). ``sizes`` are the sizes the
        boxes were drawn for, where an image was decoded smaller (its boxes are scaled
        to it, edges rounded to whole pixels)."""
        crops, full = [], []
        for view, p in zip(self.views, params, strict=True):
            boxes, size = p.boxes.tolist(), view.size
            if sizes is not None:
                boxes = [
                    scale_box(box, drawn, tuple(image.shape[-2:]))
                    for box, drawn, image in zip(boxes, sizes, images, strict=True)
                ]
            crops.append(
                torch.stack(
                    [
                        TF.resized_crop(
                            check_images(image[None])[0],
                            *box,
                            [size, size],
                            antialias=view.antialias,
                        )
                        for image, box in zip(images, boxes, strict=True)
                    ]
                )
            )
            full.append(p.with_full_boxes(size))
        return crops, full

    def apply_views(self, images: Sequence[Tensor], params: Sequence[ViewParams]) -> list[Tensor]:
        """Every view for per-view batches (``images[v]`` the crops of view ``v``, as
        :meth:`crop_per_sample` makes them), on their device."""
        if len(images) != self.num_views or len(params) != self.num_views:
            raise ValueError(f"expected images and parameters for {self.num_views} views")
        out = []
        for view, batch, p in zip(self.views, images, params, strict=True):
            batch = check_images(batch)
            out.append(view.apply_float(batch, p, value_range(batch)))
        return out

    def jpeg_reduction(self, seed: int, height: int, width: int, limit: int) -> int:
        """By how much (1, 2, 4 or 8, at most ``limit``) an image of ``height x width``
        may be decoded smaller per side for the sample with ``seed``: the largest factor
        at which every view's crop box still spans at least the view's own size per side
        (multi-crop views differ), so each crop is still shrunk (never enlarged)."""
        crop_n = CROP_TRIES * 2 + 2
        generator = torch.Generator().manual_seed(int(seed))  # the draws of _uniforms
        draws = torch.rand(self.num_views * crop_n, generator=generator, dtype=torch.float64)
        u = draws.tolist()
        room = min(  # crop side / view size, the least over the views
            min(
                crop_box_size(
                    [u[v * crop_n + 2 * t : v * crop_n + 2 * t + 2] for t in range(CROP_TRIES)],
                    height,
                    width,
                    view.view.crop_scale,
                    view.view.crop_ratio,
                )
            )
            / view.size
            for v, view in enumerate(self.views)
        )
        reduction = 1
        while reduction * 2 <= limit and room >= reduction * 2:
            reduction *= 2
        return reduction

    def collate_fn(self, *, fixed_size: bool) -> BatchedViewsCollate:
        """The data-loader collate function (:class:`~twinfold.components.BatchedViewEngine`):
        per-sample parameters from each sample's seed, and for images of differing sizes
        (``fixed_size`` false) the crops made per image in the workers."""
        return BatchedViewsCollate(self) if fixed_size else CroppedViewsCollate(self)

    def make_views(self, batch: Any, device: torch.device) -> list[Tensor]:
        """The views of a collated batch, made on ``device``: the uint8 images travel
        (a quarter of float32's bytes), asynchronously on CUDA (from pinned memory the
        copy overlaps the work queued before it), and become float32 there."""
        images, _, params = batch
        device = torch.device(device)
        non_blocking = device.type == "cuda"
        params = [p.to(device, non_blocking) for p in params]
        if isinstance(images, list):  # one batch of crops per view (image folders)
            return self.apply_views([im.to(device, non_blocking=non_blocking) for im in images],
                                    params)  # fmt: skip
        return self.apply(images.to(device, non_blocking=non_blocking), params)

    def apply(self, images: Tensor, params: Sequence[ViewParams]) -> list[Tensor]:
        """Every view of ``images`` for the given parameters (one :class:`ViewParams`
        per view, on any device)."""
        if len(params) != self.num_views:
            raise ValueError(f"expected parameters for {self.num_views} views, got {len(params)}")
        images = check_images(images)
        white = value_range(images)
        return [v.apply_float(images, p, white) for v, p in zip(self.views, params, strict=True)]

    def __call__(self, images: Tensor, generator: torch.Generator) -> list[Tensor]:
        images = check_images(images)
        batch, _, height, width = images.shape
        return [
            view.apply_float(
                images, view.sample(batch, height, width, generator), value_range(images)
            )
            for view in self.views
        ]
