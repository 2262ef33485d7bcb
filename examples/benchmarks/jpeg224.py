"""JPEG files to two BYOL views at ImageNet sizes: source images per second per CPU core,
at 224 px (``--size``), from real JPEG files on disk, side by side in one run.

The script first writes ``--images`` photo-like JPEGs of 500 x 375 (ImageNet's typical
size; quality 90; smooth colour fields, filled ellipses and rectangles, light noise:
generated, nothing is downloaded) in two class folders, and packs them with
``twinfold data pack`` for the streaming row. Every row then runs in this one process,
with one intra-op thread (``torch.set_num_threads(1)``), so its rate is per CPU core;
each row decodes every file, crops and makes both views of ``byol-views`` (Grill et al.
2020, Table 6) on the CPU:

- twinfold folder: ``dataset: folder`` as training runs it with the batched engine: a
  :class:`~twinfold.data.datasets.SeededImageDataset` over the folder (JPEG decoded by
  libjpeg-turbo; ``--jpeg-reduction`` as ``data.jpeg_reduction``), the
  per-image crops of :class:`~twinfold.data.loaders.CroppedViewsCollate` (what a
  data-loader worker does), then the rest of both views on the CPU
  (:meth:`~twinfold.augment.BatchedViews.apply_views`; on a GPU this part runs there);
- twinfold folder, worker part only: the same without ``apply_views`` (what each
  data-loader worker does when the views are finished on an accelerator);
- twinfold streaming: the same as the first row from the LitData shards
  (``dataset: streaming``);
- torchvision ImageFolder: ``torchvision.datasets.ImageFolder`` (PIL decoding) with
  per-sample ``transforms.v2`` of the same two views;
- lightly: ``BYOLTransform`` with the same parameters on the same PIL images, if lightly
  is importable (``pip install -e core[benchmarks]``).

Each row takes turns with the others, ``--repeats`` passes over all images after a
warm-up pass; the table gives the median. Run::

    python examples/benchmarks/jpeg224.py                    # 2000 images, ~5 min/core
    python examples/benchmarks/jpeg224.py --images 300 --repeats 2
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from twinfold.augment import BatchedViews
from twinfold.augment.blur import blur_kernel_size
from twinfold.builtins.views import SimCLRViewsConfig
from twinfold.data import FolderSource
from twinfold.data.datasets import SeededImageDataset
from twinfold.data.loaders import CroppedViewsCollate
from twinfold_byol.views import BYOLViewsConfig

WIDTH, HEIGHT, QUALITY = 500, 375, 90


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


def photo_like_jpeg(seed: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A photo-like JPEG (quality 90): a smooth colour field, a dozen filled ellipses and
    rectangles, softened by a 1 px Gaussian blur, plus noise of standard deviation 6."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    field = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(10, width // 2))
        y1 = y0 + int(rng.integers(10, height // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=colour)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.0))).astype(np.int16)
    pixels = pixels + rng.normal(0, 6, pixels.shape).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def write_jpegs(root: Path, count: int) -> Path:
    """``count`` photo-like JPEGs in two class folders under ``root``."""
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:06d}.jpg").write_bytes(photo_like_jpeg(i))
    return root


def byol_views(size: int) -> SimCLRViewsConfig:
    return BYOLViewsConfig(image_size=size)


def twinfold_pass(
    source: Any, cfg: SimCLRViewsConfig, size: int, batch: int, limit: int, views: bool
) -> Callable[[], int]:
    """One pass of the batched engine's folder path over ``source``: per-sample seeds,
    JPEGs decoded smaller up to ``limit``, crops per image, and with ``views`` the rest
    of both views on the CPU."""
    engine = BatchedViews.from_config(cfg, size)
    reduction = None if limit == 1 else (lambda s, h, w: engine.jpeg_reduction(s, h, w, limit))
    dataset = SeededImageDataset(source, seed=0, reduction=reduction)
    collate = CroppedViewsCollate(engine)

    def run() -> int:
        for start in range(0, len(dataset), batch):
            crops, _, params = collate(
                [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
            )
            if views:
                engine.apply_views(crops, params)
        return len(dataset)

    return run


def torchvision_pass(root: Path, cfg: SimCLRViewsConfig, size: int) -> Callable[[], int]:
    """``ImageFolder`` with per-sample torchvision v2 transforms of the two views."""
    import torchvision.transforms.v2 as T
    from torchvision.datasets import ImageFolder

    def view(v: Any) -> T.Compose:
        k = blur_kernel_size(size, v.blur_kernel_fraction)
        return T.Compose(
            [
                T.PILToTensor(),
                T.RandomResizedCrop(size, scale=v.crop_scale, ratio=v.crop_ratio, antialias=True),
                T.RandomHorizontalFlip(v.flip_p),
                T.RandomApply(
                    [T.ColorJitter(v.brightness, v.contrast, v.saturation, v.hue)], p=v.jitter_p
                ),
                T.RandomGrayscale(v.grayscale_p),
                T.RandomApply([T.GaussianBlur(k, v.blur_sigma)], p=v.blur_p),
                T.RandomSolarize(int(v.solarize_threshold * 255), p=v.solarize_p),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(cfg.mean, cfg.std),
            ]
        )

    pair = [view(v) for v in cfg.views]
    dataset = ImageFolder(str(root), transform=lambda im: [t(im) for t in pair])
    return lambda: sum(1 for _ in (dataset[i] for i in range(len(dataset))))


def lightly_pass(root: Path, cfg: SimCLRViewsConfig, size: int) -> Callable[[], int] | None:
    """lightly's ``BYOLTransform`` on ``ImageFolder``'s PIL images, or None without lightly."""
    try:
        transform = sibling("augmentation").lightly_byol_transform(cfg, size)
    except ImportError:
        return None
    from torchvision.datasets import ImageFolder

    dataset = ImageFolder(str(root), transform=transform)
    return lambda: sum(1 for _ in (dataset[i] for i in range(len(dataset))))


def decode_ms(root: Path, repeats: int) -> dict[int, float]:
    """Median milliseconds to decode one file of ``root``, per DCT-domain reduction
    (1: full decoding through libjpeg-turbo in torchvision, as twinfold decodes JPEGs;
    2, 4, 8: Pillow's ``draft``, as ``data.jpeg_reduction`` decodes them)."""
    from twinfold.data.folder import decode_bytes

    files = [p.read_bytes() for p in sorted(root.rglob("*.jpg"))]
    out = {}
    for r in (1, 2, 4, 8):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            for data in files:
                decode_bytes(data, plan=lambda h, w, r=r: r)
            times.append((time.perf_counter() - start) / len(files) * 1e3)
        out[r] = statistics.median(times[1:])
    return out


def measure(rows: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Median images per second of each row: a warm-up pass, then ``repeats`` timed passes
    taking turns."""
    for run in rows.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeats):
        for name, run in rows.items():
            start = time.perf_counter()
            n = run()
            rates[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to write")
    parser.add_argument("--size", type=int, default=224, help="side of the views")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--jpeg-reduction",
        type=int,
        choices=[1, 2, 4, 8],
        default=1,
        help="data.jpeg_reduction of the twinfold rows (1, the default: full decoding)",
    )
    parser.add_argument("--dir", type=Path, help="where to write the files (a temporary dir)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        rows = build_rows(work, args.images, args.size, args.batch_size, args.jpeg_reduction)
        rates = measure(rows, args.repeats)
        decoding = decode_ms(work / "jpegs", args.repeats)
    print(
        f"{args.images} JPEGs {WIDTH}x{HEIGHT} q{QUALITY} -> 2 views of {args.size} px; "
        f"1 thread, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print("| pipeline | images/s per core | vs torchvision |\n|---|---:|---:|")
    base = rates["torchvision ImageFolder + v2"]
    for name, rate in rates.items():
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")
    print("\n| JPEG decoded at | ms per file | speed-up |\n|---|---:|---:|")
    for r, ms in decoding.items():
        print(f"| 1/{r} per side | {ms:.2f} | {decoding[1] / ms:.2f}x |")
    return rates


def build_rows(
    work: Path, images: int, size: int, batch: int, reduction: int = 1
) -> dict[str, Callable[[], int]]:
    from twinfold.data.pack import pack_folder
    from twinfold.data.streaming import StreamingSource

    root = work / "jpegs"
    if not root.is_dir():
        write_jpegs(root, images)
    shards = work / "shards"
    if not shards.is_dir():
        pack_folder(root, shards, progress=False)
    cfg = byol_views(size)
    folder = FolderSource(root)
    rows = {
        "twinfold folder": twinfold_pass(folder, cfg, size, batch, reduction, views=True),
        "twinfold folder, worker part": twinfold_pass(
            folder, cfg, size, batch, reduction, views=False
        ),
        "twinfold streaming": twinfold_pass(
            StreamingSource(shards), cfg, size, batch, reduction, views=True
        ),
        "torchvision ImageFolder + v2": torchvision_pass(root, cfg, size),
    }
    if (lightly := lightly_pass(root, cfg, size)) is not None:
        rows["lightly BYOLTransform"] = lightly
    return rows


if __name__ == "__main__":
    main()
