"""Record what a set of fixed-seed runs computes, and prove a refactor left it unchanged.

    python examples/behaviour_fingerprint.py record before.json   # on the old code
    python examples/behaviour_fingerprint.py record after.json    # on the new code
    python examples/behaviour_fingerprint.py compare before.json after.json

A fingerprint holds, for every case, each ``metrics.csv`` row (every column except the
wall-clock ones) and SHA-256 digests of the exported backbone's tensors and of the last
checkpoint's online, target, optimizer and RNG tensors. ``compare`` exits 1 naming the
first difference of each case; equal digests mean bit-identical weights.

The cases: every small preset installed (seed 0, the machine's default step settings),
plus byol-small with per-sample views, on an image folder, and killed half-way
(``trainer.stop_after``) then resumed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

import twinfold
from twinfold.checkpoint_format import read_checkpoint

WALL_CLOCK = {"images_per_s", "final/seconds"}
QUIET = ["trainer.progress_bar=false", "run.plots=false", "run.tensorboard='off'"]


def tensor_digest(tensors: dict[str, Any]) -> str:
    """SHA-256 over the sorted (key, dtype, shape, bytes) of a nested tensor mapping."""
    digest = hashlib.sha256()

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key in sorted(value, key=str):
                walk(f"{prefix}.{key}", value[key])
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(f"{prefix}[{i}]", item)
        elif isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{prefix}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            digest.update(f"{prefix}={value!r}".encode())

    walk("", tensors)
    return digest.hexdigest()


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="", encoding="utf-8") as file:
        return [
            {k: v for k, v in row.items() if v and k not in WALL_CLOCK}
            for row in csv.DictReader(file)
        ]


def fingerprint(run_dir: Path) -> dict[str, Any]:
    state = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    return {
        "rows": metric_rows(run_dir),
        "backbone": tensor_digest(load_file(str(run_dir / "backbone.safetensors"))),
        **{
            key: tensor_digest(state.get(key, {}))
            for key in ("online", "target", "optimizer", "rng")
        },
        "step": state["step"],
    }


def write_folder(root: Path) -> Path:
    """The digits as 16 px PNG files, one sub-folder per class (first 300 images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images[:300], digits.target[:300])):
        folder = root / "images" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255 / 16)).astype(np.uint8)
        Image.fromarray(pixels).resize((16, 16), Image.BILINEAR).save(folder / f"{i:04d}.png")
    return root / "images"


def train(preset: str, output: Path, name: str, overrides: list[str]) -> Path:
    cfg = twinfold.load_config(
        {"preset": preset},
        [*QUIET, f"run.output_dir={output}", f"run.name={name}", *overrides],
    )
    return twinfold.train(cfg).run_dir


def cases(output: Path) -> dict[str, Path]:
    small = sorted(p for p in twinfold.available("preset") if p.endswith("-small"))
    runs = {preset: train(preset, output, preset, []) for preset in small}
    runs["byol-small/per-sample"] = train(
        "byol-small", output, "per-sample", ["data.view_engine=per-sample"]
    )
    folder = write_folder(output)
    runs["byol-small/folder"] = train(
        "byol-small",
        output,
        "folder",
        ["data.dataset=folder", f"data.root={folder}", "data.batch_size=64", "trainer.epochs=2"],
    )
    resumed = ["trainer.epochs=4", "run.checkpoint_every=3"]
    train("byol-small", output, "resumed", [*resumed, "trainer.stop_after=8"])
    resume = [*resumed, "run.resume=true"]
    runs["byol-small/resumed"] = train("byol-small", output, "resumed", resume)
    return runs


def record(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: fingerprint(run) for name, run in cases(Path(tmp)).items()}
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {out}: {', '.join(result)}")


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in sorted(set(a) | set(b)):
        if key == "rows":
            continue
        if a.get(key) != b.get(key):
            return f"{key}: {a.get(key)} != {b.get(key)}"
    rows_a, rows_b = a.get("rows", []), b.get("rows", [])
    if len(rows_a) != len(rows_b):
        return f"metrics.csv has {len(rows_a)} vs {len(rows_b)} rows"
    for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
        if ra != rb:
            keys = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
            return f"metrics.csv row {i} differs in {', '.join(keys)}"
    return None


def compare(before: Path, after: Path) -> int:
    a = json.loads(before.read_text(encoding="utf-8"))
    b = json.loads(after.read_text(encoding="utf-8"))
    failed = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in {'before' if name in a else 'after'}")
            failed += 1
            continue
        diff = first_difference(a[name], b[name])
        rows = len(a[name]["rows"])
        print(f"{name}: {'bit-identical' if diff is None else 'DIFFERS: ' + diff} ({rows} rows)")
        failed += diff is not None
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("record").add_argument("out", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
