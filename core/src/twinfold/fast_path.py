"""The fastest numerically safe step settings for the hardware a run starts on.

``trainer.precision: auto`` becomes ``bf16-mixed`` where the device multiplies bfloat16
natively (CUDA GPUs of compute capability 8.0 and up; x86 CPUs with AMX-BF16 or
AVX512-BF16; Arm CPUs with the BF16 extension), else ``32-true``. bf16 autocast keeps
float32 master weights and optimizer state, and twinfold's losses always run in float32
(:mod:`twinfold.method`), so the only reduced-precision arithmetic is inside the
network's matrix products and convolutions. float16 (which needs loss scaling) is never
chosen automatically.

``trainer.channels_last: auto`` follows the precision: on for 16-bit mixed precision,
where oneDNN and cuDNN run convolutions fastest in NHWC (on the development CPU a
32 px step in bf16 takes 0.34x the float32 time with channels_last and 4x without, see
``docs/benchmarks.md``), off in float32.

``trainer.matmul_precision: auto`` is ``high`` on CUDA (float32 matrix products and
convolutions on TF32 tensor cores: a 10-bit mantissa in the products, float32
accumulation; 4-8x the float32 rate on Ampere and Hopper) and ``highest`` elsewhere (on a
CPU, ``high`` would let oneDNN round float32 products to bf16). On CUDA the cuDNN
convolutions follow the same choice (``highest``: no TF32 in convolutions either; torch's
own default allows it there). Under bf16 autocast the networks' products run in bf16
anyway; the setting matters for float32 runs and for the float32 parts of mixed runs.

On CUDA, cuDNN autotunes its convolution algorithms for the run's fixed input sizes
(``cudnn.benchmark``), the training loader pins its batches in page-locked memory and
the copies to the device are asynchronous (:func:`backend_settings`). ``data.num_workers:
auto`` gives each process the CPUs of its node, one kept for the process itself, at most
:data:`MAX_AUTO_WORKERS`, on CUDA, and 0 workers on a CPU, whose cores run the step
(:func:`loader_workers`).

The resolved values are written into the run's config (``config.yaml``), so a resumed run
on the same kind of hardware resolves to the same settings and one on other hardware is
refused with the changed keys named.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from twinfold.config import RunConfig

AUTO = "auto"
SIXTEEN_BIT = ("bf16", "16")
"""Precision prefixes of Fabric's 16-bit settings (``bf16-mixed``, ``16-mixed``, ...)."""


@dataclass  # not frozen: Fabric's spawn launcher copies the launch arguments field by field
class FastSettings:
    """What a run uses, and why (``reasons`` has one entry per resolved ``auto``)."""

    accelerator: str
    precision: str
    channels_last: bool
    compile: bool
    reasons: tuple[str, ...] = ()
    matmul_precision: str = "highest"

    def describe(self) -> str:
        """One line for the run's output, e.g. ``bf16-mixed, channels_last`` plus why."""
        parts = [self.precision, "channels_last" if self.channels_last else "contiguous"]
        if self.matmul_precision != "highest":
            parts.append(f"float32 matmul {self.matmul_precision} (TF32)")
        if self.compile:
            parts.append("torch.compile")
        why = f" ({'; '.join(self.reasons)})" if self.reasons else ""
        return ", ".join(parts) + why


def accelerator_type(accelerator: str) -> str:
    """The device type Fabric picks for ``trainer.accelerator`` ('auto' and 'gpu' as
    Fabric resolves them: CUDA, then Apple MPS, then the CPU)."""
    if accelerator in {AUTO, "gpu"}:
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return "mps"
        return "cpu" if accelerator == AUTO else "cuda"
    return accelerator


BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16")
"""CPU feature flags for native bfloat16 dot products: Intel AMX and AVX512-BF16 (x86,
as ``/proc/cpuinfo`` names them), the Armv8.6 BF16 extension (aarch64)."""


def bf16_feature(cpuinfo: str) -> str | None:
    """The first of :data:`BF16_FEATURES` among the ``flags`` (x86) or ``Features``
    (Arm) lines of a ``/proc/cpuinfo`` text, or None."""
    words: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.lower().startswith(("flags", "features")):
            words.update(line.split(":", 1)[-1].split())
    return next((f for f in BF16_FEATURES if f in words), None)


@cache
def cpu_bf16_feature() -> str | None:
    """This machine's CPU feature for native bfloat16 dot products, or None (unknown
    counts as absent): ``/proc/cpuinfo`` on Linux, ``sysctl`` on Apple silicon."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return bf16_feature(cpuinfo.read_text(errors="replace"))
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
        except OSError:
            return None
        return "bf16" if out == "1" else None
    return None


def native_bf16(device_type: str) -> tuple[bool, str]:
    """Whether ``device_type`` multiplies bfloat16 natively, and the evidence."""
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA device visible"
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        return major >= 8, f"{name}, compute capability {major}.{minor}"
    if device_type == "cpu":
        feature = cpu_bf16_feature()
        if feature is None:
            return False, "the CPU has no native bf16 dot products"
        return True, f"the CPU has {feature}"
    return False, f"bf16 is not chosen automatically on {device_type}"


def is_sixteen_bit(precision: str) -> bool:
    return precision.startswith(SIXTEEN_BIT)


def resolve_fast_settings(cfg: RunConfig) -> FastSettings:
    """``cfg``'s step settings with every ``auto`` resolved for this machine."""
    t = cfg.trainer
    device = accelerator_type(t.accelerator)
    reasons: list[str] = []
    precision = t.precision
    if precision == AUTO:
        native, evidence = native_bf16(device)
        precision = "bf16-mixed" if native else "32-true"
        reasons.append(f"precision auto: {evidence}")
    channels_last = t.channels_last
    if channels_last == AUTO:
        channels_last = is_sixteen_bit(precision) and device in {"cpu", "cuda"}
        reasons.append(f"channels_last auto: {'on' if channels_last else 'off'} for {precision}")
    matmul = t.matmul_precision
    if matmul == AUTO:
        matmul = matmul_precision_for(device)
        reasons.append(f"matmul_precision auto: {matmul} on {device}")
    return FastSettings(
        device, precision, bool(channels_last), t.compile, tuple(reasons), matmul
    )


def matmul_precision_for(device_type: str) -> str:
    """``trainer.matmul_precision: auto``: ``high`` (TF32) on CUDA, ``highest`` elsewhere."""
    return "high" if device_type == "cuda" else "highest"


def with_fast_settings(cfg: RunConfig) -> tuple[RunConfig, FastSettings]:
    """``cfg`` with ``trainer.precision``, ``trainer.channels_last`` and
    ``trainer.matmul_precision`` resolved (what the run directory's ``config.yaml``
    records), and the settings."""
    fast = resolve_fast_settings(cfg)
    trainer = cfg.trainer.model_copy(
        update={
            "precision": fast.precision,
            "channels_last": fast.channels_last,
            "matmul_precision": fast.matmul_precision,
        }
    )
    return cfg.model_copy(update={"trainer": trainer}), fast


MAX_AUTO_WORKERS = 16
"""The most data-loader workers ``data.num_workers: auto`` gives one process: enough to
decode and crop ImageNet-sized JPEGs for a ResNet-50 step on one GPU (the views are made
on the device); more cost memory and start-up time per epoch."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def loader_workers(
    setting: int | str, device_type: str, processes_per_node: int, cpus: int
) -> tuple[int, str]:
    """``data.num_workers`` resolved, and why. ``auto``: on CUDA, the node's ``cpus``
    shared by its training processes, one per process kept for the process itself, at
    most :data:`MAX_AUTO_WORKERS`; elsewhere 0 (on a CPU the step uses every core)."""
    if setting != AUTO:
        return int(setting), ""
    if device_type != "cuda":
        return 0, f"num_workers auto: 0 on {device_type} (the step uses the cores)"
    share = cpus // max(processes_per_node, 1)
    workers = max(0, min(share - 1, MAX_AUTO_WORKERS))
    why = f"num_workers auto: {workers} ({cpus} CPUs, {processes_per_node} processes per node)"
    return workers, why


def with_loader_workers(
    cfg: RunConfig, device_type: str, processes_per_node: int
) -> tuple[RunConfig, str]:
    """``cfg`` with ``data.num_workers`` resolved for this node (what ``config.yaml``
    records), and why ('' when it was a number)."""
    workers, why = loader_workers(
        cfg.data.num_workers, device_type, processes_per_node, usable_cpus()
    )
    data = cfg.data.model_copy(update={"num_workers": workers})
    return cfg.model_copy(update={"data": data}), why


@dataclass(frozen=True)
class BackendSettings:
    """Process-wide torch settings of a run's device (:func:`apply_backend_settings`)
    and how its batches travel there."""

    device_type: str
    matmul_precision: str
    """``torch.set_float32_matmul_precision``: ``highest``, ``high`` or ``medium``."""
    cudnn_benchmark: bool
    """Autotune cuDNN's convolution algorithms per input shape (CUDA: fixed sizes)."""
    cudnn_tf32: bool | None
    """TF32 in cuDNN's float32 convolutions (None: not set, off CUDA)."""
    pin_memory: bool
    """The training loader puts its batches in page-locked memory."""
    non_blocking: bool
    """Host-to-device copies return at once (overlap with the running step)."""


def backend_settings(device_type: str, matmul_precision: str) -> BackendSettings:
    """The settings for a run on ``device_type`` with a resolved ``matmul_precision``:
    cuDNN autotuning, TF32 convolutions exactly when float32 matmuls may use TF32, pinned
    batches and asynchronous copies on CUDA; nothing but the matmul precision elsewhere."""
    if matmul_precision not in {"highest", "high", "medium"}:
        raise ValueError(f"resolve trainer.matmul_precision first, got {matmul_precision!r}")
    cuda = device_type == "cuda"
    tf32 = matmul_precision != "highest" if cuda else None
    return BackendSettings(device_type, matmul_precision, cuda, tf32, cuda, cuda)


def apply_backend_settings(settings: BackendSettings) -> None:
    """Set torch's process-wide flags of ``settings`` (CPU runs: the matmul precision
    only; the cuDNN flags are left alone)."""
    torch.set_float32_matmul_precision(settings.matmul_precision)
    if settings.device_type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cudnn.allow_tf32 = bool(settings.cudnn_tf32)



__all__ = [
    "MAX_AUTO_WORKERS",
    "BackendSettings",
    "FastSettings",
    "accelerator_type",
    "apply_backend_settings",
    "backend_settings",
    "bf16_feature",
    "cpu_bf16_feature",
    "loader_workers",
    "matmul_precision_for",
    "native_bf16",
    "resolve_fast_settings",
    "with_fast_settings",
    "with_loader_workers",
]
