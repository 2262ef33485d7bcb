"""Helpers for tests that drive the real ``twinfold`` command line in subprocesses:
tiny configs, waiting for files, finding spawned ranks, and fixture plugins."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny_config(tmp: Path, name: str, **sections: dict[str, Any]) -> Path:
    """A YAML config of the tiny BYOL used across the tests; ``sections`` update it."""
    cfg: dict[str, Any] = {
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 64},
        "method": {"encoder": {"widths": [8, 16]},
                   "projector": {"hidden_dims": [32], "out_dim": 16},
                   "predictor": {"hidden_dims": [32], "out_dim": 16}},
        "trainer": {"accelerator": "cpu", "epochs": 3, "max_steps": 30, "progress_bar": False,
                    "log_every": 1},
        "run": {"output_dir": str(tmp / "runs"), "name": name, "plots": False,
                "tensorboard": "off"},
        "evaluation": {"at_end": False, "every_n_epochs": 0},
    }
    for key, values in sections.items():
        cfg[key] = {**cfg.get(key, {}), **values}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m twinfold.cli ARGS`` in the background (text pipes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "twinfold.cli", *args],
        cwd=cwd,
        env={**os.environ, **ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    proc = start(*args, cwd=cwd, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def run_here(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``twinfold ARGS`` through the CLI's own ``main`` in this process (in ``cwd``, with
    ``env`` set meanwhile): the exit code, stdout and stderr that :func:`run` gives,
    without a fresh interpreter importing torch and torchvision (seconds each time).
    Warnings go to pytest's recorder here, not to stderr: check those with :func:`run`."""
    from twinfold.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)  # main itself sets variables (--block, --no-plugins)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(cwd)
            for key, value in (env or {}).items():
                mp.setenv(key, value)
                if key == "PYTHONPATH":  # what a fresh interpreter would search first
                    for entry in reversed(value.split(os.pathsep)):
                        if entry:
                            mp.syspath_prepend(entry)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse's usage errors
                    code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return code, out.getvalue(), err.getvalue()


def wait_for(
    what: str, ready: Callable[[], bool], procs: list[subprocess.Popen], timeout: float = 180
) -> None:
    """Poll ``ready`` every 10 ms; fail early (with the output) when a process ends. The
    timeout only bounds a hang: on a busy machine a start can take a minute."""
    end = time.monotonic() + timeout
    while not ready():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"process ended ({p.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def checkpoint_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("step-*.ckpt"))


def spawned_children(pid: int) -> list[int]:
    """The ``ddp_spawn`` worker processes of ``pid`` in start order (rank 0 first)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, text):
        try:
            cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmd:
            found.append(child)
    return sorted(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def install_plugin(source: Path, target: Path) -> Path:
    """``pip install --target`` a fixture plugin (offline) from a copy of its source (pip
    builds in the source tree; pytest-xdist workers may install it at the same time);
    returns the site directory."""
    copy = target.with_name(f"{target.name}-source")
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--no-index", "--target", str(target), str(copy)],
        check=True,
    )
    return target
