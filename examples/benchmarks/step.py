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

Two more rows, "lightly-built, fp32" and "lightly-built, bf16 + channels_last", are the
step as a lightly user writes it: a deep copy of the same backbone with lightly's own heads
(``lightly.models.modules``, sized like the small presets' heads as far as their
constructors allow; the dims are printed), lightly's losses (``lightly.loss``), lightly's
EMA helpers for BYOL's target and the preset's kind of optimizer (torch SGD or
``lightly.utils.lars.LARS``); the second with the same two switches twinfold's fast path
turns on, as a competent lightly user would. The column "vs lightly" divides each row by
the lightly row of the same precision (fp32 rows by lightly fp32, bf16 rows by lightly
bf16): the like-for-like ratio. They are skipped when lightly is not importable
(``pip install -e core[benchmarks]``).

    python examples/benchmarks/step.py                 # ~4 minutes on 2 CPU cores
    python examples/benchmarks/step.py --methods vicreg --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

import twinfold
from twinfold.config import RunConfig
from twinfold.config.models import OptimizerConfig
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
        # Barlow Twins' lambda as the preset sets it (the small preset's 0.08, the paper's 0.0051)
        self.lam = float(getattr(getattr(method.loss, "cfg", None), "lambda_", 0.0051))
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
            loss = barlow_loss([t.float() for t in z], self.lam)
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


# ---------------------------------------------------------------- lightly-built step
LIGHTLY_MISSING = "lightly not importable (pip install -e core[benchmarks])"


def lightly_version() -> str | None:
    """The installed lightly version, or None when it is not importable."""
    try:
        import lightly
    except ImportError:
        return None
    return str(lightly.__version__)


def _equal_widths(hidden: list[int], count: int | None, what: str) -> int:
    """The one hidden width lightly's head constructors take; ValueError when ``hidden``
    (twinfold's per-layer widths) cannot be expressed with it."""
    if not hidden or len(set(hidden)) != 1 or (count is not None and len(hidden) != count):
        need = f"{count} equal" if count is not None else "equal"
        raise ValueError(f"lightly's {what} takes {need} hidden widths; the preset has {hidden}")
    return hidden[0]


def lightly_heads(
    kind: str, cfg: RunConfig, in_dim: int
) -> tuple[nn.Module, nn.Module | None, str]:
    """lightly's projector (and predictor) for ``kind``, sized like ``cfg``'s heads, and a
    line describing them. lightly's hidden linear layers have no bias (a BN follows) and
    its output layers have one, except SimSiam's projector (BN without affine)."""
    from lightly.models.modules import heads as lm

    proj, pred = cfg.method.projector, cfg.method.predictor
    hidden, out = list(getattr(proj, "hidden_dims", [])), int(getattr(proj, "out_dim", 0))
    predictor: nn.Module | None = None
    with_predictor = {  # projector class, its hidden layers, predictor class
        "byol": (lm.BYOLProjectionHead, 1, lm.BYOLPredictionHead),
        "simsiam": (lm.SimSiamProjectionHead, 2, lm.SimSiamPredictionHead),
    }
    if kind in with_predictor:
        proj_cls, layers, pred_cls = with_predictor[kind]
        h = _equal_widths(hidden, layers, proj_cls.__name__)
        projector: nn.Module = proj_cls(in_dim, h, out)
        assert pred is not None
        ph = _equal_widths(list(pred.hidden_dims), 1, pred_cls.__name__)
        predictor = pred_cls(out, ph, pred.out_dim)
        dims = (
            f"{proj_cls.__name__}({in_dim}, {h}, {out}), "
            f"{pred_cls.__name__}({out}, {ph}, {pred.out_dim})"
        )
    elif kind == "barlow-twins":
        h = _equal_widths(hidden, 2, "BarlowTwinsProjectionHead")
        projector = lm.BarlowTwinsProjectionHead(in_dim, h, out)
        dims = f"BarlowTwinsProjectionHead({in_dim}, {h}, {out})"
    elif kind == "vicreg":
        h = _equal_widths(hidden, None, "VICRegProjectionHead")
        layers = len(hidden) + 1
        projector = lm.VICRegProjectionHead(in_dim, h, out, num_layers=layers)
        dims = f"VICRegProjectionHead({in_dim}, {h}, {out}, num_layers={layers})"
    else:
        raise ValueError(f"unknown method {kind!r}")
    return projector, predictor, dims


def lightly_criterion(kind: str, cfg: RunConfig) -> Callable[[list[Tensor], list[Tensor]], Tensor]:
    """The loss of ``kind`` from lightly's loss modules, on the heads' outputs ``p``
    (predictions; the projections for Barlow Twins and VICReg) and ``z`` (target
    projections, or the online ones), configured with ``cfg.method.loss``'s coefficients:

    - BYOL (Grill et al. 2020, eq. 2 summed over both directions, eq. 4):
      ``2 - 2 cos = 2 + 2 ncs`` with lightly's ``NegativeCosineSimilarity`` ``ncs = -mean
      cos``, so ``4 + 2 (ncs(p1, z2) + ncs(p2, z1))``; lightly's examples use ``0.5 (ncs +
      ncs)``, a loss 1/4 as steep, which changes the effective learning rate;
    - SimSiam (Chen & He 2021, eq. 2 with the stop-gradient):
      ``0.5 (ncs(p1, sg(z2)) + ncs(p2, sg(z1)))``;
    - Barlow Twins (Zbontar et al. 2021, eq. 1): ``BarlowTwinsLoss(lambda_param=lambda_)``;
    - VICReg (Bardes et al. 2022, eq. 6): ``VICRegLoss(sim, std, cov coefficients, eps)``,
      whose variance term is the authors' code convention (``variance_convention="code"``).
    """
    from lightly import loss as ll

    loss_cfg: Any = cfg.method.loss
    if kind in {"byol", "simsiam"}:
        ncs = ll.NegativeCosineSimilarity()
        if kind == "byol":
            return lambda p, z: 4 + 2 * (ncs(p[0], z[1]) + ncs(p[1], z[0]))
        return lambda p, z: 0.5 * (ncs(p[0], z[1].detach()) + ncs(p[1], z[0].detach()))
    if kind == "barlow-twins":
        if not loss_cfg.normalize:
            raise ValueError("lightly's BarlowTwinsLoss always batch-normalises")
        barlow = ll.BarlowTwinsLoss(lambda_param=loss_cfg.lambda_)
        return lambda p, z: barlow(p[0], p[1])
    if kind == "vicreg":
        if loss_cfg.variance_convention != "code" or loss_cfg.gamma != 1.0:
            raise ValueError("lightly's VICRegLoss has gamma 1 and the code's variance term")
        vicreg = ll.VICRegLoss(
            lambda_param=loss_cfg.sim_coeff,
            mu_param=loss_cfg.std_coeff,
            nu_param=loss_cfg.cov_coeff,
            eps=loss_cfg.eps,
        )
        return lambda p, z: vicreg(p[0], p[1])
    raise ValueError(f"unknown method {kind!r}")


def lightly_optimizer(
    modules: list[nn.Module], cfg: OptimizerConfig, lr: float
) -> tuple[torch.optim.Optimizer, str]:
    """The preset's kind of optimizer, built as a lightly user would: torch's SGD (or
    AdamW), or ``lightly.utils.lars.LARS``; with ``exclude_bias_and_norm`` the 1-D
    parameters (biases, norms) get weight decay 0, which lightly's LARS also takes as
    "no trust-ratio adaptation". Returns the optimizer and its description."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    if cfg.exclude_bias_and_norm:
        groups: list[dict[str, Any]] = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
    if cfg.name == "lars":
        from lightly.utils.lars import LARS

        opt: torch.optim.Optimizer = LARS(
            groups, lr=lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient
        )
        what = f"lightly LARS(momentum {cfg.momentum}, trust {cfg.trust_coefficient})"
    elif cfg.name == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
        what = f"torch SGD(momentum {cfg.momentum})"
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=cfg.betas)
        what = "torch AdamW"
    excluded = ", biases/norms without" if cfg.exclude_bias_and_norm else ""
    return opt, f"{what}, weight decay {cfg.weight_decay}{excluded}"


class LightlyStep:
    """The step built from lightly's parts on a deep copy of ``method``'s backbone:
    lightly heads (:func:`lightly_heads`), loss (:func:`lightly_criterion`), optimizer
    (:func:`lightly_optimizer`) and, for BYOL, a target made with
    ``deactivate_requires_grad`` and updated with ``update_momentum`` at
    ``cosine_schedule(step, total, tau_base, 1)`` (Grill et al. 2020, sec. 3.2)."""

    def __init__(
        self, method: SiameseMethod, kind: str, cfg: RunConfig, lr: float, total_steps: int = 1000
    ) -> None:
        from lightly.models.utils import deactivate_requires_grad

        self.kind, self.total_steps, self.step = kind, total_steps, 0
        self.backbone = copy.deepcopy(method.online_raw.encoder)
        in_dim = int(self.backbone.out_dim)  # twinfold encoders expose out_dim
        self.projector, self.predictor, heads = lightly_heads(kind, cfg, in_dim)
        self.criterion = lightly_criterion(kind, cfg)
        online = [self.backbone, self.projector, *([self.predictor] if self.predictor else [])]
        self.trainable = nn.ModuleList(online)
        self.opt, optimizer = lightly_optimizer(online, cfg.optimizer, lr)
        self.target: nn.ModuleList | None = None
        self.tau_base = float(getattr(cfg.method.target, "tau_base", 0.99))
        if kind == "byol":
            self.target = copy.deepcopy(nn.ModuleList([self.backbone, self.projector]))
            deactivate_requires_grad(self.target)
        self.description = f"{heads}; {optimizer}"

    def modules(self) -> list[nn.Module]:
        return [m for m in (self.trainable, self.target) if m is not None]

    def loss(self, views: list[Tensor]) -> Tensor:
        z = [self.projector(self.backbone(v)) for v in views]
        p = [self.predictor(t) for t in z] if self.predictor is not None else z
        if self.target is not None:
            with torch.no_grad():
                z = [self.target[1](self.target[0](v)) for v in views]
        return self.criterion([t.float() for t in p], [t.float() for t in z])

    def __call__(self, views: list[Tensor]) -> None:
        from lightly.models.utils import update_momentum
        from lightly.utils.scheduler import cosine_schedule

        self.loss(views).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.target is not None:
            tau = cosine_schedule(self.step, self.total_steps, self.tau_base, 1.0)
            update_momentum(self.backbone, self.target[0], m=tau)
            update_momentum(self.projector, self.target[1], m=tau)
        self.step += 1


# ---------------------------------------------------------------- measuring
def variant(
    run: Callable[[list[Tensor]], None],
    modules: list[nn.Module],
    fast: bool,
    device_type: str = "cpu",
):
    """A closure running one step in float32, or in bf16 autocast with channels_last,
    on ``device_type`` (where the modules and views already are)."""
    fmt = torch.channels_last if fast else torch.contiguous_format
    for m in modules:
        m.to(memory_format=fmt)

    def go(views: list[Tensor]) -> None:
        views = [v.contiguous(memory_format=fmt) for v in views]
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=fast):
            run(views)

    return go


def synchronize(device: torch.device | str) -> None:
    """Wait for the queued work of ``device`` (a CUDA device; nothing on a CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def gemm_peak(
    dtype: torch.dtype, n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu"
) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` on ``device`` (median of ``repeats``,
    after one warm-up)."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        t = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def step_flops(go: Callable[[list[Tensor]], None], views: list[Tensor]) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        go(views)
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    parser.add_argument(
        "--lightly-optimizer",
        choices=["preset", "sgd"],
        default="preset",
        help="optimizer of the lightly row: the preset's kind (lightly LARS for BYOL, Barlow "
        "Twins and VICReg, torch SGD for SimSiam), or torch SGD(momentum 0.9) like the "
        "other rows (strictly like for like)",
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
    lightly = lightly_version()
    header = (
        f"{'method':<13}{'step':<31}{'ms':>8}{'vs plain fp32':>15}{'vs lightly':>12}"
        f"{'GFLOP':>8}{'MFU':>7}"
    )
    print(header + "\n" + "-" * len(header))
    notes: list[str] = []
    fast_name, lightly_name = "twinfold, bf16 + channels_last", "lightly-built, fp32"
    lightly_fast = "lightly-built, bf16 + channels_last"
    for kind in args.methods:
        method = {"encoder": RESNET18} if args.encoder == "resnet18" else {}
        cfg = twinfold.load_config({"preset": PRESETS[kind], "method": method})
        lr = 0.01
        views = [torch.randn(args.batch, 3, args.size, args.size) for _ in range(2)]
        tw = TwinfoldStep(build_method(cfg.method), lr)
        plain = PlainStep(tw.method, kind, lr)
        runs: dict[str, tuple[Any, bool, float]] = {
            "plain PyTorch, fp32": (plain, False, peak32),
            "twinfold, fp32": (tw, False, peak32),
            fast_name: (tw, True, peak16),
        }
        if lightly is not None:
            if args.lightly_optimizer == "sgd":
                like_others = OptimizerConfig(
                    name="sgd", momentum=0.9, weight_decay=0.0, exclude_bias_and_norm=False
                )
                cfg = cfg.model_copy(update={"optimizer": like_others})
            built = LightlyStep(tw.method, kind, cfg, lr)
            runs[lightly_name] = (built, False, peak32)
            runs[lightly_fast] = (built, True, peak16)
            notes.append(f"{kind}: {built.description}")
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
        medians = {name: statistics.median(t) for name, t in times.items()}
        base, ref = medians["plain PyTorch, fp32"], medians.get(lightly_name)
        for name, (_, fast, peak) in runs.items():
            sec = medians[name]
            mfu = flops[name] / sec / peak
            same = medians.get(lightly_fast if fast else lightly_name)
            vs_lightly = f"{sec / same:>11.2f}x" if same is not None else f"{'':>12}"
            print(
                f"{kind:<13}{name:<31}{sec * 1000:>8.0f}{sec / base:>14.2f}x{vs_lightly}"
                f"{flops[name] / 1e9:>8.1f}{100 * mfu:>6.0f}%"
            )
        if ref is None:
            print(f"{kind:<13}{'lightly-built rows':<31}{'skipped':>8}  {LIGHTLY_MISSING}")
        else:
            fast = medians[fast_name]
            notes.append(
                f"{kind}: twinfold bf16 / lightly bf16 = {fast / medians[lightly_fast]:.2f}x "
                f"(like for like); twinfold bf16 / lightly fp32 = {fast / ref:.2f}x "
                "(issue 4's ratio, switches on one side only)"
            )
    print("\nMFU: the step's counted FLOPs per second over the GEMM peak of its precision.")
    print("plain and twinfold rows: torch SGD(momentum 0.9), lr 0.01, no weight decay.")
    if notes:
        print(f"lightly {lightly} rows (heads, optimizer; ratios):")
        print("\n".join(f"  {line}" for line in notes))


if __name__ == "__main__":
    main()
