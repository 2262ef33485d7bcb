"""One training step of a small ViT with VICReg: twinfold's step vs a hand-written plain
PyTorch loop around the same timm model, in float32 and in bf16 autocast, timed side by
side (the variants alternate within every repeat, so a busy machine slows them alike).

Model: timm ``vit_tiny_patch16_224`` (192 wide, 3 heads) cut to ``--depth`` blocks, on
``--size`` px views in ``--patch`` px patches, with the ``vicreg-vit-small`` preset's
expander; needs twinfold-timm (``pip install -e plugins/timm``).

Both steps do the same maths on deep copies of the same modules: VICReg's loss (the plain
one written inline from the paper, ``step.vicreg_loss``), AdamW (fused kernels where torch
has them) with no weight decay on biases, norms, the position embedding and the class
token, the learning rate set from the warm-up + cosine schedule, the gradients clipped to
the preset's global norm. twinfold's step is what its loop runs per batch minus data
loading and logging: ``method.training_step``, ``twinfold.optim.build_optimizer``,
``LRSchedule.apply``, ``clip_grad_norm_`` (what Fabric's ``clip_gradients`` calls
outside 16-bit precision) and ``after_optimizer_step``.

    python examples/benchmarks/vit_step.py                  # about a minute on 2 cores
    python examples/benchmarks/vit_step.py --depth 12 --repeats 9
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable

import torch
from step import vicreg_loss
from torch import Tensor, nn

import twinfold
from twinfold.config import RunConfig
from twinfold.method import SiameseMethod, build_method
from twinfold.optim import build_optimizer
from twinfold.schedule import LRSchedule

NO_DECAY = ("pos_embed", "cls_token")


def vit_config(depth: int, size: int, patch: int) -> RunConfig:
    """The ``vicreg-vit-small`` preset with a ``depth``-block, 192-wide ViT."""
    encoder = {"img_size": size, "patch_size": patch,
               "kwargs": {"depth": depth, "embed_dim": 192, "num_heads": 3}}  # fmt: skip
    return twinfold.load_config(
        {"preset": "vicreg-vit-small", "data": {"image_size": size}, "method": {"encoder": encoder}}
    )


class PlainStep:
    """The hand-written loop: the modules called directly, the loss inline, torch's
    AdamW over two parameter groups, the lr set by hand, torch's clipping."""

    def __init__(self, method: SiameseMethod, cfg: RunConfig, schedule: LRSchedule) -> None:
        self.encoder = copy.deepcopy(method.online_raw.encoder)
        self.projector = copy.deepcopy(method.online_raw.projector)
        self.trainable = nn.ModuleList([self.encoder, self.projector])
        named = list(self.trainable.named_parameters())
        no_decay = [p for n, p in named if p.ndim <= 1 or n.rsplit(".", 1)[-1] in NO_DECAY]
        decay = [p for n, p in named if not (p.ndim <= 1 or n.rsplit(".", 1)[-1] in NO_DECAY)]
        opt = cfg.optimizer
        self.peak, self.clip, self.schedule, self.step = opt.lr, opt.clip_grad_norm, schedule, 0
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.lr, betas=opt.betas, fused=True,
        )  # fmt: skip

    def modules(self) -> list[nn.Module]:
        return [self.trainable]

    def loss(self, views: list[Tensor]) -> Tensor:
        z = [self.projector(self.encoder(v)) for v in views]
        return vicreg_loss([t.float() for t in z])

    def __call__(self, views: list[Tensor]) -> None:
        for group in self.opt.param_groups:
            group["lr"] = self.peak * self.schedule.factor(self.step)
        self.loss(views).backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1


class TwinfoldStep:
    """What twinfold's loop does per batch, minus data loading, logging and Fabric."""

    def __init__(self, method: SiameseMethod, cfg: RunConfig, schedule: LRSchedule) -> None:
        self.method, self.schedule, self.step = method, schedule, 0
        self.clip = cfg.optimizer.clip_grad_norm
        self.opt = build_optimizer(method.online_raw, cfg.optimizer, scale=1.0)

    def modules(self) -> list[nn.Module]:
        return [self.method.online_raw]

    def __call__(self, views: list[Tensor]) -> None:
        self.schedule.apply(self.opt, self.step)
        out = self.method.training_step(views)
        out.loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.method.online_raw.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.method.after_optimizer_step(self.step, self.schedule.total_steps)
        self.step += 1


def in_precision(run: Callable[[list[Tensor]], None], bf16: bool):
    def go(views: list[Tensor]) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            run(views)

    return go


def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each (step, precision) per repeat. Within a repeat each precision runs
    plain, twinfold, twinfold, plain (ABBA), so a drift in the machine's speed during the
    repeat slows both steps alike; each entry is the mean of the step's two runs."""
    torch.manual_seed(0)
    cfg = vit_config(args.depth, args.size, args.patch)
    schedule = LRSchedule(total_steps=1000, warmup_steps=10, final_lr_ratio=0.01)
    views = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(2)]
    method = build_method(cfg.method)
    plain, ours = PlainStep(method, cfg, schedule), TwinfoldStep(method, cfg, schedule)
    runs = {
        f"{name}, {prec}": in_precision(step, prec == "bf16")
        for prec in ("fp32", "bf16")
        for name, step in (("plain", plain), ("twinfold", ours))
    }
    for go in runs.values():  # warm-up (kernel selection, fused optimizer state)
        go(views)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for prec in ("fp32", "bf16"):
            pair = {name: 0.0 for name in (f"plain, {prec}", f"twinfold, {prec}")}
            for name in (*pair, *reversed(pair)):
                start = time.perf_counter()
                runs[name](views)
                pair[name] += (time.perf_counter() - start) / 2
            for name, seconds in pair.items():
                times[name].append(seconds)
    return times


def paired_ratios(times: dict[str, list[float]], prec: str) -> list[float]:
    """twinfold / plain within each repeat: the noise between repeats cancels out."""
    return [t / p for t, p in zip(times[f"twinfold, {prec}"], times[f"plain, {prec}"])]


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    times = measure(args)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; ViT {args.depth} x 192, {args.size} px views in {args.patch} px "
        f"patches, batch {args.batch} x 2 views, {args.repeats} repeats (ABBA)\n"
    )
    print(
        f"{'precision':<11}{'plain ms':>10}{'twinfold ms':>13}"
        f"{'twinfold / plain':>18}{'quartiles':>16}"
    )
    ratios = {}
    for prec in ("fp32", "bf16"):
        plain = statistics.median(times[f"plain, {prec}"])
        ours = statistics.median(times[f"twinfold, {prec}"])
        ratios[prec] = paired_ratios(times, prec)
        r = ratios[prec]
        low, _, high = statistics.quantiles(r, n=4) if len(r) > 1 else (r[0], r[0], r[0])
        print(
            f"{prec:<11}{plain * 1000:>10.0f}{ours * 1000:>13.0f}"
            f"{statistics.median(ratios[prec]):>17.3f}x{low:>9.3f}-{high:.3f}"
        )
    print("\ntwinfold / plain: the median of the per-repeat ratios (issue 14 target <= 1.03x)")
    return ratios


if __name__ == "__main__":
    main()
