"""``twinfold embed`` / :func:`twinfold.embed`: the backbone features of every image of a
folder or dataset split, made with the run's evaluation transform, chunk by chunk into a
partial embedding (so a killed call continues), then written as the final files."""

from __future__ import annotations

import hashlib
import itertools
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from twinfold.artifacts import open_trained_argument
from twinfold.components import ViewPipeline
from twinfold.config import RunConfig, load_config
from twinfold.data import ImageDecodeError, ImageSource
from twinfold.embedding.inputs import EmbedData, open_data
from twinfold.embedding.outputs import EmbedPaths, embed_paths, write_outputs
from twinfold.embedding.partial import Chunk, PartialEmbedding
from twinfold.errors import ConfigError
from twinfold.evaluation.features import extract_features
from twinfold.evaluation.offline import eval_pipeline
from twinfold.registry import Registry, default_registry

PRECISIONS: dict[str, torch.dtype | None] = {
    "32-true": None,
    "bf16-mixed": torch.bfloat16,
    "16-mixed": torch.float16,
}
"""``--precision``: float32 (as ``twinfold eval``), or autocast to bf16 / float16."""
CHUNK_ROWS = 4096
"""Rows per chunk of the partial embedding: at most this much work is lost to a kill."""
_UNREADABLE = torch.zeros(3, 8, 8, dtype=torch.uint8)  # stands in for an unreadable image


@dataclass
class EmbedResult:
    matrix: Path
    table: Path
    sidecar: Path
    rows: int  # rows of the matrix (images embedded)
    dim: int
    skipped: list[dict[str, str]]  # unreadable images left out (skip_bad_images)
    resumed_at: int  # rows an interrupted earlier call had done (0: started afresh)


class _Images(Dataset[tuple[Tensor, int, str]]):
    """Item ``i``: the evaluation transform of image ``start + i``, its row, and why it
    could not be read ("" when it could)."""

    def __init__(self, source: ImageSource, pipeline: ViewPipeline, start: int) -> None:
        self.source, self.pipeline, self.start = source, pipeline, start

    def __len__(self) -> int:
        return len(self.source) - self.start

    def __getitem__(self, index: int) -> tuple[Tensor, int, str]:
        row = self.start + index
        try:
            return self.pipeline.plain(self.source.load(row)), row, ""
        except ImageDecodeError as exc:
            return self.pipeline.plain(_UNREADABLE), row, exc.reason


def _collate(samples: list[tuple[Tensor, int, str]]) -> tuple[Tensor, Tensor, list[str]]:
    images, rows, errors = zip(*samples, strict=True)
    return torch.stack(images), torch.tensor(rows, dtype=torch.long), list(errors)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            [("--device", f"'{name}' is not a device; use auto, cpu, cuda or cuda:N")]
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError([("--device", f"'{name}': CUDA is not available here; use cpu")])
    return device


def _check_options(batch_size: int, num_workers: int, precision: str) -> None:
    problems = []
    if batch_size < 1:
        problems.append(("--batch-size", f"{batch_size} must be at least 1"))
    if num_workers < 0:
        problems.append(("--workers", f"{num_workers} must be 0 or more"))
    if precision not in PRECISIONS:
        problems.append(("--precision", f"'{precision}' is not one of {', '.join(PRECISIONS)}"))
    if problems:
        raise ConfigError(problems)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state (names and bytes): which weights made the rows."""
    h = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _manifest(cfg: RunConfig, backbone: nn.Module, data: EmbedData, precision: str) -> dict:
    return {
        "format": "twinfold-embeddings-partial/1",
        "weights": weights_digest(backbone),
        "data": data.spec,
        "items": data.digest(),
        "rows": len(data.items),
        "transform": cfg.views_config().model_dump(mode="json"),
        "precision": precision,
    }


def _open_partial(paths: EmbedPaths, manifest: dict[str, Any]) -> tuple[PartialEmbedding, int]:
    partial = PartialEmbedding(paths.partial, manifest)
    if changed := partial.changes():
        warnings.warn(
            f"starting afresh: the unfinished embedding in {paths.partial} was made with "
            f"other settings ({', '.join(changed)} differ)",
            stacklevel=3,
        )
    return partial, partial.start()


class _Batches:
    """The loader's ``(images, rows)`` with unreadable images recorded in ``skipped``
    (or refused, without ``skip_bad``), counted on the progress bar."""

    def __init__(self, loader: DataLoader, data: EmbedData, skip_bad: bool, bar: Any) -> None:
        self.batches = iter(loader)
        self.data, self.skip_bad, self.bar = data, skip_bad, bar
        self.skipped: list[tuple[int, str]] = []

    def take(self, count: int) -> Iterator[tuple[Tensor, Tensor]]:
        for images, rows, errors in itertools.islice(self.batches, count):
            bad = [(int(r), e) for r, e in zip(rows, errors, strict=True) if e]
            if bad and not self.skip_bad:
                self._refuse(*bad[0])
            self.skipped += bad
            self.bar.update(len(rows))
            yield images, rows

    def _refuse(self, row: int, reason: str) -> None:
        raise ConfigError(
            [
                (
                    "DATA",
                    f"cannot decode {self.data.name(row)}: {reason}. Remove or "
                    "replace the file (the embedding then starts afresh), or pass "
                    "--skip-bad-images to leave unreadable images out (the same command "
                    "then continues where this one stopped)",
                )
            ]
        )


def _embed_rows(
    backbone: nn.Module,
    batches: _Batches,
    partial: PartialEmbedding,
    start: int,
    end: int,
    device: torch.device,
    chunk_batches: int,
    dtype: torch.dtype | None,
) -> None:
    """Rows ``start`` .. ``end - 1`` through the backbone, a chunk at a time."""
    while start < end:
        batches.skipped = []
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            feats, rows = extract_features(backbone, batches.take(chunk_batches), device)
        bad = torch.tensor([r for r, _ in batches.skipped], dtype=torch.long)
        keep = ~torch.isin(rows, bad)
        stop = start + len(rows)
        partial.add(
            Chunk(
                start,
                stop,
                feats.shape[1],
                feats[keep].numpy(),
                rows[keep].numpy(),
                batches.skipped,
            )
        )
        start = stop


def embed(
    source: Path | str,
    data: str | Path,
    out: Path | str,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str = "auto",
    precision: str = "32-true",
    skip_bad_images: bool = False,
    force: bool = False,
    overrides: Sequence[str] = (),
    progress: bool = True,
    registry: Registry | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> EmbedResult:
    """Embed every image of ``data`` (an image folder, or ``DATASET:SPLIT`` such as
    ``digits:test``) with the backbone of ``source`` (a run directory, ``.ckpt`` or
    exported ``.safetensors``) into ``out`` (``.npy`` or ``.safetensors``, plus ``.csv``
    and ``.json`` beside it). An interrupted call with the same arguments continues
    where it stopped. Problems with the arguments raise :class:`ConfigError`."""
    _check_options(batch_size, num_workers, precision)
    paths = embed_paths(out, force=force)  # checked before anything is read
    target = _device(device)
    registry = registry or default_registry()
    trained = open_trained_argument(source, registry)
    cfg = load_config(trained.config, list(overrides), registry=registry)
    images = open_data(str(data), cfg)
    partial, start = _open_partial(paths, _manifest(cfg, trained.backbone, images, precision))
    total = len(images.items)
    loader = DataLoader(
        _Images(images.source, eval_pipeline(cfg, registry), start),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    bar = tqdm(
        total=total,
        initial=start,
        desc=f"embed {paths.matrix.name}",
        unit="img",
        dynamic_ncols=True,
        disable=None if progress else True,
    )
    with bar:
        batches = _Batches(loader, images, skip_bad_images, bar)
        backbone = trained.backbone.to(target)
        chunk_batches = max(1, chunk_rows // batch_size)
        _embed_rows(
            backbone, batches, partial, start, total, target, chunk_batches, PRECISIONS[precision]
        )
    meta = {
        "source": str(trained.source.resolve()),
        "step": trained.step,
        "data": images.spec,
        "image_size": cfg.data.image_size,
        "precision": precision,
    }
    sidecar = write_outputs(paths, partial, images, meta)
    partial.remove()
    return EmbedResult(*paths.all(), sidecar["rows"], sidecar["dim"], sidecar["skipped"], start)
