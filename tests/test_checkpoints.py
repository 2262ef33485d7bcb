"""Checkpoint files: atomic durable writes, the newest N kept, weights-only contents,
hostile files refused before anything runs, changed configs refused unless forced."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch

import twinfold
from twinfold import CheckpointError, ConfigError
from twinfold.atomic_files import atomic_save
from twinfold.checkpoint_format import FORMAT, check_components, read_checkpoint
from twinfold.checkpoints import Checkpoints
from twinfold.fast_path import with_fast_settings
from twinfold.resume import config_changes


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def resolved(cfg: dict) -> twinfold.RunConfig:
    """The validated config with its step settings resolved for this machine."""
    return with_fast_settings(twinfold.load_config(cfg))[0]


def tiny(tmp: Path, name: str, steps: int, **run: object) -> dict:
    return {
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 64},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"epochs": 1, "max_steps": steps, "progress_bar": False},
        "run": {"output_dir": str(tmp), "name": name, "checkpoint_every": 2, "plots": False,
                **run},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    }


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full (simulated failure half-way through the write)")


def test_interrupted_save_keeps_the_previous_checkpoint_and_no_partial_file(
    tmp_path: Path,
) -> None:
    files = Checkpoints(tmp_path / "checkpoints", keep=1)
    files.write({"step": 1, "w": torch.arange(10.0)}, 1)
    before = {p.name: digest(p) for p in files.directory.iterdir()}
    assert set(before) == {"step-00000001.ckpt", "last.ckpt"}
    # the write fails after 4 MB of tensor data reached the temporary file
    with pytest.raises(RuntimeError, match="simulated failure"):
        files.write({"step": 2, "w": torch.zeros(1 << 20), "bad": Unpicklable()}, 2)
    after = {p.name: digest(p) for p in files.directory.iterdir()}
    assert after == before  # previous intact, no step-2 file, no temporary left
    assert torch.load(files.latest(), weights_only=True)["step"] == 1
    # a save killed before its rename leaves a hidden temporary: removed at the next start
    stale = files.directory / ".tmp-step-00000003.ckpt.12345"
    stale.write_bytes(b"\x00" * 100)
    files.prepare(resuming=True)
    assert not stale.exists() and files.latest() == files.step_path(1)


def test_atomic_save_replaces_whole_files_only(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    atomic_save({"a": torch.ones(3)}, path)
    atomic_save({"a": torch.full((3,), 2.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.full((3,), 2.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt"]


def test_keeps_the_newest_n_and_last_is_the_newest(tmp_path: Path) -> None:
    files = Checkpoints(tmp_path, keep=2)
    for step in (2, 4, 6, 8):
        files.write({"step": step}, step)
    assert [s for s, _ in files.steps()] == [6, 8]
    assert files.latest() == files.step_path(8)
    assert torch.load(files.last, weights_only=True)["step"] == 8
    assert digest(files.last) == digest(files.step_path(8))
    files.prepare(resuming=False)  # a fresh (overwritten) run starts without old files
    assert files.steps() == [] and not files.last.exists()


def test_run_checkpoint_holds_only_tensors_plain_values_and_registry_names(
    tmp_path: Path,
) -> None:
    result = twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 4, keep_checkpoints=2)))
    ckpt_dir = result.run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == [
        "last.ckpt", "step-00000002.ckpt", "step-00000004.ckpt"]
    raw = torch.load(ckpt_dir / "last.ckpt", weights_only=True)  # torch's safe unpickler
    state = read_checkpoint(ckpt_dir / "last.ckpt")
    assert raw.keys() == state.keys()
    assert state["format"] == FORMAT and state["step"] == 4 and state["world_size"] == 1
    assert isinstance(state["config"], str)
    assert state["components"]["loss"] == {
        "kind": "loss", "name": "byol", "plugin": "byol", "distribution": "twinfold-byol"}
    assert all(":" not in e["name"] for e in state["components"].values())  # no import paths
    assert {"torch", "numpy", "python", "loader"} <= set(state["rng"])
    assert state["rng"]["torch"].shape[0] == 1  # one row per rank


def _hostile_files(tmp: Path, marker: Path) -> dict[str, Path]:
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    files = {}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        files[f"raw{protocol}"] = tmp / f"raw-pickle-{protocol}.ckpt"
        files[f"raw{protocol}"].write_bytes(
            pickle.dumps({"format": FORMAT, "step": 1, "x": Payload()}, protocol=protocol)
        )
    files["zipped"] = tmp / "torch-save.ckpt"
    torch.save({"format": FORMAT, "step": 1, "online": {"x": Payload()}}, files["zipped"])
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_checkpoint_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    files = _hostile_files(tmp_path, marker)
    for name, path in files.items():
        with pytest.raises(CheckpointError, match="refused checkpoint") as info:
            read_checkpoint(path)
        if name != f"raw{pickle.HIGHEST_PROTOCOL}":  # that one fails on an earlier opcode
            assert "GLOBAL posix.system" in str(info.value)
    assert not marker.exists()
    # as the newest checkpoint of a run being resumed: refused before any process starts
    twinfold.train(twinfold.load_config(tiny(tmp_path, "victim", 2)))
    run = tmp_path / "victim"
    evil = run / "checkpoints" / "step-00000099.ckpt"
    evil.write_bytes((tmp_path / "torch-save.ckpt").read_bytes())
    before = {p.name: digest(p) for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match="refused checkpoint"):
        twinfold.train(twinfold.load_config(tiny(tmp_path, "victim", 4, resume=True)))
    assert not marker.exists()
    assert {p.name: digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_unknown_component_or_foreign_file_is_refused(tmp_path: Path) -> None:
    twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 2)))
    path = tmp_path / "r" / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    state["components"]["loss"] = {"kind": "loss", "name": "evil-loss", "plugin": "evil",
                                   "distribution": "evil-dist"}
    edited = tmp_path / "edited.ckpt"
    torch.save(state, edited)
    with pytest.raises(CheckpointError, match=r"loss 'evil-loss'.*'evil-dist'.*Install"):
        check_components(read_checkpoint(edited), twinfold.default_registry(), edited)
    torch.save({"model": torch.ones(2)}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a twinfold-checkpoint/1 file"):
        read_checkpoint(tmp_path / "foreign.ckpt")
    (tmp_path / "truncated.ckpt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="damaged or not a checkpoint"):
        read_checkpoint(tmp_path / "truncated.ckpt")


def test_resume_refuses_a_changed_config_listing_keys_unless_forced(tmp_path: Path) -> None:
    twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 2)))
    changed = tiny(tmp_path, "r", 4, resume=True)
    changed["optimizer"] = {"lr": 0.5}
    changed["data"]["image_size"] = 16  # unchanged
    changed["trainer"]["log_every"] = 3  # allowed: how often, not what is computed
    with pytest.raises(CheckpointError) as info:
        twinfold.train(twinfold.load_config(changed))
    text = str(info.value)
    assert "changed: optimizer.lr, trainer.max_steps" in text and "force_resume" in text
    assert "log_every" not in text
    assert config_changes(
        twinfold.load_config(tiny(tmp_path, "r", 2)).model_dump_json(),
        resolved(tiny(tmp_path, "other", 2, checkpoint_every=1, resume=True)),
    ) == []
    # a checkpoint from a version without a key added since: the key is its default
    older = json.loads(twinfold.load_config(tiny(tmp_path, "r", 2)).model_dump_json())
    del older["data"]["view_engine"]
    now = resolved(tiny(tmp_path, "r", 2))
    assert config_changes(json.dumps(older), now) == []
    older["data"]["num_workers"] = 1  # may change on resume
    older["data"]["holdout_fraction"] = 0.5
    assert config_changes(json.dumps(older), now) == ["data.holdout_fraction"]
    changed["run"]["force_resume"] = True
    assert twinfold.train(twinfold.load_config(changed)).steps == 4


def test_non_empty_run_directory_needs_resume_or_overwrite(tmp_path: Path) -> None:
    first = twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 2)))
    kept = digest(first.run_dir / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match="not empty; set run.resume=true"):
        twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 2)))
    assert digest(first.run_dir / "checkpoints" / "last.ckpt") == kept
    again = twinfold.train(twinfold.load_config(tiny(tmp_path, "r", 2, overwrite=True)))
    assert again.steps == 2


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/../../b", "..", "x\\..\\y"])
def test_run_names_cannot_leave_the_output_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="run.name"):
        twinfold.train(twinfold.load_config(tiny(tmp_path / "out", name, 2)))
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_a_symlinked_run_directory_cannot_point_outside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to(outside)
    with pytest.raises(ConfigError, match="would write outside"):
        twinfold.train(twinfold.load_config(tiny(tmp_path / "out", "link", 2)))
    assert list(outside.iterdir()) == []


def test_resume_auto_starts_afresh_then_continues(tmp_path: Path) -> None:
    """For requeued jobs: the same command starts the run, then continues it."""
    first = tiny(tmp_path, "auto", 4, resume="auto")
    first["trainer"]["stop_after"] = 2
    assert twinfold.train(twinfold.load_config(first)).steps == 2
    again = twinfold.train(twinfold.load_config(tiny(tmp_path, "auto", 4, resume="auto")))
    assert again.steps == 4
    # a directory left by an attempt killed before its first checkpoint is reused
    (tmp_path / "early").mkdir()
    (tmp_path / "early" / "config.yaml").write_text("left by a killed attempt\n")
    early = twinfold.load_config(tiny(tmp_path, "early", 2, resume="auto"))
    assert twinfold.train(early).steps == 2


def test_generator_states_round_trip_through_a_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    from twinfold.rng_state import rng_state, set_rng_state

    loader = torch.Generator().manual_seed(3)
    random.gauss(0, 1)  # leaves a cached second value in Python's generator
    np.random.standard_normal()  # and in numpy's legacy one
    torch.randn(3, generator=loader)
    atomic_save({"rng": rng_state(loader, torch.device("cpu"))}, tmp_path / "r.ckpt")

    def draw() -> list[float]:
        return [random.gauss(0, 1), random.random(), float(np.random.standard_normal()),
                float(np.random.rand()), float(torch.rand(1)),
                float(torch.rand(1, generator=loader))]

    first = draw()
    set_rng_state(torch.load(tmp_path / "r.ckpt", weights_only=True)["rng"], loader)
    assert draw() == first
