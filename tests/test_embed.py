"""`twinfold embed` / `twinfold.embed`: the saved matrix equals features computed directly
from the exported backbone, the table names the files and labels, an interrupted call
continues to the same files, and bad input is refused with exit status 2."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from runner import run_here
from safetensors.numpy import load_file
from torchvision.io import ImageReadMode, read_image, write_jpeg, write_png
from torchvision.transforms import v2

import twinfold
from twinfold.artifacts import open_trained
from twinfold.data import digits_splits
from twinfold.errors import ConfigError
from twinfold.evaluation.offline import eval_pipeline, labelled_features
from twinfold.export import load_backbone, read_sidecar

pytestmark = [
    pytest.mark.filterwarnings("ignore:The image decoding and encoding:DeprecationWarning"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny byol-small run (2 steps): config, last.ckpt, backbone.safetensors."""
    cfg = twinfold.load_config(
        {
            "preset": "byol-small",
            "data": {"image_size": 16, "batch_size": 128},
            "method": {
                "encoder": {"widths": [8, 16]},
                "projector": {"hidden_dims": [32], "out_dim": 16},
                "predictor": {"hidden_dims": [32], "out_dim": 16},
            },
            "trainer": {"epochs": 1, "max_steps": 2, "progress_bar": False},
            "run": {
                "output_dir": str(tmp_path_factory.mktemp("embed")),
                "name": "run",
                "plots": False,
                "tensorboard": "off",
            },
            "evaluation": {"at_end": False, "every_n_epochs": 0},
        }
    )
    return twinfold.train(cfg).run_dir


def _picture(seed: int, height: int, width: int, level: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randint(-40, 41, (3, height, width), generator=gen)
    return (level + noise).clamp(0, 255).to(torch.uint8)


def _pictures(root: Path) -> list[str]:
    """Real PNG and JPEG files of several sizes, one sub-folder per class (one image
    nested a level deeper); returns their paths relative to ``root`` in sorted order."""
    files = {
        "dark/0.png": _picture(0, 12, 14, 50),
        "dark/1.png": _picture(1, 20, 17, 60),
        "dark/2.jpg": _picture(2, 16, 16, 40),
        "light/0.png": _picture(3, 9, 24, 200),
        "light/deeper/1.png": _picture(4, 30, 30, 210),
    }
    for rel, image in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (write_jpeg if rel.endswith(".jpg") else write_png)(image, str(root / rel))
    return sorted(files)


def _table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_a_folder_embeds_to_the_features_of_the_exported_backbone(
    run: Path, tmp_path: Path
) -> None:
    files = _pictures(tmp_path / "pics")
    out = tmp_path / "out" / "emb.npy"
    res = run_here(
        "embed",
        str(run),
        "pics",
        str(out),
        "--batch-size",
        "2",
        "--workers",
        "1",
        cwd=tmp_path,
    )
    assert res[0] == 0, res[2]
    assert f"wrote {out} (5 x 16 float32)" in res[1]
    matrix = np.load(out)
    assert matrix.dtype == np.float32 and matrix.shape == (5, 16)
    rows = _table(out.with_suffix(".csv"))
    assert [r["path"] for r in rows] == files
    assert [(r["row"], r["label"], r["class"]) for r in rows] == [
        ("0", "0", "dark"),
        ("1", "0", "dark"),
        ("2", "0", "dark"),
        ("3", "1", "light"),
        ("4", "1", "light"),
    ]
    # the same numbers from the exported file, with the transform its sidecar describes
    weights = run / "backbone.safetensors"
    meta = read_sidecar(weights)
    size = meta["image_size"]
    transform = v2.Compose(
        [
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(meta["normalize"]["mean"], meta["normalize"]["std"]),
        ]
    )
    images = [transform(read_image(str(tmp_path / "pics" / f), ImageReadMode.RGB)) for f in files]
    with torch.no_grad():
        expected = load_backbone(weights)(torch.stack(images)).numpy()
    np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.1  # not trivially zero
    side = json.loads(out.with_suffix(".json").read_text())
    assert (side["rows"], side["dim"], side["step"], side["data"]) == (
        5,
        16,
        2,
        str((tmp_path / "pics").resolve()),
    )
    assert side["classes"] == ["dark", "light"] and side["skipped"] == []
    assert side["source"] == str((run / "checkpoints" / "last.ckpt").resolve())
    assert sorted(p.name for p in out.parent.iterdir()) == ["emb.csv", "emb.json", "emb.npy"]


def test_a_digits_split_embeds_to_the_features_twinfold_eval_uses(
    run: Path, tmp_path: Path
) -> None:
    result = twinfold.embed(
        run / "checkpoints" / "last.ckpt",
        "digits:test",
        tmp_path / "d.safetensors",
        batch_size=100,
        progress=False,
    )
    assert (result.rows, result.dim, result.resumed_at) == (360, 16, 0)
    matrix = load_file(tmp_path / "d.safetensors")["embeddings"]
    trained = open_trained(run)
    pipeline = eval_pipeline(trained.config, twinfold.default_registry())
    feats = labelled_features(trained.config, trained.backbone, pipeline=pipeline)
    np.testing.assert_allclose(matrix, feats.test.numpy(), rtol=0, atol=1e-5)
    _, held = digits_splits(16, 0.2)
    rows = _table(tmp_path / "d.csv")
    assert [int(r["index"]) for r in rows] == held.indices  # into sklearn's load_digits
    assert [int(r["label"]) for r in rows] == feats.test_labels.tolist()
    assert rows[0]["class"] == rows[0]["label"]
    # bf16 autocast: close to float32, not equal
    half = twinfold.embed(
        run, "digits:test", tmp_path / "h.npy", precision="bf16-mixed", progress=False
    )
    low = np.load(half.matrix)
    assert not np.array_equal(low, matrix)
    np.testing.assert_allclose(low, matrix, rtol=0, atol=0.05 * np.abs(matrix).max())


def _outputs(matrix: Path) -> tuple[bytes, str, dict]:
    side = json.loads(matrix.with_suffix(".json").read_text())
    for key in ("matrix", "table"):
        side.pop(key)
    return matrix.read_bytes(), matrix.with_suffix(".csv").read_text(), side


def test_an_interrupted_embedding_continues_to_the_same_files(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(14):
        write_png(_picture(i, 10 + i, 12, 30 + 15 * i), str(pics / f"{i:02d}.png"))
    (pics / "09.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    opts = {"batch_size": 2, "chunk_rows": 4, "progress": False}
    fresh = twinfold.embed(run, pics, tmp_path / "fresh.npy", skip_bad_images=True, **opts)
    assert fresh.rows == 13 and [s["path"] for s in fresh.skipped] == ["09.png"]
    # 1. stopped by the unreadable file at row 9: rows 0-7 (two chunks) are kept
    out = tmp_path / "out.npy"
    with pytest.raises(ConfigError, match=r"cannot decode .*09\.png.*--skip-bad-images"):
        twinfold.embed(run, pics, out, **opts)
    partial = tmp_path / ".out.npy.partial"
    assert sorted(p.name for p in partial.glob("rows-*")) == [
        "rows-000000000000-000000000004.npz",
        "rows-000000000004-000000000008.npz",
    ]
    assert not out.exists()
    # 2. a chunk killed while written leaves a temporary file; the same command with
    # --skip-bad-images continues at row 8, then is killed before the final files ...
    (partial / ".tmp-rows-000000000008-000000000012.npz.999").write_bytes(b"half")
    monkeypatch.setattr(
        "twinfold.embedding.run.write_outputs",
        lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        twinfold.embed(run, pics, out, skip_bad_images=True, **opts)
    monkeypatch.undo()
    assert not list(partial.glob(".tmp-*")) and not out.exists()
    # 3. ... and once more: nothing left to embed, the files are written; all as fresh
    again = twinfold.embed(run, pics, out, skip_bad_images=True, **opts)
    assert again.resumed_at == 14 and _outputs(out) == _outputs(fresh.matrix)
    assert not partial.exists()
    # other settings never mix with rows made before: a changed transform starts afresh
    code, _, err = run_here("embed", str(run), str(pics), str(out), cwd=tmp_path)
    assert code == 2 and "already exist" in err and "--force" in err
    with pytest.raises(ConfigError):
        twinfold.embed(run, pics, out, force=True, **opts)  # stops at 09.png again
    with pytest.warns(UserWarning, match=r"starting afresh: .* \(transform differ\)"):
        other = twinfold.embed(
            run,
            pics,
            out,
            force=True,
            skip_bad_images=True,
            overrides=["data.image_size=12"],
            **opts,
        )
    assert other.resumed_at == 0 and other.rows == 13


def test_bad_input_is_refused_with_exit_status_2(run: Path, tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    _pictures(pics)
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    fine = ("digits:test", "out.npy")
    cases = [
        (("nothere", *fine), "RUN_OR_CHECKPOINT: 'nothere' does not exist"),
        (("notes.txt", *fine), "neither a checkpoint (.ckpt) nor an exported backbone"),
        (("empty", *fine), "holds no checkpoint"),
        ((str(junk), *fine), "junk.json is missing"),
        ((str(run), "nothere", "out.npy"), "DATA: 'nothere' does not exist"),
        ((str(run), "digits:val", "out.npy"), "digits has the splits train|test|all"),
        ((str(run), "empty", "out.npy"), "DATA: no images"),
        ((str(run), "notes.txt", "out.npy"), "is a file"),
        ((str(run), "pics", "notes.txt/out.npy"), "OUT: cannot create the folder"),
        ((str(run), *fine, "--batch-size", "0"), "--batch-size: 0 must be at least 1"),
        ((str(run), *fine, "--precision", "fp8"), "'fp8' is not one of 32-true"),
        ((str(run), *fine, "--device", "tpu:x"), "'tpu:x' is not a device"),
    ]
    if not torch.cuda.is_available():
        cases.append(((str(run), *fine, "--device", "cuda"), "CUDA is not available"))
    for args, message in cases:
        code, _, err = run_here("embed", *args, cwd=tmp_path)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    junk.with_suffix(".json").write_text('{"format": "something else"}')
    code, _, err = run_here("embed", str(junk), *fine, cwd=tmp_path)
    assert code == 2 and "is not the sidecar of a twinfold export" in err
    read_sidecar(run / "backbone.safetensors")  # a real sidecar passes the same check
    (junk.with_suffix(".json")).write_text((run / "backbone.json").read_text())
    code, _, err = run_here("embed", str(junk), *fine, cwd=tmp_path)
    assert code == 2 and "cannot read" in err and "as safetensors" in err
    # an unreadable image: named, with both ways out
    (pics / "light" / "broken.png").write_bytes(b"")
    code, _, err = run_here("embed", str(run), "pics", "out.npy", cwd=tmp_path)
    assert code == 2 and f"{pics.resolve() / 'light' / 'broken.png'}: the file is empty" in err
    assert "--skip-bad-images" in err and not (tmp_path / "out.npy").exists()
    code, out, err = run_here(
        "embed", str(run), "pics", "out.npy", "--skip-bad-images", cwd=tmp_path
    )
    assert code == 0 and "skipped unreadable image light/broken.png" in out, err
    side = json.loads((tmp_path / "out.json").read_text())
    assert side["skipped"] == [{"path": "light/broken.png", "error": "the file is empty"}]
    assert side["rows"] == 5 and len(_table(tmp_path / "out.csv")) == 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_an_unwritable_out_folder_is_refused(run: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_here("embed", str(run), "digits:test", "locked/e.npy", cwd=tmp_path)
    finally:
        locked.chmod(0o700)
    assert code == 2 and "is not writable" in err
