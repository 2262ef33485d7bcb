"""Untrusted input through the real command line and the real loop: YAML tags, bad image
files, missing folders, broken and blocked plugins."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from runner import run, run_here, tiny_config

import twinfold
from twinfold.data import ImageDecodeError


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_yaml_python_tags_are_rejected_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"preset: !!python/object/apply:os.system ['touch {marker}']\n")
    code, _, err = run_here("config", "show", str(evil), cwd=tmp_path)
    assert code == 2 and "not valid (safe) YAML" in err and "evil.yaml" in err
    assert not marker.exists()
    code, _, err = run("train", str(evil), cwd=tmp_path)  # a real process
    assert code == 2 and not marker.exists() and not (tmp_path / "runs").exists()


def _image_folder(root: Path, good: int, bad: dict[str, bytes]) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i:02d}.png")
    for name, data in bad.items():
        (root / name).write_bytes(data)
    return root


def _folder_run(tmp: Path, root: Path, name: str, skip: bool) -> dict:
    cfg = twinfold.load_config(tiny_config(tmp, name)).model_dump(mode="json")
    cfg["data"].update(dataset="folder", root=str(root), batch_size=16, skip_bad_images=skip)
    cfg["trainer"].update(epochs=1, max_steps=1)
    return cfg


@pytest.mark.parametrize("kind", ["text", "empty", "truncated"])
def test_a_bad_file_stops_training_naming_it_or_is_skipped_on_request(
    tmp_path: Path, kind: str
) -> None:
    root = _image_folder(tmp_path / "images", 15, {})  # with the bad file: one batch of 16
    culprit = root / f"zz_{kind}.png"
    if kind == "text":
        culprit.write_text("hello, I am not a picture")
    elif kind == "empty":
        culprit.write_bytes(b"")
    else:
        culprit.write_bytes((root / "img00.png").read_bytes()[:60])
    with pytest.raises(ImageDecodeError, match=rf"{culprit.name}.*skip_bad_images=true"):
        twinfold.train(_folder_run(tmp_path, root, "strict", skip=False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lenient = _folder_run(tmp_path, root, "lenient", skip=True)
        if kind == "empty":  # decoded in two worker processes: counted all the same
            lenient["data"]["num_workers"] = 2
        result = twinfold.train(lenient)
    assert result.steps == 1
    if kind != "empty":  # warnings of worker processes do not reach this process
        skipped = [str(w.message) for w in caught if str(w.message).startswith("skipping")]
        assert len(skipped) == 1 and culprit.name in skipped[0]
    assert result.metrics["skipped_images"] == 1
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["skipped_images"] == 1
    assert (result.run_dir / "skipped_images.txt").read_text().splitlines() == [str(culprit)]


@pytest.mark.distributed
@pytest.mark.parametrize("case", ["missing", "empty"])
def test_missing_or_empty_folder_fails_before_any_process_starts(
    tmp_path: Path, case: str
) -> None:
    root = tmp_path / "images"
    if case == "empty":
        root.mkdir()
        (root / "readme.txt").write_text("no images")
    cfg = tiny_config(tmp_path, "f", data={"dataset": "folder", "root": str(root)},
                      trainer={"devices": 2, "strategy": "ddp_spawn"})
    code, _, err = run_here("train", str(cfg), cwd=tmp_path)
    # exit 2 is the launcher's config error; a failure inside a spawned rank exits 1
    assert code == 2, err
    assert "data.root" in err and str(root) in err
    assert not (tmp_path / "runs").exists()


def test_broken_plugin_spares_commands_that_do_not_need_it(
    tmp_path: Path, plugin_site: Path
) -> None:
    env = {"PYTHONPATH": f"{plugin_site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TWINFOLD_BLOCK_PLUGINS": "conflict"}
    code, out, _ = run_here("plugins", "--json", cwd=tmp_path, env=env)
    assert code == 0
    listed = json.loads(out)
    assert [b["distribution"] for b in listed["broken"]] == ["twinfold-test-broken"]
    assert "twinfold_missing_dependency_xyz" in listed["broken"][0]["error"]
    fix = listed["broken"][0]["fix"]  # the fix docs/reliability.md promises, in the listing
    assert "TWINFOLD_BLOCK_PLUGINS=broken" in fix and "--block broken" in fix
    code, out, _ = run_here("plugins", cwd=tmp_path, env=env)
    line = next(ln for ln in out.splitlines() if ln.startswith("BROKEN"))
    assert "twinfold-test-broken" in line and "--block broken" in line
    names = {c["name"] for c in listed["components"]}
    assert {"toy-mse", "byol"} <= names
    # a real process: the warning reaches stderr
    code, out, err = run("config", "show", "--set", "trainer.epochs=2", cwd=tmp_path, env=env)
    assert code == 0 and "epochs: 2" in out
    assert "twinfold-test-broken" in err and "--block" in err  # warned, named, with the fix
    # blocked: never imported, so it cannot fail
    code, out, err = run_here("--block", "broken", "plugins", "--json", cwd=tmp_path, env=env)
    listed = json.loads(out)
    assert code == 0 and listed["broken"] == []
    assert "broken (twinfold-test-broken)" in listed["blocked"]
    assert "twinfold_missing_dependency_xyz" not in err
