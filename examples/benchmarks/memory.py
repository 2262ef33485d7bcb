"""Memory: peak resident set size (RSS) of twinfold's BYOL training step (forward,
backward, optimizer step, EMA target update) with ``step.py``'s model, a CIFAR-style
ResNet-18 with the small preset's heads, two 32 px views, at batch 64 and 256, in float32
and in bf16 autocast with channels_last.

Each setting runs in a fresh Python process, so that peaks do not mix: the process
builds the method, its optimizer and the input views (step.py's ``TwinfoldStep`` and
``variant``) and reads its current RSS ("after build"); then it resets the kernel's RSS
high-water mark (Linux: ``/proc/self/clear_refs``), so that allocations made while
importing and building cannot hide the steps' peak, runs ``--steps`` steps and reads the
peak RSS (``VmHWM``, else ``getrusage(RUSAGE_SELF).ru_maxrss``). "step" is the difference: the
steps' own increment (activations, gradients, and the optimizer's momentum buffers,
which the first step creates; the default two steps also cover a steady-state step,
which holds them from the start). Where the mark cannot be reset the peak is the whole
process's and the row is marked ``*``.

    python examples/benchmarks/memory.py          # 4 settings, 1-2 minutes on 2 cores
    python examples/benchmarks/memory.py --batches 64 --precisions bf16 --steps 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

import twinfold
from twinfold.method import build_method

#: --precisions choice -> (table label, bf16 autocast + channels_last)
PRECISIONS = {"fp32": ("fp32", False), "bf16": ("bf16 + channels_last", True)}


def step_module() -> ModuleType:
    """examples/benchmarks/step.py (the folder is not a package), imported once."""
    key = "twinfold_benchmark_step"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name("step.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _status_mib(field: str) -> float | None:
    """A ``kB`` field of /proc/self/status in MiB, None where there is none."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB: ``VmHWM`` of /proc/self/status, the mark that
    :func:`reset_peak_rss` resets (``ru_maxrss`` also keeps the peak recorded when a thread
    exited, e.g. one an import started, so a reset may not show there); elsewhere
    ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mib() -> float | None:
    """This process's RSS now in MiB (``VmRSS`` of /proc/self/status), None elsewhere."""
    return _status_mib("VmRSS")


def reset_peak_rss() -> bool:
    """Reset the RSS high-water mark that ``ru_maxrss`` reports to the current RSS
    (Linux >= 4.0: write 5 to /proc/self/clear_refs); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def measure(
    batch: int, fast: bool, size: int = 32, steps: int = 2, encoder: str = "resnet18"
) -> dict[str, float]:
    """In THIS process: RSS (MiB) after building BYOL's method, optimizer and two views of
    ``batch`` images, and the peak RSS of ``steps`` training steps after it; ``fast``:
    bf16 autocast and channels_last. ``peak_reset`` is 1.0 when the high-water mark could
    be reset before the steps, else the peak is the whole process's. Run it in a fresh
    process (:func:`measure_in_subprocess`) so that nothing else shares the peak."""
    bench = step_module()
    torch.manual_seed(0)
    method = {"encoder": bench.RESNET18} if encoder == "resnet18" else {}
    cfg = twinfold.load_config({"preset": bench.PRESETS["byol"], "method": method})
    step = bench.TwinfoldStep(build_method(cfg.method), lr=0.01)
    views = [torch.randn(batch, 3, size, size) for _ in range(2)]
    go = bench.variant(step, step.modules(), fast)
    built = current_rss_mib()
    if built is None:
        built = peak_rss_mib()
    reset = reset_peak_rss()
    for _ in range(steps):
        go(views)
    peak = peak_rss_mib()
    return {
        "built_mib": built,
        "peak_mib": peak,
        "step_mib": peak - built,
        "peak_reset": float(reset),
    }


def measure_in_subprocess(
    batch: int, fast: bool, size: int = 32, steps: int = 2, encoder: str = "resnet18"
) -> dict[str, float]:
    """:func:`measure` in a fresh Python process (this script with ``--child``)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--child"]
    argv += ["--batches", str(batch), "--size", str(size), "--steps", str(steps)]
    argv += ["--encoder", encoder, *(["--fast"] if fast else [])]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[tuple[int, str], dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=list(PRECISIONS),
        help="bf16: bf16 autocast + channels_last",
    )
    parser.add_argument("--size", type=int, default=32, help="side of the views")
    parser.add_argument("--steps", type=int, default=2, help="training steps measured")
    parser.add_argument(
        "--encoder",
        choices=["resnet18", "preset"],
        default="resnet18",
        help="preset: keep the small preset's encoder (a quick check of the script)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fast", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one setting in this (fresh) process; JSON on the last line
        result = measure(args.batches[0], args.fast, args.size, args.steps, args.encoder)
        print(json.dumps(result))
        return {}

    precisions = args.precisions
    model = "CIFAR-style ResNet-18" if args.encoder == "resnet18" else "small preset encoder"
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"BYOL, {model} with byol-small's heads, two {args.size} px views, peak RSS "
        f"over {args.steps} training step(s), each setting in a fresh process\n"
    )
    header = f"{'batch':>5}  {'precision':<22}{'after build':>12}{'peak':>10}{'step':>10}"
    print(header + "  (MiB)\n" + "-" * len(header))
    results: dict[tuple[int, str], dict[str, float]] = {}
    for batch in args.batches:
        for choice in precisions:
            name, fast = PRECISIONS[choice]
            r = measure_in_subprocess(batch, fast, args.size, args.steps, args.encoder)
            results[(batch, name)] = r
            mark = "" if r["peak_reset"] else " *"
            print(
                f"{batch:>5}  {name:<22}{r['built_mib']:>12,.0f}{r['peak_mib']:>10,.0f}"
                f"{r['step_mib']:>10,.0f}{mark}"
            )
    print("\nafter build: RSS with the model, optimizer and input views built; peak: peak RSS")
    print("of the steps; step: their increment (peak - after build).")
    if not all(r["peak_reset"] for r in results.values()):
        print("*: the RSS high-water mark could not be reset; peak of the whole process.")
    return results


if __name__ == "__main__":
    main()
