"""``data.decode_on: device``: JPEGs kept encoded in the workers, decoded a batch at a time
in the training process on its device, then cropped there. On the CPU (all that runs
here) the views, losses and weights equal those of decoding in the workers; a JPEG the
decoder refuses is read again by its source (skipped when asked, else an error naming
it); the settings it cannot work with are config errors."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import twinfold
import twinfold.training_data
from twinfold import ConfigError
from twinfold.augment import BatchedViews
from twinfold.augment.collate import EncodedImages, EncodedViewsCollate
from twinfold.data import FolderSource
from twinfold.data.base import ImageDecodeError
from twinfold.data.datasets import SeededImageDataset
from twinfold.data.device_decode import decode_and_crop
from twinfold.data.encoded import EncodedJPEG, decode_jpegs
from twinfold.data.loaders import CroppedViewsCollate
from twinfold.plan import prepare_run
from twinfold_byol.views import BYOLViewsConfig

BENCHMARK = Path(__file__).resolve().parents[1] / "examples" / "benchmarks" / "jpeg224.py"


def _photo_like(seed: int, width: int, height: int) -> bytes:
    if "jpeg224_under_test" not in sys.modules:
        spec = importlib.util.spec_from_file_location("jpeg224_under_test", BENCHMARK)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["jpeg224_under_test"] = module
        spec.loader.exec_module(module)
    return sys.modules["jpeg224_under_test"].photo_like_jpeg(seed, width, height)


def _folder(root: Path, count: int = 20) -> Path:
    """Photo-like JPEGs of several sizes in two classes, one grey JPEG, one PNG and one
    JPEG with an EXIF rotation (the last two decoded in the workers either way)."""
    for i in range(count):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        w, h = [(96, 72), (80, 80), (64, 100)][i % 3]
        (folder / f"{i:02d}.jpg").write_bytes(_photo_like(i, w, h))
    Image.new("RGB", (50, 40), (200, 30, 60)).save(root / "class0" / "png.png")
    Image.new("L", (60, 48), 90).save(root / "class1" / "grey.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    rotated = Image.open(root / "class0" / "00.jpg").copy()
    rotated.save(root / "class0" / "rotated.jpg", exif=exif, quality=90)
    return root


def _engine() -> BatchedViews:
    return BatchedViews.from_config(BYOLViewsConfig(image_size=24))


def test_the_decoders_give_the_same_pixels(tmp_path: Path) -> None:
    data = torch.frombuffer(bytearray(_photo_like(3, 120, 90)), dtype=torch.uint8)
    from torchvision.io import ImageReadMode, decode_jpeg

    with pytest.warns(DeprecationWarning):  # why twinfold prefers TorchCodec
        reference = decode_jpeg(data, mode=ImageReadMode.RGB)
    assert torch.equal(decode_jpegs([data], "cpu")[0], reference)
    if importlib.util.find_spec("torchcodec") is not None:
        from torchcodec.decoders import decode_jpeg as torchcodec_decode

        assert torch.equal(torchcodec_decode(data, mode="RGB"), reference)


def test_decoding_in_the_training_process_equals_decoding_in_the_workers(
    tmp_path: Path,
) -> None:
    source = FolderSource(_folder(tmp_path / "pics"))
    engine = _engine()
    workers = SeededImageDataset(source, seed=5)
    device = SeededImageDataset(source, seed=5, encoded=True)
    indices = list(range(len(source)))
    items = [device[i] for i in indices]
    kept = [i for i, item in zip(indices, items, strict=True) if isinstance(item[0], EncodedJPEG)]
    assert len(kept) == 21  # the PNG and the rotated JPEG were decoded, the grey one kept
    crops, got, full = CroppedViewsCollate(engine)([workers[i] for i in indices])
    batch = EncodedViewsCollate(engine)(items)
    assert isinstance(batch[0], EncodedImages)
    crops2, got2, full2 = decode_and_crop(engine, batch, torch.device("cpu"), source)
    assert torch.equal(got, got2)
    for v in range(2):
        assert torch.equal(crops[v], crops2[v]), v
        assert torch.equal(full[v].boxes, full2[v].boxes)
        assert torch.equal(full[v].jitter, full2[v].jitter)


def test_a_jpeg_the_decoder_refuses_is_read_again_by_its_source(tmp_path: Path) -> None:
    root = _folder(tmp_path / "pics", count=6)
    bad = root / "class0" / "02.jpg"
    bad.write_bytes(bad.read_bytes()[:2000])  # the header reads, the scan data ends early
    engine = _engine()
    strict = SeededImageDataset(FolderSource(root), seed=1, encoded=True)
    position = [Path(f).name for f in strict.source.files].index("02.jpg")
    assert isinstance(strict[position][0], EncodedJPEG)  # the worker kept it
    batch = EncodedViewsCollate(engine)([strict[i] for i in range(len(strict.source))])
    with pytest.raises(ImageDecodeError, match=r"cannot decode image '.*02\.jpg'.*skip_bad"):
        decode_and_crop(engine, batch, torch.device("cpu"), strict.source)
    # skipped when asked: the next readable image of its class, with its own boxes
    lenient = SeededImageDataset(FolderSource(root, skip_bad=True), seed=1, encoded=True)
    batch = EncodedViewsCollate(engine)([lenient[i] for i in range(len(lenient.source))])
    with pytest.warns(UserWarning, match="skipping"):
        crops, _, full = decode_and_crop(engine, batch, torch.device("cpu"), lenient.source)
    assert lenient.source.bad_files == {bad}
    reference = SeededImageDataset(lenient.source, seed=1)  # the workers' path now skips it
    crops2, _, full2 = CroppedViewsCollate(engine)([reference[i] for i in range(len(reference))])
    for v in range(2):
        assert torch.equal(crops[v], crops2[v]) and torch.equal(full[v].jitter, full2[v].jitter)


def _config(tmp_path: Path, folder: Path, name: str, **data: Any) -> twinfold.RunConfig:
    return twinfold.load_config({
        "preset": "byol-small",
        "data": {"dataset": "folder", "root": str(folder), "image_size": 24, "batch_size": 8,
                 "num_workers": 2, "view_engine": "batched", **data},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"precision": "32-true", "max_steps": 3, "epochs": 2, "progress_bar": False,
                    "log_every": 1},
        "run": {"output_dir": str(tmp_path), "name": name, "plots": False},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    })  # fmt: skip


def _losses(run_dir: Path) -> list[str]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [r["loss"] for r in csv.DictReader(file) if r.get("loss")]


def test_a_run_decoding_on_the_device_trains_exactly_like_one_decoding_in_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _folder(tmp_path / "pics")
    decoded: list[int] = []  # batches the training process decoded (the real function runs)

    def counted(*args: Any) -> Any:
        decoded.append(1)
        return decode_and_crop(*args)

    monkeypatch.setattr(twinfold.training_data, "decode_and_crop", counted)
    runs = {
        where: twinfold.train(_config(tmp_path, root, where, decode_on=where)).run_dir
        for where in ("workers", "device")
    }
    losses = {where: _losses(run) for where, run in runs.items()}
    assert len(decoded) == 3  # one per step of the 'device' run, none for 'workers'
    assert len(losses["device"]) == 3 and losses["device"] == losses["workers"]
    weights = {where: (run / "backbone.safetensors").read_bytes() for where, run in runs.items()}
    assert weights["device"] == weights["workers"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"dataset": "digits", "root": None}, "dataset 'digits' holds decoded images"),
        ({"view_engine": "per-sample"}, "needs the batched views"),
        ({"jpeg_reduction": 2}, "data.jpeg_reduction decodes in the workers"),
    ],
)
def test_settings_it_cannot_work_with_are_config_errors(
    tmp_path: Path, data: dict[str, Any], why: str
) -> None:
    root = _folder(tmp_path / "pics", count=4)
    cfg = _config(tmp_path, root, "bad", decode_on="device", **data)
    with pytest.raises(ConfigError, match=rf"data\.decode_on: 'device': .*{why}"):
        prepare_run(cfg)
    assert not (tmp_path / "bad").exists()
