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

The resolved values are written into the run's config (``config.yaml``), so a resumed run
on the same kind of hardware resolves to the same settings and one on other hardware is
refused with the changed keys named.
"""

from __future__ import annotations

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

    def describe(self) -> str:
        """One line for the run's output, e.g. ``bf16-mixed, channels_last`` plus why."""
        parts = [self.precision, "channels_last" if self.channels_last else "contiguous"]
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
    return FastSettings(device, precision, bool(channels_last), t.compile, tuple(reasons))


def with_fast_settings(cfg: RunConfig) -> tuple[RunConfig, FastSettings]:
    """``cfg`` with ``trainer.precision`` and ``trainer.channels_last`` resolved (what
    the run directory's ``config.yaml`` records), and the settings."""
    fast = resolve_fast_settings(cfg)
    trainer = cfg.trainer.model_copy(
        update={"precision": fast.precision, "channels_last": fast.channels_last}
    )
    return cfg.model_copy(update={"trainer": trainer}), fast



__all__ = [
    "FastSettings",
    "accelerator_type",
    "bf16_feature",
    "cpu_bf16_feature",
    "native_bf16",
    "resolve_fast_settings",
    "with_fast_settings",
]
