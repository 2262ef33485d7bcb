"""Augmentation throughput: source images per second turned into two BYOL views
(Grill et al. 2020, Table 6; the ``byol-views`` config), side by side in one run.

Pipelines, each over the same in-memory uint8 images (no decoding, so only the
augmentation is measured):

- per-sample: twinfold's torchvision v2 pipeline (``simclr-views``) as training runs it,
  a :class:`~twinfold.data.datasets.MultiViewDataset` in a DataLoader with 2 workers;
- batched: :class:`twinfold.augment.BatchedViews` on whole uint8 batches in the main
  process (torch intra-op threads = all cores), fed from memory, and fed by a DataLoader
  with 2 workers that only stacks uint8 images (the integration for an accelerator:
  augment the device batch); and run inside the 2 workers on each worker's batch (the
  engine as a ``collate_fn``: the CPU-only alternative, one thread per worker); and the
  image-folder path, where the 2 workers draw each sample's parameters from its seed and
  crop every image to every view (``CroppedViewsCollate``) and the main process runs the
  rest of the views (``BatchedViews.apply_views``);
- lightly's ``BYOLTransform`` (PIL, per sample) with the same BYOL view parameters
  (:func:`lightly_byol_transform`) in a DataLoader with 2 workers, collated like the
  per-sample row, if ``lightly`` is importable (not a dependency:
  ``pip install -e core[benchmarks]`` or ``pip install lightly``).

Each timing is one pass over all images; the pipelines take turns, repetition by
repetition, and the table reports medians. Run::

    python examples/benchmarks/augmentation.py            # 32 px and 96 px, ~1.5 min
    python examples/benchmarks/augmentation.py --sizes 32 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from twinfold.augment import BatchedViews
from twinfold.builtins.views import SimCLRViewsConfig, ViewConfig, build_simclr_views
from twinfold.data.base import ImageSource
from twinfold.data.datasets import MultiViewDataset, SeededImageDataset
from twinfold.data.loaders import CroppedViewsCollate, collate_views
from twinfold_byol.views import BYOLViewsConfig


class TensorSource(ImageSource):
    """Unlabelled images held in one uint8 tensor ``[N, 3, H, W]``."""

    def __init__(self, images: Tensor) -> None:
        self.images, self.classes = images, []

    def __len__(self) -> int:
        return self.images.shape[0]

    def load(self, index: int) -> Tensor:
        return self.images[index]

    def label(self, index: int) -> int | None:
        return None


class Images(Dataset[Tensor]):
    """The uint8 image itself: what a dataset returns when views are made on the batch."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class PILViews(Dataset[list[Tensor]]):
    """A PIL-based transform (lightly's) applied to each image."""

    def __init__(self, images: Tensor, transform: Callable) -> None:
        from torchvision.transforms.v2.functional import to_pil_image

        self.images, self.transform, self.to_pil = images, transform, to_pil_image

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> list[Tensor]:
        return self.transform(self.to_pil(self.images[index]))


class AugmentBatch:
    """``collate_fn`` that stacks uint8 images and runs the batched engine on them, in the
    data-loader worker (one intra-op thread each); each worker draws from its own
    generator, seeded from the worker's torch seed."""

    def __init__(self, engine: BatchedViews) -> None:
        self.engine = engine
        self.generator: torch.Generator | None = None

    def __call__(self, images: list[Tensor]) -> list[Tensor]:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(torch.initial_seed())
        return self.engine(torch.stack(images), self.generator)


def loader(dataset: Dataset, batch: int, workers: int, collate: Callable | None) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def epoch_of(batches: DataLoader) -> Callable[[], int]:
    """One pass over a loader that yields lists of views; returns the image count."""

    def run() -> int:
        n = 0
        for views in batches:
            n += views[0].shape[0]
        return n

    return run


def batched_epoch(
    engine: BatchedViews, batches: Callable[[], Iterable[Tensor]], seed: int
) -> Callable[[], int]:
    generator = torch.Generator().manual_seed(seed)

    def run() -> int:
        n = 0
        for images in batches():
            views = engine(images, generator)
            n += views[0].shape[0]
        return n

    return run


def folder_epoch(engine: BatchedViews, batches: DataLoader) -> Callable[[], int]:
    """What training on an image folder does: the workers draw each sample's parameters
    and crop every image to every view (:class:`CroppedViewsCollate`), the main process
    runs the rest of the views on the batches (:meth:`BatchedViews.apply_views`)."""

    def run() -> int:
        n = 0
        for crops, _, params in batches:
            views = engine.apply_views(crops, params)
            n += views[0].shape[0]
        return n

    return run


def lightly_byol_transform(cfg: SimCLRViewsConfig, size: int) -> Callable[[Any], list[Tensor]]:
    """lightly's ``BYOLTransform`` (PIL, per sample) with the parameters of ``cfg``'s two
    views (BYOL's pair, Grill et al. 2020, Table 6): ``BYOLView1Transform`` from
    ``cfg.views[0]``, ``BYOLView2Transform`` from ``cfg.views[1]``, ``cfg``'s
    normalisation, output side ``size``.

    Raises ImportError without lightly, and ValueError for what lightly's constructors
    cannot express: not two views, a crop area not ending at 1, an aspect-ratio range
    other than (3/4, 4/3), a solarize threshold other than 0.5 (lightly's 128 inverts the
    same uint8 values, >= 128, as twinfold's 127.5). What stays different: lightly blurs
    with PIL's ``GaussianBlur(radius=sigma)``, whose support grows with sigma, where
    twinfold's kernel side is ``blur_kernel_fraction`` of the image (3 px at 16-32 px)."""
    from lightly.transforms.byol_transform import (
        BYOLTransform,
        BYOLView1Transform,
        BYOLView2Transform,
    )

    if len(cfg.views) != 2:
        raise ValueError(f"lightly's BYOLTransform makes 2 views, the config {len(cfg.views)}")

    def arguments(view: ViewConfig) -> dict[str, Any]:
        if view.crop_scale[1] != 1.0:
            raise ValueError(f"lightly crops areas (min_scale, 1.0); got {view.crop_scale}")
        if not all(abs(a - b) < 1e-9 for a, b in zip(view.crop_ratio, (3 / 4, 4 / 3))):
            raise ValueError(f"lightly crops aspect ratios (3/4, 4/3); got {view.crop_ratio}")
        if view.solarize_threshold != 0.5:
            raise ValueError(f"lightly solarizes at 128; got {view.solarize_threshold}")
        return {
            "input_size": size,
            "cj_prob": view.jitter_p,
            "cj_strength": 1.0,
            "cj_bright": view.brightness,
            "cj_contrast": view.contrast,
            "cj_sat": view.saturation,
            "cj_hue": view.hue,
            "min_scale": view.crop_scale[0],
            "random_gray_scale": view.grayscale_p,
            "gaussian_blur": view.blur_p,
            "solarization_prob": view.solarize_p,
            "sigmas": tuple(view.blur_sigma),
            "hf_prob": view.flip_p,
            "vf_prob": 0.0,
            "rr_prob": 0.0,
            "normalize": {"mean": list(cfg.mean), "std": list(cfg.std)},
        }

    return BYOLTransform(
        view_1_transform=BYOLView1Transform(**arguments(cfg.views[0])),
        view_2_transform=BYOLView2Transform(**arguments(cfg.views[1])),
    )


def lightly_version() -> str | None:
    """The installed lightly version, or None when it is not importable."""
    try:
        import lightly
    except ImportError:
        return None
    return str(lightly.__version__)


def measure(pipelines: dict[str, Callable[[], int]], repeats: int) -> dict[str, list[float]]:
    """Images per second of each pipeline: one warm-up pass, then ``repeats`` timed passes,
    the pipelines taking turns so that slow drifts of the machine hit all of them."""
    for run in pipelines.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(repeats):
        for name, run in pipelines.items():
            start = time.perf_counter()
            n = run()
            rates[name].append(n / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 96])
    parser.add_argument(
        "--images",
        type=int,
        nargs="+",
        default=[2048, 1024],
        help="source images per pass, one number per size (or one for all)",
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = args.images if len(args.images) > 1 else args.images * len(args.sizes)

    threads = torch.get_num_threads()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {threads} intra-op threads (batched engine), "
        f"{args.workers} data-loader workers (1 thread each), batch {args.batch_size}, "
        f"lightly {lightly_version() or 'not installed'}"
    )
    medians: dict[int, dict[str, float]] = {}
    rows = []
    for size, count in zip(args.sizes, counts, strict=False):
        g = torch.Generator().manual_seed(args.seed)
        images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=g)
        cfg = BYOLViewsConfig(image_size=size)
        engine = BatchedViews.from_config(cfg)
        per_sample = MultiViewDataset(TensorSource(images), build_simclr_views(cfg), args.seed)
        b = args.batch_size

        def from_memory(images: Tensor = images, b: int = b) -> Iterable[Tensor]:
            return (images[i : i + b] for i in range(0, images.shape[0], b))

        uint8_loader = loader(Images(images), b, args.workers, None)
        pipelines = {
            f"per-sample torchvision, {args.workers} workers": epoch_of(
                loader(per_sample, b, args.workers, collate_views)
            ),
            "batched engine, uint8 batches from memory": batched_epoch(
                engine, from_memory, args.seed
            ),
            f"batched engine, uint8 batches from {args.workers} workers": batched_epoch(
                engine, lambda loader=uint8_loader: loader, args.seed
            ),
        }
        pipelines[f"batched engine in {args.workers} workers (collate_fn)"] = epoch_of(
            loader(Images(images), b, args.workers, AugmentBatch(engine))
        )
        folder_loader = loader(
            SeededImageDataset(TensorSource(images), args.seed),
            b,
            args.workers,
            CroppedViewsCollate(engine),
        )
        pipelines[f"folder path: per-image crops in {args.workers} workers"] = folder_epoch(
            engine, folder_loader
        )
        lightly_name = f"lightly BYOLTransform, {args.workers} workers"
        try:
            lightly: Callable | None = lightly_byol_transform(cfg, size)
        except ImportError:
            lightly = None
        if lightly is not None:
            pipelines[lightly_name] = epoch_of(
                loader(PILViews(images, lightly), b, args.workers, collate_views)
            )
        rates = measure(pipelines, args.repeats)
        base = statistics.median(next(iter(rates.values())))
        medians[size] = {}
        for name, r in rates.items():
            med = statistics.median(r)
            medians[size][name] = med
            rows.append((size, name, f"{med:,.0f}", f"{min(r):,.0f}-{max(r):,.0f}", med / base))
        if lightly is None:
            rows.append((size, lightly_name, "skipped", "lightly not importable", None))

    width = max(len(r[1]) for r in rows)
    header = f"{'px':>4}  {'pipeline':<{width}}  {'images/s':>9}  {'range':>15}  vs per-sample"
    print(f"\ntwo BYOL views per source image, median of {args.repeats} passes\n")
    print(header)
    print("-" * len(header))
    for size, name, med, spread, ratio in rows:
        r = "" if ratio is None else f"{ratio:.2f}x"
        print(f"{size:>4}  {name:<{width}}  {med:>9}  {spread:>15}  {r}")
    return medians


if __name__ == "__main__":
    main()
