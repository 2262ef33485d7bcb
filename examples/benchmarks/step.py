"""Training-step time of the four methods, side by side in one run: twinfold's step vs a
hand-written plain PyTorch step doing the same maths, in float32 and in twinfold's fast
setting (bf16 autocast + channels_last), with model-FLOPs utilisation.

Model: a CIFAR-style ResNet-18 (3x3 stem, no max-pool) with each method's small-preset
heads, batch 64, two 32 px views. The plain step uses deep copies of the same modules (so
the network cost is identical) with the loss written inline from the papers' formulas
and a Python-loop EMA; the difference is twinfold's own overhead (loss objects, global
reductions, target rule, foreach EMA). FLOPs of one step (forward and backward) come from
``torch.utils.flop_counter``; MFU divides the achieved FLOP/s by a GEMM peak measured in
the same run (2048 x 2048 matmuls, fp32 and bf16).

    python examples/benchmarks/step.py                 # ~3 minutes on 2 CPU cores
    python examples/benchmarks/step.py --methods vicreg --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import twinfold
from twinfold.method import SiameseMethod, build_method

PRESETS = {
    "byol": "byol-small",
    "simsiam": "simsiam-small",
    "barlow-twins": "barlow-twins-small",
    "vicreg": "vicreg-small",
}
RESNET18 = {"name": "resnet", "arch": "resnet18", "small_stem": True}


# ---------------------------------------------------------------- plain references
def byol_loss(p: list[Tensor], z: list[Tensor]) -> Tensor:
    """Grill et al. 2020, eq. 2 summed over both directions (eq. 4)."""
    return sum((2 - 2 * F.cosine_similarity(p[i], z[1 - i], dim=1)).mean() for i in (0, 1))


def simsiam_loss(p: list[Tensor], z: list[Tensor]) -> Tensor:
    """Chen & He 2021, eq. 2: -1/2 [cos(p1, sg(z2)) + cos(p2, sg(z1))]."""
    return -0.5 * sum(F.cosine_similarity(p[i], z[1 - i].detach(), dim=1).mean() for i in (0, 1))


def barlow_loss(z: list[Tensor], lam: float = 0.0051) -> Tensor:
    """Zbontar et al. 2021, eq. 1 with the batch-normalised cross-correlation (the
    authors' code normalises with BatchNorm1d: biased variance, eps 1e-5)."""
    a, b = ((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5) for x in z)
    c = a.T @ b / a.shape[0]
    on = (1 - c.diagonal()).pow(2).sum()
    return on + lam * (c.pow(2).sum() - c.diagonal().pow(2).sum())


def vicreg_loss(z: list[Tensor]) -> Tensor:
    """Bardes et al. 2022, eqs. 1-6 with 25/25/1 and the authors' variance convention."""
    x, y = z
    n, d = x.shape
    inv = F.mse_loss(x, y)
    var = sum(F.relu(1 - torch.sqrt(t.var(0) + 1e-4)).mean() for t in (x, y)) / 2
    cov = 0.0
    for t in (x, y):
        t = t - t.mean(0)
        c = t.T @ t / (n - 1)
        cov = cov + (c.pow(2).sum() - c.diagonal().pow(2).sum()) / d
    return 25 * inv + 25 * var + cov


class PlainStep:
    """The same maths without twinfold: modules called directly, loss inline."""

    def __init__(self, method: SiameseMethod, kind: str, lr: float) -> None:
        online = method.online_raw
        self.encoder = copy.deepcopy(online.encoder)
        self.projector = copy.deepcopy(online.projector)
        self.predictor = copy.deepcopy(online.predictor) if online.predictor is not None else None
        self.kind = kind
        self.trainable = nn.ModuleList(
            [self.encoder, self.projector, self.predictor or nn.Identity()]
        )
        self.target = None
        if kind == "byol":
            self.target = copy.deepcopy(nn.Sequential(self.encoder, self.projector))
            self.target.requires_grad_(False)
        self.opt = torch.optim.SGD(self.trainable.parameters(), lr=lr, momentum=0.9)

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.trainable, self.target) if m is not None]

    def loss(self, views: list[Tensor]) -> Tensor:
        z = [self.projector(self.encoder(v)) for v in views]
        if self.kind == "byol":
            p = [self.predictor(t) for t in z]
            with torch.no_grad():
                zt = [self.target(v) for v in views]
            loss = byol_loss([t.float() for t in p], [t.float() for t in zt])
        elif self.kind == "simsiam":
            p = [self.predictor(t) for t in z]
            loss = simsiam_loss([t.float() for t in p], [t.float() for t in z])
        elif self.kind == "barlow-twins":
            loss = barlow_loss([t.float() for t in z])
        else:
            loss = vicreg_loss([t.float() for t in z])
        return loss

    def __call__(self, views: list[Tensor]) -> None:
        self.loss(views).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.target is not None:  # what most hand-written BYOL loops do
            with torch.no_grad():
                online = nn.Sequential(self.encoder, self.projector)
                for pt, po in zip(self.target.parameters(), online.parameters(), strict=True):
                    pt.mul_(0.99).add_(po, alpha=0.01)


class TwinfoldStep:
    """What twinfold's loop does per batch, minus data loading and logging."""

    def __init__(self, method: SiameseMethod, lr: float) -> None:
        self.method = method
        self.opt = torch.optim.SGD(method.online_raw.parameters(), lr=lr, momentum=0.9)
        self.step = 0

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.method.online_raw, self.method.target) if m is not None]

    def __call__(self, views: list[Tensor]) -> None:
        out = self.method.training_step(views)
        out.loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(self.step, 1000)
        self.step += 1


# ---------------------------------------------------------------- measuring
def variant(run: Callable[[list[Tensor]], None], modules: list[nn.Module], fast: bool):
    """A closure running one step in float32, or in bf16 autocast with channels_last."""
    fmt = torch.channels_last if fast else torch.contiguous_format
    for m in modules:
        m.to(memory_format=fmt)

    def go(views: list[Tensor]) -> None:
        views = [v.contiguous(memory_format=fmt) for v in views]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            run(views)

    return go


def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` (median)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def step_flops(go: Callable[[list[Tensor]], None], views: list[Tensor]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        go(views)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--encoder",
        choices=["resnet18", "preset"],
        default="resnet18",
        help="preset: keep the small preset's encoder (a quick check of the script)",
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    peak32, peak16 = gemm_peak(torch.float32), gemm_peak(torch.bfloat16)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; GEMM peak fp32 {peak32 / 1e9:.0f} GFLOP/s, "
        f"bf16 {peak16 / 1e9:.0f} GFLOP/s"
    )
    print(
        f"CIFAR-style ResNet-18, batch {args.batch}, two {args.size} px views, "
        f"median of {args.repeats}\n"
    )
    header = f"{'method':<13}{'step':<28}{'ms':>8}{'vs plain fp32':>15}{'GFLOP':>8}{'MFU':>7}"
    print(header + "\n" + "-" * len(header))
    for kind in args.methods:
        method = {"encoder": RESNET18} if args.encoder == "resnet18" else {}
        cfg = twinfold.load_config({"preset": PRESETS[kind], "method": method})
        lr = 0.01
        views = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(2)]
        tw = TwinfoldStep(build_method(cfg.method), lr)
        plain = PlainStep(tw.method, kind, lr)
        runs = {
            "plain PyTorch, fp32": (plain, False, peak32),
            "twinfold, fp32": (tw, False, peak32),
            "twinfold, bf16 + channels_last": (tw, True, peak16),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        flops: dict[str, int] = {}
        for name, (step, fast, _) in runs.items():
            go = variant(step, step.modules(), fast)
            flops[name] = step_flops(go, views)  # also the warm-up
        for _ in range(args.repeats):
            for name, (step, fast, _) in runs.items():
                go = variant(step, step.modules(), fast)
                t = time.perf_counter()
                go(views)
                times[name].append(time.perf_counter() - t)
        base = statistics.median(times["plain PyTorch, fp32"])
        for name, (_, _, peak) in runs.items():
            sec = statistics.median(times[name])
            mfu = flops[name] / sec / peak
            print(
                f"{kind:<13}{name:<28}{sec * 1000:>8.0f}{sec / base:>14.2f}x"
                f"{flops[name] / 1e9:>8.1f}{100 * mfu:>6.0f}%"
            )
    print("\nMFU: the step's counted FLOPs per second over the GEMM peak of its precision.")


if __name__ == "__main__":
    main()
