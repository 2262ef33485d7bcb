"""Chaos run: kill a real `twinfold train` over and over, resume it, and check that it ends
exactly like a run that was never interrupted.

    python examples/chaos.py --kills 200 --out /tmp/chaos     # the docs' number
    python examples/chaos.py --kills 6                        # what CI runs (tests)

A tiny BYOL config (3 epochs of 11 steps, a checkpoint at the end of every epoch, kNN
after every epoch, export at the end) is trained once without interruption. Then, run after run, the
same command (`run.resume=auto`, so a requeue either continues or starts afresh) is
started and killed at a moment chosen at random among: mid-step, mid-checkpoint-write
(while a `.tmp-*` file exists), mid-evaluation (right after an epoch's checkpoint) and
mid-export (after the last checkpoint), with SIGKILL, SIGTERM or SIGUSR1; each run takes
up to `--per-run` kills and is then left to finish. Every finished run is compared with the
uninterrupted one: every `metrics.csv` row (in order, none missing, none repeated; wall-clock
columns excepted), the exported backbone's bytes, and the last checkpoint's model,
optimizer, target and generator states. Prints a table and exits 1 if any run differs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

PHASES = ("step", "checkpoint", "evaluation", "export")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGUSR1)
STEPS_PER_EPOCH, EPOCHS = 11, 3
EVERY = STEPS_PER_EPOCH  # a checkpoint at each epoch end, before its kNN: the moment
# 'mid-evaluation' waits for (steps between epoch ends would never show it)
WALL_CLOCK = {"images_per_s", "final/seconds"}


def fingerprint_module() -> Any:
    """examples/behaviour_fingerprint.py (this folder is not a package)."""
    path = Path(__file__).with_name("behaviour_fingerprint.py")
    spec = importlib.util.spec_from_file_location("behaviour_fingerprint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_config(out: Path, name: str) -> Path:
    cfg = {
        "preset": "byol-small",
        "data": {"image_size": 16, "batch_size": 128},  # 1,437 images: 11 steps an epoch
        "method": {
            "encoder": {"widths": [8, 16]},
            "projector": {"hidden_dims": [32], "out_dim": 16},
            "predictor": {"hidden_dims": [32], "out_dim": 16},
        },
        "trainer": {"epochs": EPOCHS, "progress_bar": False, "log_every": 1},
        "run": {
            "output_dir": str(out / "runs"),
            "name": name,
            "resume": "auto",
            "checkpoint_every": EVERY,
            "keep_checkpoints": 2,
            "plots": False,
            "tensorboard": "off",
        },
        "evaluation": {"every_n_epochs": 1},
    }
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def start(config: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "twinfold.cli", "train", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def checkpoints(run: Path) -> list[int]:
    folder = run / "checkpoints"
    return sorted(int(p.name[5:13]) for p in folder.glob("step-*.ckpt")) if folder.is_dir() else []


def temporaries(run: Path) -> set[str]:
    folder = run / "checkpoints"
    return {p.name for p in folder.glob(".tmp-*")} if folder.is_dir() else set()


def moment_reached(
    phase: str, run: Path, seen: list[int], started: float, stale: set[str]
) -> bool:
    """Whether ``phase`` of the run started at ``started`` is under way (polled every ms);
    ``seen`` are the checkpoints and ``stale`` the temporary files there before it."""
    if phase == "checkpoint":  # a temporary file of this process's save (not a leftover)
        return bool(temporaries(run) - stale)
    if phase == "step":  # this process logged a step: training is under way
        metrics = run / "metrics.csv"
        return metrics.is_file() and metrics.stat().st_mtime > started
    steps = checkpoints(run)
    if phase == "evaluation":  # the kNN follows an epoch-end checkpoint
        last = EPOCHS * STEPS_PER_EPOCH
        return any(s % STEPS_PER_EPOCH == 0 and s < last and s not in seen for s in steps)
    return EPOCHS * STEPS_PER_EPOCH in steps  # export: after the last checkpoint


def phases_ahead(seen: list[int]) -> tuple[str, ...]:
    """The phases a run resumed after checkpoint ``max(seen)`` will still pass through
    (a kill aimed at one already behind it would let the run finish unkilled)."""
    last, done = max(seen, default=0), EPOCHS * STEPS_PER_EPOCH
    if last >= done:  # only the final evaluation and export are left
        return ("export",)
    if last >= done - STEPS_PER_EPOCH:  # no epoch-end evaluation before the last one
        return tuple(p for p in PHASES if p != "evaluation")
    return PHASES


def kill_once(config: Path, run: Path, rng: random.Random) -> tuple[str, str, int | None]:
    """Start the run and kill it at a random moment; (phase, signal, exit status), or
    the phase 'finished' when the run ended before the moment came."""
    seen, started, stale = checkpoints(run), time.time(), temporaries(run)
    phase, sig = rng.choice(phases_ahead(seen)), rng.choice(SIGNALS)
    trained = EPOCHS * STEPS_PER_EPOCH in seen
    proc = start(config)
    if trained:
        time.sleep(rng.uniform(0.3, 5.0))  # past start-up (handlers in place after ~0.1 s)
    deadline = time.monotonic() + 120
    while not trained and not moment_reached(phase, run, seen, started, stale):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.wait()
            return "finished", sig.name, proc.returncode
        time.sleep(0.001)
    time.sleep(rng.uniform(0.0, {"step": 0.3, "evaluation": 0.05}.get(phase, 0.0)))
    if proc.poll() is not None:  # it ended before the moment came
        return "finished", sig.name, proc.returncode
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    finished = (run / "summary.json").is_file()  # a signal after the process was done
    if proc.returncode not in (0, 75, -signal.SIGKILL) and not finished:
        raise RuntimeError(f"{phase}/{sig.name}: exit {proc.returncode}\n{err}")
    return phase, sig.name, proc.returncode


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="", encoding="utf-8") as file:
        return [
            {k: v for k, v in r.items() if v and k not in WALL_CLOCK} for r in csv.DictReader(file)
        ]


def differences(reference: Path, run: Path, fp: Any) -> list[str]:
    """What differs between a chaos run and the uninterrupted one (empty: equal)."""
    found = []
    a, b = rows(reference), rows(run)
    if a != b:
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        found.append(f"metrics.csv: {len(a)} vs {len(b)} rows, first difference at row {at}")
    weights = "backbone.safetensors"
    if (reference / weights).read_bytes() != (run / weights).read_bytes():
        found.append(f"{weights} bytes")
    ca = fp.read_checkpoint(reference / "checkpoints" / "last.ckpt")
    cb = fp.read_checkpoint(run / "checkpoints" / "last.ckpt")
    for key in ("step", "online", "target", "optimizer", "rng"):
        if fp.tensor_digest(ca.get(key, {})) != fp.tensor_digest(cb.get(key, {})):
            found.append(f"checkpoint {key}")
    return found


def chaos(out: Path, kills: int, per_run: int, seed: int) -> dict[str, Any]:
    fp, rng = fingerprint_module(), random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    reference_cfg = write_config(out, "reference")
    done = subprocess.run(
        [sys.executable, "-m", "twinfold.cli", "train", str(reference_cfg)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{done.stderr}")
    reference = out / "runs" / "reference"
    counts: Counter[str] = Counter()
    results, total, index = [], 0, 0
    while total < kills:
        name = f"chaos-{index:03d}"
        config, run = write_config(out, name), out / "runs" / name
        for _ in range(min(per_run, kills - total)):
            phase, sig, _ = kill_once(config, run, rng)
            if phase == "finished":
                break
            counts[f"{phase}/{sig}"] += 1
            total += 1
        final = subprocess.run(  # left to finish (or a no-op when it already has)
            [sys.executable, "-m", "twinfold.cli", "train", str(config)],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if final.returncode != 0:
            raise RuntimeError(f"{name} did not finish:\n{final.stderr}")
        results.append({"run": name, "differences": differences(reference, run, fp)})
        print(f"{name}: {total} kills so far, equal: {not results[-1]['differences']}",
              file=sys.stderr, flush=True)
        index += 1
    equal = sum(not r["differences"] for r in results)
    return {"kills": total, "by_phase_and_signal": dict(counts), "runs": len(results),
            "runs_equal": equal, "results": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--per-run", type=int, default=4, help="kills before a run may finish")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("chaos"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = chaos(args.out, args.kills, args.per_run, args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['kills']} kills over {report['runs']} runs; "
              f"{report['runs_equal']} of {report['runs']} ended equal to the uninterrupted run")
        for key, n in sorted(report["by_phase_and_signal"].items()):
            print(f"  {key:<24} {n}")
        for r in report["results"]:
            if r["differences"]:
                print(f"  {r['run']} differs: {'; '.join(r['differences'])}")
    return 0 if report["runs_equal"] == report["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
