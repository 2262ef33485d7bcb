"""Checkpoint files: atomic durable writes, the newest N kept, weights-only contents,
hostile files refused before anything runs, changed configs refused unless forced."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import pickle
import subprocess
from pathlib import Path

import pytest
import torch

import twinfold
import twinfold.loop
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
    assert set(before) == {"step-00000001.ckpt", "step-00000001.ckpt.sha256", "last.ckpt"}
    # the save fails half-way through serialising 4 MB of tensor data (in memory, before
    # any file is touched; a write that fails on the disk: the full-disk test below)
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
        "last.ckpt", "step-00000002.ckpt", "step-00000002.ckpt.sha256",
        "step-00000004.ckpt", "step-00000004.ckpt.sha256"]
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


def test_weights_that_overflow_in_a_step_are_never_checkpointed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An update that makes the weights infinite passes the loss and gradient checks of
    its step; the checkpoint after it must not be written, and the error must name the
    step, the tensor and the checkpoint that is really intact."""
    cfg = tiny(tmp_path, "overflow", 4)
    cfg["optimizer"] = {"name": "sgd", "lr": 1e39, "momentum": 0.0}  # finite, but overflows
    cfg["schedule"] = {"warmup_epochs": 0, "lr_scaling": "none"}
    cfg["run"]["checkpoint_every"] = 1
    cfg["trainer"]["precision"] = "32-true"
    with pytest.raises(twinfold.NonFiniteLossError) as info:
        twinfold.train(twinfold.load_config(cfg))
    text = str(info.value)
    assert "not finite after step 1" in text and "online." in text
    assert "no checkpoint was written yet" in text
    assert Checkpoints(tmp_path / "overflow" / "checkpoints").steps() == []

    build = twinfold.loop.build_optimizer

    def overflowing_second_step(*args, **kwargs):  # an overflow inside the 2nd update
        optimizer = build(*args, **kwargs)
        done: list[int] = []

        def after(opt, *_):
            done.append(1)
            if len(done) == 2:
                opt.param_groups[0]["params"][0].data.fill_(float("inf"))

        optimizer.register_step_post_hook(after)
        return optimizer

    monkeypatch.setattr(twinfold.loop, "build_optimizer", overflowing_second_step)
    later = tiny(tmp_path, "later", 4, checkpoint_every=1)
    later["trainer"]["precision"] = "32-true"
    with pytest.raises(twinfold.NonFiniteLossError) as info:
        twinfold.train(twinfold.load_config(later))
    assert "not finite after step 2" in str(info.value)
    assert "step-00000001.ckpt, step 1) is intact" in str(info.value)
    steps = Checkpoints(tmp_path / "later" / "checkpoints").steps()
    assert [s for s, _ in steps] == [1]
    state = read_checkpoint(steps[0][1])
    assert all(torch.isfinite(v).all() for v in state["online"].values() if v.is_floating_point())


def _knn_rows(run: Path) -> list[tuple[str, str]]:
    with (run / "metrics.csv").open(newline="") as file:
        return [(r["step"], r["epoch"]) for r in csv.DictReader(file) if r.get("knn_top1")]


def test_evaluation_neither_moves_the_rng_nor_is_lost_by_a_stop_before_it(
    tmp_path: Path,
) -> None:
    """Epoch-end kNN after the epoch's checkpoint: a run stopped between the two (as a
    kill would) and resumed logs that kNN on resume, and ends with the RNG states, weights
    and kNN rows of the uninterrupted run."""

    def cfg(name: str, **trainer: object) -> dict:
        c = tiny(tmp_path, name, 12, checkpoint_every=5)  # 1437 // 64 = 22 steps an epoch
        c["data"]["batch_size"] = 128  # 11 steps an epoch: checkpoints at 5, 10, 11, 12
        c["trainer"].update(epochs=2, log_every=1, **trainer)
        c["evaluation"] = {"at_end": False, "every_n_epochs": 1, "compare_random_init": False}
        return c

    whole = twinfold.train(twinfold.load_config(cfg("whole"))).run_dir
    twinfold.train(twinfold.load_config(cfg("stopped", stop_after=11)))
    part = tmp_path / "stopped"
    assert _knn_rows(part) == []  # stopped at the epoch's end: its kNN not run yet
    again = cfg("stopped")
    again["run"]["resume"] = True
    twinfold.train(twinfold.load_config(again))
    assert _knn_rows(part) == _knn_rows(whole) == [("11", "0")]
    quiet = cfg("quiet")
    quiet["evaluation"]["every_n_epochs"] = 0  # the same run without the epoch's kNN
    runs = (whole, part, twinfold.train(twinfold.load_config(quiet)).run_dir)
    a, b, c = (read_checkpoint(r / "checkpoints" / "last.ckpt") for r in runs)
    assert a["step"] == b["step"] == c["step"] == 12
    for other in (b, c):  # resumed, and never evaluated: the same generators and weights
        for key in ("rng", "online", "target"):
            for name, tensor in a[key].items():
                assert torch.equal(tensor, other[key][name]), f"{key}.{name}"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 128 KiB file system (tmpfs): room for a run's config and metrics, not for
    a checkpoint of the tiny model (about 180 KB). Needs the right to mount (root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_named_as_such_with_the_bytes_needed(small_disk: Path) -> None:
    cfg = tiny(small_disk, "full", 4, tensorboard="off")
    with pytest.raises(CheckpointError) as info:
        twinfold.train(twinfold.load_config(cfg))
    text = str(info.value)
    assert "no space left on device writing" in text and "step-00000002.ckpt" in text
    needed = int(text.split("it needs ")[1].split(" bytes")[0].replace(",", ""))
    assert 100_000 < needed < 1_000_000 and "are free" in text
    assert "free disk space" in text  # the fix
    run = small_disk / "full"
    assert (run / "config.yaml").is_file()
    assert not [p.name for p in (run / "checkpoints").iterdir()]  # no partial file left


def test_a_flipped_byte_is_caught_and_auto_resume_falls_back_to_an_intact_checkpoint(
    tmp_path: Path,
) -> None:
    whole = twinfold.train(twinfold.load_config(tiny(tmp_path, "whole", 6))).run_dir
    cfg = tiny(tmp_path, "torn", 6, keep_checkpoints=2)
    cfg["trainer"]["stop_after"] = 4
    twinfold.train(twinfold.load_config(cfg))
    files = Checkpoints(tmp_path / "torn" / "checkpoints")
    assert [s for s, _ in files.steps()] == [2, 4]
    assert (files.directory / "step-00000004.ckpt.sha256").read_text().endswith(
        "  step-00000004.ckpt\n"
    )
    newest = files.step_path(4)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the tensor data; the file still loads
    newest.write_bytes(bytes(data))  # in place: last.ckpt (a hard link) is torn too
    with pytest.raises(CheckpointError, match=r"last.ckpt is corrupt: .*step-00000004.ckpt.sha256"):
        read_checkpoint(files.last)  # checked against the step file it is linked to
    del cfg["trainer"]["stop_after"]
    with pytest.raises(CheckpointError, match="is corrupt"):  # an explicit resume: refused
        twinfold.train(twinfold.load_config({**cfg, "run": {**cfg["run"], "resume": True}}))
    with pytest.warns(UserWarning, match=r"step-00000004.ckpt is corrupt.*next older"):
        result = twinfold.train(
            twinfold.load_config({**cfg, "run": {**cfg["run"], "resume": "auto"}})
        )
    assert result.steps == 6
    a, b = (read_checkpoint(r / "checkpoints" / "last.ckpt") for r in (whole, result.run_dir))
    for key in ("online", "target", "optimizer"):
        assert digest_tensors(a[key]) == digest_tensors(b[key]), key


def digest_tensors(state: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(state, key=str):
        value = state[name]
        if isinstance(value, dict):
            h.update(digest_tensors(value).encode())
        elif isinstance(value, torch.Tensor):
            h.update(value.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()
