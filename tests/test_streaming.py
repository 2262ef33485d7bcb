"""``twinfold data pack`` and ``data.dataset: streaming`` with real LitData shards on
disk: sample i of the shards is image i of the folder (so a streaming run equals a
folder run step for step), two gloo processes equal one, a SIGKILLed streaming run
resumes bit-exactly, and bad inputs (unreadable images, a non-empty OUT, truncated or
corrupt shards, LitData missing) are errors naming the culprit."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import torch
from runner import checkpoint_steps, run_here, start, tiny_config, wait_for

import twinfold
from twinfold import ConfigError
from twinfold.data import FolderSource, ImageDecodeError, MultiViewDataset
from twinfold.data.pack import pack_folder
from twinfold.data.streaming import StreamingSource

pytest.importorskip("litdata")

SIZES = [(20, 28), (32, 32), (17, 40), (48, 24)]


def write_folder(root: Path, per_class: int = 12, classes: tuple[str, ...] = ("a", "b")) -> Path:
    """PNG and JPEG files of several sizes (one grey), one sub-folder per class (flat
    when ``classes`` is empty)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c, name in enumerate(classes or ("",)):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = SIZES[i % 4]
            pixels = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=gen).numpy()
            image = Image.fromarray(pixels[..., 0] if i == 5 else pixels)
            image.save(folder / f"{c}-{i:02d}.{'jpg' if i % 3 == 0 else 'png'}", quality=90)
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(image folder, its shards), shards of 8 KB so the 24 images span several."""
    root = tmp_path_factory.mktemp("streaming")
    folder = write_folder(root / "pics")
    pack_folder(folder, root / "shards", chunk_bytes=8000, progress=False)
    return folder, root / "shards"


def test_pack_keeps_every_image_label_and_the_folder_order(site: tuple[Path, Path]) -> None:
    folder, shards = site
    a, b = FolderSource(folder), StreamingSource(shards)
    assert len(b) == len(a) == 24 and len(b.index.chunks) > 3
    assert b.classes == a.classes == ["a", "b"] and b.labels() == a.labels()
    for i in (0, 23, 5, 11, 6):  # random access, across shards
        assert torch.equal(b.load(i), a.load(i)), i
        assert b.read(i)["name"] == a.files[i].relative_to(folder).as_posix()
    flat = write_folder(folder.parent / "flat", per_class=3, classes=())
    packed = pack_folder(flat, folder.parent / "flat-shards", progress=False)
    assert packed.images == 3 and not packed.classes
    assert StreamingSource(packed.out).labels() == [None] * 3


def test_views_depend_only_on_seed_epoch_and_index(site: tuple[Path, Path]) -> None:
    from twinfold.builtins.views import SimCLRViewsConfig, build_simclr_views

    folder, shards = site
    pipeline = build_simclr_views(SimCLRViewsConfig(image_size=16))
    ds = MultiViewDataset(StreamingSource(shards), pipeline, seed=7)
    ref = MultiViewDataset(FolderSource(folder), pipeline, seed=7)
    a = ds[3]
    _ = ds[20], ds[0]
    assert all(torch.equal(x, y) for x, y in zip(a, ds[3], strict=True))
    assert all(torch.equal(x, y) for x, y in zip(a, ref[3], strict=True))
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], a[0])


def _config(tmp: Path, name: str, root: Path, dataset: str, **trainer: object) -> dict:
    return {
        "preset": "byol-small",
        "data": {"dataset": dataset, "root": str(root), "image_size": 16, "batch_size": 8,
                 "num_workers": 0, "holdout_fraction": 0.25},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"precision": "32-true", "max_steps": 3, "epochs": 2, "progress_bar": False,
                    "log_every": 1, **trainer},
        "run": {"output_dir": str(tmp), "name": name, "plots": False, "tensorboard": "off"},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    }


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {f"{part}.{k}": v for part in ("online", "target") for k, v in state[part].items()}


def test_a_streaming_run_equals_the_folder_run(site: tuple[Path, Path], tmp_path: Path) -> None:
    """Same samples, same views, same steps: identical weights (2 data-loader workers
    on the shards, none on the folder)."""
    folder, shards = site
    runs = [
        twinfold.train(twinfold.load_config(_config(tmp_path, "folder", folder, "folder"))),
        twinfold.train(twinfold.load_config(
            {**_config(tmp_path, "shards", shards, "streaming"),
             "data": {**_config(tmp_path, "", shards, "streaming")["data"], "num_workers": 2}}
        )),
    ]
    assert runs[1].steps == 3
    a, b = (_weights(r.run_dir) for r in runs)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.distributed
def test_two_processes_on_shards_equal_one_process(site: tuple[Path, Path], tmp_path: Path) -> None:
    """2 gloo ranks x 4 samples == 1 rank x 8 samples, training from the shards."""
    _, shards = site

    def run(name: str, devices: int, batch: int) -> Path:
        cfg = _config(tmp_path, name, shards, "streaming", devices=devices,
                      strategy="ddp_spawn" if devices > 1 else "auto", max_steps=2)
        cfg["data"]["batch_size"] = batch
        return twinfold.train(twinfold.load_config(cfg)).run_dir

    one, two = run("one", 1, 8), run("two", 2, 4)
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys() and len(a) > 10
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)


def test_a_sigkilled_streaming_run_resumes_exactly(site: tuple[Path, Path], tmp_path: Path) -> None:
    _, shards = site
    cfg = tiny_config(tmp_path, "killed",
                      data={"dataset": "streaming", "root": str(shards), "batch_size": 4,
                            "holdout_fraction": 0.25},
                      trainer={"epochs": 6, "max_steps": 24},
                      run={"checkpoint_every": 3, "keep_checkpoints": 2})
    run_dir = tmp_path / "runs" / "killed"
    proc = start("train", str(cfg), cwd=tmp_path)
    wait_for("a checkpoint", lambda: any(s >= 6 for s in checkpoint_steps(run_dir)), [proc])
    proc.kill()
    proc.communicate(timeout=30)
    last = max(checkpoint_steps(run_dir))
    assert proc.returncode == -signal.SIGKILL and last < 24
    assert last % 4, "18 training images at batch 4: 4 steps per epoch; resumes mid-epoch"
    code, out, err = run_here("train", str(cfg), "--set", "run.resume=true", cwd=tmp_path)
    assert code == 0 and "steps: 24" in out, err
    code, _, err = run_here("train", str(cfg), "--set", "run.name=full", cwd=tmp_path)
    assert code == 0, err
    a, b = _weights(tmp_path / "runs" / "full"), _weights(run_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pack_command_refuses_bad_images_and_a_non_empty_out(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "pics", per_class=3)
    (folder / "b" / "short.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    out = tmp_path / "shards"
    code, _, err = run_here("data", "pack", str(folder), str(out), "--no-progress", cwd=tmp_path)
    assert code == 1 and "short.png" in err and "--skip-bad-images" in err
    assert not out.exists() and not list(tmp_path.glob(".shards*"))  # nothing half-written
    args = ("data", "pack", str(folder), str(out), "--no-progress", "--skip-bad-images")
    code, text, err = run_here(*args, cwd=tmp_path)
    assert code == 0, err
    assert "skipped unreadable image b/short.png" in text and "packed 6 images" in text
    before = (out / "index.json").read_bytes()
    code, _, err = run_here(*args, cwd=tmp_path)
    assert code == 2 and "not empty" in err and "--force" in err
    assert (out / "index.json").read_bytes() == before
    code, text, _ = run_here(*args, "--force", "--shard-mb", "1", cwd=tmp_path)
    assert code == 0 and len(StreamingSource(out)) == 6


def _copy(shards: Path, to: Path) -> Path:
    import shutil

    return Path(shutil.copytree(shards, to))


def test_a_truncated_shard_is_a_config_error_naming_it(
    site: tuple[Path, Path], tmp_path: Path
) -> None:
    shards = _copy(site[1], tmp_path / "shards")
    shard = sorted(shards.glob("chunk-*.bin"))[2]
    shard.write_bytes(shard.read_bytes()[:-100])
    cfg = tiny_config(tmp_path, "t", data={"dataset": "streaming", "root": str(shards)})
    code, _, err = run_here("train", str(cfg), cwd=tmp_path)
    assert code == 2 and shard.name in err and "corrupt" in err
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_sample_names_its_shard(site: tuple[Path, Path], tmp_path: Path) -> None:
    folder, shards = site[0], _copy(site[1], tmp_path / "shards")
    source = StreamingSource(shards)
    shard = next(c for c in source.index.chunks if c.count > 1)
    last = shard.first + shard.count - 1
    image = FolderSource(folder).files[last].read_bytes()
    data = bytearray((shards / shard.filename).read_bytes())
    at = data.find(image) + len(image) // 2
    data[at] ^= 0xFF  # inside the sample's image bytes: same size, other content
    (shards / shard.filename).write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match=rf"sample {last} in shard '{shard.filename}'.*CRC"):
        StreamingSource(shards).load(last)
    StreamingSource(shards).load(shard.first)  # the shard's other samples still read


def test_without_litdata_streaming_is_a_config_error(
    site: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "litdata", None)  # what an absent package gives
    data = {"dataset": "streaming", "root": str(site[1])}
    cfg = twinfold.load_config({"preset": "byol-small", "data": data})
    with pytest.raises(ConfigError, match=r"data\.root: .*pip install 'twinfold\[streaming\]'"):
        twinfold.data.build_sources(cfg.data)


def test_streaming_needs_a_root_and_keeps_uris() -> None:
    with pytest.raises(ConfigError, match="data.root is required for dataset 'streaming'"):
        twinfold.load_config({"preset": "byol-small", "data": {"dataset": "streaming"}})
    data = {"dataset": "streaming", "root": "s3://bucket/shards"}
    cfg = twinfold.load_config({"preset": "byol-small", "data": data})
    assert cfg.data.root == "s3://bucket/shards"


def test_shards_decoded_on_the_device_give_the_workers_crops(site: tuple[Path, Path]) -> None:
    """``data.decode_on: device`` on shards: JPEG samples stay encoded (named by sample
    and shard), and the crops made in the training process equal the workers' ones."""
    from twinfold.augment import BatchedViews
    from twinfold.augment.collate import EncodedViewsCollate
    from twinfold.data.datasets import SeededImageDataset
    from twinfold.data.device_decode import decode_and_crop
    from twinfold.data.encoded import EncodedJPEG
    from twinfold.data.loaders import CroppedViewsCollate
    from twinfold_byol.views import BYOLViewsConfig

    source = StreamingSource(site[1])
    engine = BatchedViews.from_config(BYOLViewsConfig(image_size=16))
    device = SeededImageDataset(source, seed=2, encoded=True)
    items = [device[i] for i in range(len(source))]
    kept = [item[0] for item in items if isinstance(item[0], EncodedJPEG)]
    assert len(kept) == 8 and "in shard 'chunk-" in kept[0].name  # the 8 JPEGs of 24
    crops, _, full = decode_and_crop(
        engine, EncodedViewsCollate(engine)(items), torch.device("cpu"), source
    )
    workers = SeededImageDataset(source, seed=2)
    crops2, _, full2 = CroppedViewsCollate(engine)([workers[i] for i in range(len(source))])
    for v in range(2):
        assert torch.equal(crops[v], crops2[v]) and torch.equal(full[v].jitter, full2[v].jitter)
