"""The chaos run (examples/chaos.py) with two kills: a real `twinfold train`, killed at
random moments with SIGKILL, SIGTERM or SIGUSR1 and requeued with run.resume=auto, ends
equal to the uninterrupted run (metrics rows, exported bytes, checkpoint states). The docs
report the same script with 200 kills."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _chaos_module():
    spec = importlib.util.spec_from_file_location("chaos", EXAMPLES / "chaos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_run_killed_at_random_moments_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    chaos = _chaos_module()
    chaos.EPOCHS = 2  # the docs' run: 3; two still give a mid-run epoch end (evaluation)
    assert chaos.phases_ahead([]) == chaos.PHASES
    report = chaos.chaos(tmp_path, kills=2, per_run=2, seed=3)
    assert report["kills"] == 2 and report["runs"] >= 1
    assert report["runs_equal"] == report["runs"], report["results"]


def test_the_comparison_sees_a_difference(tmp_path: Path) -> None:
    """The checker is not blind: a run directory differing in one metrics row or in the
    exported bytes is reported."""
    chaos = _chaos_module()
    for name in ("a", "b"):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.csv").write_text("step,loss,images_per_s\n1,0.5,10\n2,0.4,11\n")
        (run / "backbone.safetensors").write_bytes(b"weights")
    rows = chaos.rows(tmp_path / "b")
    assert rows == [{"step": "1", "loss": "0.5"}, {"step": "2", "loss": "0.4"}]  # no clock
    (tmp_path / "b" / "metrics.csv").write_text("step,loss\n1,0.5\n1,0.5\n2,0.4\n")
    assert chaos.rows(tmp_path / "a") != chaos.rows(tmp_path / "b")  # a repeated row


def test_every_phase_has_its_moment() -> None:
    """Each phase a kill may aim at comes in an uninterrupted run: the epoch-end
    checkpoints that 'mid-evaluation' waits for exist (a checkpoint period that skips the
    epoch ends made that phase unreachable: every such kill let the run finish)."""
    chaos = _chaos_module()
    done = chaos.EPOCHS * chaos.STEPS_PER_EPOCH
    saves = set(range(chaos.EVERY, done + 1, chaos.EVERY)) | {done}
    assert any(s % chaos.STEPS_PER_EPOCH == 0 and s < done for s in saves)
    assert chaos.phases_ahead([]) == chaos.PHASES
