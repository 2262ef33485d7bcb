"""Two "nodes" on one machine (two launcher invocations, node ranks 0 and 1, loopback
rendezvous, one gloo process each) train and checkpoint; a dead node or a mismatched
collective ends the run with an error within ``trainer.collective_timeout_s``."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
import torch
from runner import checkpoint_steps, free_port, start, tiny_config, wait_for

import twinfold
from twinfold.checkpoint_format import read_checkpoint
from twinfold.fast_path import with_fast_settings
from twinfold.plan import make_fabric

pytestmark = pytest.mark.distributed


def _two_nodes(tmp: Path, name: str, steps: int, timeout_s: float):
    cfg = tiny_config(
        tmp, name,
        trainer={"devices": 1, "num_nodes": 2, "strategy": "ddp", "epochs": 1000,
                 "max_steps": steps, "collective_timeout_s": timeout_s},
        data={"batch_size": 32},
        run={"checkpoint_every": 3},
    )
    port = str(free_port())
    return [
        start("train", str(cfg), cwd=tmp,
              env={"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node)})
        for node in (0, 1)
    ]


def test_two_nodes_on_loopback_train_and_checkpoint(tmp_path: Path) -> None:
    nodes = _two_nodes(tmp_path, "nodes", 6, 60)
    results = [p.communicate(timeout=240) for p in nodes]
    for p, (_, err) in zip(nodes, results, strict=True):
        assert p.returncode == 0, err
    (out0, _), (out1, _) = results  # global rank 0 reports, once
    assert out0.count("steps: 6") == 1 and out0.count("training on cpu") == 1
    assert "steps:" not in out1 and "run directory" not in out1 and "training on" not in out1
    state = read_checkpoint(tmp_path / "runs" / "nodes" / "checkpoints" / "last.ckpt")
    assert state["step"] == 6 and state["world_size"] == 2
    assert state["rng"]["torch"].shape[0] == 2
    assert checkpoint_steps(tmp_path / "runs" / "nodes") == [6]


def test_a_dead_node_ends_the_run_with_an_error_not_a_hang(tmp_path: Path) -> None:
    # the timeout also bounds the rendezvous: both nodes must reach it within 15 s
    nodes = _two_nodes(tmp_path, "dead", 100_000, 15)
    run_dir = tmp_path / "runs" / "dead"
    wait_for("the first checkpoint", lambda: bool(checkpoint_steps(run_dir)), nodes)
    nodes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    _, err = nodes[0].communicate(timeout=120)
    waited = time.monotonic() - killed
    nodes[1].communicate()
    assert nodes[0].returncode not in (0, None), err
    assert waited < 15 + 30, waited  # the collective timeout plus process teardown
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["step"] % 3 == 0


def _mismatched(fabric) -> float:
    """Rank 1 never joins rank 0's all-reduce (alive, busy elsewhere)."""
    if fabric.global_rank == 1:
        time.sleep(120)
        return 0.0
    started = time.monotonic()
    try:
        fabric.all_reduce(torch.ones(3))
    except Exception as exc:
        raise RuntimeError(f"collective failed after {time.monotonic() - started:.1f} s") from exc
    return -1.0


def test_a_mismatched_collective_fails_within_the_timeout() -> None:
    cfg = twinfold.load_config({"preset": "byol-small", "trainer": {
        "accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "collective_timeout_s": 3}})
    started = time.monotonic()
    with pytest.raises(Exception, match=r"collective failed after (\d+\.\d) s") as info:
        make_fabric(with_fast_settings(cfg)[0]).launch(_mismatched)
    found = re.search(r"collective failed after (\d+\.\d) s", str(info.value))
    assert found is not None
    waited = float(found.group(1))
    assert 2.5 < waited < 10
    assert time.monotonic() - started < 60
