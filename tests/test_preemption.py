"""Real processes, real signals: preemption (SIGTERM / SIGUSR1) stops every rank at a
step boundary with one checkpoint and exit code 75; a SIGKILLed run resumes from its last
checkpoint exactly; a non-finite loss or gradient on one rank stops all ranks before the
optimizer step with an error naming the step and the rank."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from runner import (
    checkpoint_steps,
    install_plugin,
    run,
    run_here,
    spawned_children,
    start,
    tiny_config,
    wait_for,
)

import twinfold
from twinfold import NonFiniteLossError, Registry
from twinfold.checkpoint_format import read_checkpoint
from twinfold.stopping import PREEMPTED_EXIT_CODE

FAULTS = Path(__file__).parent / "plugins" / "faults"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is faster on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("sig", "devices"),
    [
        pytest.param(signal.SIGTERM, 2, marks=pytest.mark.distributed, id="SIGTERM-to-rank-1"),
        pytest.param(signal.SIGUSR1, 1, id="SIGUSR1-single-process"),
    ],
)
def test_signal_stops_every_rank_with_one_checkpoint_then_resumes(
    tmp_path: Path, sig: signal.Signals, devices: int
) -> None:
    trainer = {"devices": devices, "strategy": "ddp_spawn" if devices > 1 else "auto",
               "collective_timeout_s": 60, "max_steps": 16}
    cfg = tiny_config(tmp_path, "pre", trainer=trainer,
                      data={"batch_size": 64 // devices},
                      run={"checkpoint_every": 4, "keep_checkpoints": 100})
    run_dir = tmp_path / "runs" / "pre"
    proc = start("train", str(cfg), cwd=tmp_path)
    wait_for("the first checkpoint", lambda: 4 in checkpoint_steps(run_dir), [proc])
    target = spawned_children(proc.pid)[-1] if devices > 1 else proc.pid  # the last rank
    os.kill(target, sig)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    stopped = re.search(rf"stopped by {sig.name} at step (\d+)", err)
    assert stopped, err
    k = int(stopped.group(1))
    assert 4 < k < 16
    # one checkpoint at the stop, besides the periodic ones; nothing else written
    assert checkpoint_steps(run_dir) == sorted({*range(4, k + 1, 4), k})
    state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert state["step"] == k and state["world_size"] == devices
    assert state["rng"]["torch"].shape[0] == devices
    assert not (run_dir / "backbone.safetensors").exists()
    # every rank ended: nothing left behind
    assert not Path(f"/proc/{target}").exists() or target == proc.pid
    # the same command continues the run (here: no need for another interpreter)
    code, out, err = run_here("train", str(cfg), "--set", "run.resume=true", cwd=tmp_path)
    assert code == 0, err
    assert "steps: 16" in out
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["step"] == 16


def _weights_and_state(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    out = {f"{part}.{k}": v for part in ("online", "target") for k, v in state[part].items()}
    for pid, slots in state["optimizer"]["state"].items():
        out.update({f"optimizer.{pid}.{k}": v for k, v in slots.items()})
    for i, group in enumerate(state["optimizer"]["param_groups"]):
        out[f"lr.{i}"] = torch.tensor(group["lr"], dtype=torch.float64)
    out.update({f"rng.{k}": v for k, v in state["rng"].items()})
    return out


def test_sigkilled_run_resumes_from_its_last_checkpoint_exactly(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "killed", run={"checkpoint_every": 3, "keep_checkpoints": 2})
    run_dir = tmp_path / "runs" / "killed"
    proc = start("train", str(cfg), cwd=tmp_path)
    wait_for("a checkpoint", lambda: any(s >= 6 for s in checkpoint_steps(run_dir)), [proc])
    proc.kill()  # SIGKILL: no handler runs, a save may be cut short
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last = max(checkpoint_steps(run_dir))
    assert last < 30 and read_checkpoint(run_dir / "checkpoints" / f"step-{last:08d}.ckpt")
    code, out, err = run_here("train", str(cfg), "--set", "run.resume=true", cwd=tmp_path)
    assert code == 0, err
    assert "steps: 30" in out
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    # the same run without interruption, in this process like the resumed one
    code, _, err = run_here("train", str(cfg), "--set", "run.name=full", cwd=tmp_path)
    assert code == 0, err
    a = _weights_and_state(tmp_path / "runs" / "full" / "checkpoints" / "last.ckpt")
    b = _weights_and_state(run_dir / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and any(k.startswith("optimizer.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def faults_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_plugin(FAULTS, tmp_path_factory.mktemp("faults-site"))


@pytest.mark.distributed
def test_non_finite_loss_on_one_rank_stops_all_ranks_before_the_step(
    tmp_path: Path, faults_site: Path
) -> None:
    cfg = tiny_config(
        tmp_path, "nan",
        method={"loss": {"name": "faulty-mse", "fault": "loss", "bad_call": 5, "bad_rank": 1}},
        trainer={"devices": 2, "strategy": "ddp_spawn", "collective_timeout_s": 60},
        data={"batch_size": 32},
        run={"checkpoint_every": 2, "keep_checkpoints": 10},
    )
    env = {"PYTHONPATH": f"{faults_site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code, _, err = run("train", str(cfg), cwd=tmp_path, env=env, timeout=240)
    assert code == 1, err
    assert "Traceback" not in err
    # DDP's gradient all-reduce spread rank 1's NaN: every rank saw non-finite gradients
    assert ("a non-finite loss on rank(s) 1 and non-finite gradients on rank(s) 0, 1 "
            "at step 5") in err
    assert "stopped before the optimizer step, as did every rank" in err
    run_dir = tmp_path / "runs" / "nan"
    assert "step-00000004.ckpt, step 4) is intact" in err
    assert checkpoint_steps(run_dir) == [2, 4]  # the bad step was never taken nor saved
    assert read_checkpoint(run_dir / "checkpoints" / "last.ckpt")["step"] == 4


def test_non_finite_gradient_stops_before_the_optimizer_step(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "twinfold_test_faults", FAULTS / "twinfold_test_faults" / "__init__.py"
    )
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    registry = Registry(entry_points=True, plugins={"faults": faults})
    cfg = twinfold.load_config(
        tiny_config(tmp_path, "nangrad",
                    method={"loss": {"name": "faulty-mse", "fault": "grad", "bad_call": 3}},
                    run={"checkpoint_every": 2}),
        registry=registry,
    )
    with pytest.raises(NonFiniteLossError) as info:
        twinfold.train(cfg, registry=registry)
    text = str(info.value)
    assert "non-finite gradients on rank(s) 0 at step 3" in text
    assert "non-finite loss" not in text and "step-00000002.ckpt, step 2) is intact" in text
    state = read_checkpoint(tmp_path / "runs" / "nangrad" / "checkpoints" / "last.ckpt")
    assert state["step"] == 2
    rows = (tmp_path / "runs" / "nangrad" / "metrics.csv").read_text().splitlines()
    steps = [int(r.split(",")[rows[0].split(",").index("step")]) for r in rows[1:]]
    assert steps == [1, 2, 3]  # the metrics that led to the failure are on disk
    assert all(torch.isfinite(v).all() for v in state["online"].values() if v.is_floating_point())


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (the SigCgt mask of /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt")), 16)
    return bool(mask >> (sig - 1) & 1)


@pytest.mark.parametrize("after_s", [0.0, 2.0], ids=["first-moment", "after-2s"])
def test_a_stop_signal_in_the_first_seconds_exits_75_and_a_requeue_starts_afresh(
    tmp_path: Path, after_s: float
) -> None:
    """SIGTERM before training starts: at the first moment the handler is in place (the
    CLI installs it before importing torch; on a quiet machine about 0.1 s after start),
    or 2 s later while torch is imported or the config and components are prepared:
    exit 75 like any preemption, nothing written, and the requeued command
    (run.resume=auto) trains from step 0."""
    cfg = tiny_config(tmp_path, "early", trainer={"max_steps": 2}, run={"resume": "auto"})
    proc = start("train", str(cfg), cwd=tmp_path)
    wait_for("the SIGTERM handler", lambda: _catches(proc.pid, signal.SIGTERM), [proc])
    time.sleep(after_s)
    assert proc.poll() is None and not (tmp_path / "runs" / "early" / "checkpoints").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == PREEMPTED_EXIT_CODE, err
    assert "before training started" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "early").exists()
    code, _, err = run_here("train", str(cfg), cwd=tmp_path)
    assert code == 0, err
    assert read_checkpoint(tmp_path / "runs" / "early" / "checkpoints" / "last.ckpt")["step"] == 2
