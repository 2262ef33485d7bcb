"""Where a training step's time goes, by kind of operation, in float32 and in bf16 autocast
with channels_last: the profile behind the model-FLOPs utilisation of ``step.py``.

Same step and model as ``step.py`` (twinfold's step of one method on a CIFAR-style
ResNet-18 with the small preset's heads, batch 64, two 32 px views). ``torch.profiler``
records a few steps (the step's milliseconds come from unprofiled steps timed by the clock,
the profiler's own overhead being large); every operator's self CPU time is put in one
group, and each group gets its share of the step's time:

- convolution: oneDNN convolutions forward and backward (the FLOPs of a ResNet);
- matmul: linear layers and the loss's matrix products;
- layout / dtype: reorders, copies and casts (channels_last and bf16 conversions);
- batch norm: forward and backward of the norms;
- elementwise: activations, additions, scaling, reductions;
- optimizer / EMA: the SGD update and the target's moving average;
- other: the rest (autograd bookkeeping, allocation, Python-side dispatch).

It also prints the FLOP rate of the convolutions alone (their counted FLOPs over their
own time), the ceiling of the step's MFU at this size: a step cannot use the GEMM peak
better than its convolutions do.

    python examples/benchmarks/step_profile.py                  # byol, ~1 minute
    python examples/benchmarks/step_profile.py --method vicreg --batch 256
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections import defaultdict
from pathlib import Path
from types import ModuleType

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import twinfold
from twinfold.method import build_method

GROUPS = {  # first match wins; operator names as the profiler reports them (lower case)
    "convolution": ("convolution", "conv2d", "mkldnn_conv"),
    "matmul": ("addmm", "matmul", "::mm", "bmm", "linear"),
    "layout / dtype": ("reorder", "copy_", "::to", "_to_copy", "contiguous", "clone"),
    "batch norm": ("batch_norm",),
    "optimizer / EMA": ("_foreach", "sgd", "lerp"),
    "elementwise": ("relu", "threshold", "add", "mul", "div", "sub", "sum", "mean", "pow",
                    "sqrt", "norm", "fill", "zero", "neg", "rsub", "exp", "clamp", "var"),
}


def sibling(name: str) -> ModuleType:
    """Another script of this folder (it is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def group_of(op: str) -> str:
    name = op.lower()
    return next((g for g, keys in GROUPS.items() if any(k in name for k in keys)), "other")


def profile_step(go, views: list[torch.Tensor], steps: int) -> dict[str, float]:
    """Each group's share of the self CPU time of ``steps`` profiled steps."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            go(views)
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        seconds[group_of(event.key)] += event.self_cpu_time_total
    total = sum(seconds.values())
    return {group: s / total for group, s in seconds.items()}


def step_seconds(go, views: list[torch.Tensor], steps: int) -> float:
    """Median seconds of an unprofiled step (after one warm-up step)."""
    go(views)  # first-call costs, oneDNN primitive caches
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        go(views)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convolution_flops(go, views: list[torch.Tensor]) -> tuple[int, int]:
    """(FLOPs of the convolutions, FLOPs of everything) in one step."""
    counter = FlopCounterMode(display=False)
    with counter:
        go(views)
    by_op = counter.get_flop_counts().get("Global", {})
    conv = sum(n for op, n in by_op.items() if "convolution" in str(op))
    return conv, counter.get_total_flops()


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    step = sibling("step")
    parser.add_argument("--method", choices=list(step.PRESETS), default="byol")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--encoder", choices=["resnet18", "preset"], default="resnet18")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    method = {"encoder": step.RESNET18} if args.encoder == "resnet18" else {}
    cfg = twinfold.load_config({"preset": step.PRESETS[args.method], "method": method})
    tw = step.TwinfoldStep(build_method(cfg.method), 0.01)
    views = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(2)]
    peaks = {False: step.gemm_peak(torch.float32), True: step.gemm_peak(torch.bfloat16)}
    print(f"{args.method}, batch {args.batch}, two {args.size} px views, {args.steps} steps "
          f"profiled; GEMM peak fp32 {peaks[False] / 1e9:.0f}, bf16 {peaks[True] / 1e9:.0f} "
          "GFLOP/s\n")
    shares: dict[str, dict[str, float]] = {}
    for fast, name in ((False, "fp32"), (True, "bf16 + channels_last")):
        go = step.variant(tw, tw.modules(), fast)
        conv, total = convolution_flops(go, views)
        per_step = step_seconds(go, views, args.steps)
        share = profile_step(go, views, args.steps)
        conv_rate = conv / max(share.get("convolution", 0.0) * per_step, 1e-9)
        print(f"{name}: {per_step * 1000:.0f} ms per step, MFU "
              f"{100 * total / per_step / peaks[fast]:.0f}%; convolutions alone "
              f"{conv_rate / 1e9:.0f} GFLOP/s = {100 * conv_rate / peaks[fast]:.0f}% of the "
              f"peak ({100 * conv / total:.0f}% of the step's FLOPs)")
        for group in [*GROUPS, "other"]:
            part = share.get(group, 0.0)
            print(f"  {group:<18}{part * per_step * 1000:>8.0f} ms{100 * part:>6.0f}%")
        shares[name] = share
        print()
    return shares


if __name__ == "__main__":
    main()
