"""A run's checkpoint files and the collective save / load the loop calls.

Global rank 0 writes ``<run>/checkpoints/step-<N>.ckpt`` atomically
(:mod:`twinfold.atomic_files`); ``last.ckpt`` is then re-pointed (a hard link, replaced
atomically) at the newest file, and older files beyond ``run.keep_checkpoints`` are
deleted. A crash at any moment leaves the previous checkpoint complete and at most a
hidden temporary file, removed at the next start. What a checkpoint holds is
:mod:`twinfold.checkpoint_format`; whether a run continues one is decided before launch
(:mod:`twinfold.resume`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from twinfold.atomic_files import (
    TMP_PREFIX,
    atomic_link,
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
)
from twinfold.checkpoint_format import (
    CHECKSUM_SUFFIX,
    build_checkpoint,
    checksum_line,
    checksum_path,
    read_checkpoint,
    serialise,
)
from twinfold.config import RunConfig
from twinfold.errors import CheckpointError, NonFiniteLossError
from twinfold.registry import Registry
from twinfold.rng_state import gather_rng, restore_rank_rng, rng_state

if TYPE_CHECKING:
    from twinfold.method import TrainingMethod

LAST = "last.ckpt"
"""The name of the file that always holds the newest checkpoint."""
_STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")


class Checkpoints:
    """The checkpoint files of one run: ``step-<N>.ckpt`` (the newest ``keep``) and
    ``last.ckpt``, which holds the same bytes as the newest one."""

    def __init__(self, directory: Path, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory, self.keep = Path(directory), keep

    @property
    def last(self) -> Path:
        return self.directory / LAST

    def step_path(self, step: int) -> Path:
        return self.directory / f"step-{step:08d}.ckpt"

    def steps(self) -> list[tuple[int, Path]]:
        """``(step, path)`` of every step file, oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for p in self.directory.iterdir():
            if (m := _STEP_FILE.match(p.name)) and p.is_file():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        """The checkpoint to resume from: the newest step file, else ``last.ckpt``."""
        steps = self.steps()
        if steps:
            return steps[-1][1]
        return self.last if self.last.is_file() else None

    def temporaries(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(TMP_PREFIX))

    def orphan_checksums(self) -> list[Path]:
        """``.sha256`` files whose checkpoint is gone (a save killed between the two)."""
        if not self.directory.is_dir():
            return []
        sums = self.directory.glob(f"*.ckpt{CHECKSUM_SUFFIX}")
        return sorted(p for p in sums if not p.with_suffix("").is_file())

    def prepare(self, *, resuming: bool) -> None:
        """Before training (rank 0): remove temporary files and orphan checksums left by
        a killed save; when not resuming (a fresh or overwritten run), also the previous
        run's checkpoints."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doomed = self.temporaries() + self.orphan_checksums()
        if not resuming:
            doomed += [p for _, p in self.steps()] + ([self.last] if self.last.exists() else [])
            doomed += [checksum_path(p) for p in list(doomed)]
        for p in doomed:
            p.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def point_last_at(self, path: Path) -> None:
        """Make ``last.ckpt`` hold ``path`` (after a save killed between writing the step
        file and re-pointing ``last.ckpt``, the resumed run repairs it)."""
        if not (self.last.is_file() and os.path.samefile(self.last, path)):
            atomic_link(path, self.last)

    def write(self, obj: dict[str, Any], step: int) -> Path:
        """Write ``obj`` as the checkpoint of ``step`` (rank 0 only), its SHA-256 first
        (so a step file never exists without it); returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.step_path(step)
        data = serialise(obj)
        atomic_write_text(checksum_path(path), checksum_line(data, path.name))
        try:
            atomic_write_bytes(path, data)
        except BaseException:
            checksum_path(path).unlink(missing_ok=True)
            raise
        atomic_link(path, self.last)
        for _, old in self.steps()[: -self.keep]:
            old.unlink(missing_ok=True)
            checksum_path(old).unlink(missing_ok=True)
        fsync_dir(self.directory)
        return path


def first_non_finite(state: Mapping[str, Any], prefix: str = "") -> str | None:
    """The dotted name of the first floating-point tensor of a (nested) state mapping
    that holds an infinite or NaN value, or None."""
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found = first_non_finite(value, f"{name}.")
            if found is not None:
                return found
        elif isinstance(value, Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                return name
    return None


class Checkpointer:
    """The loop's handle on its checkpoints: collective saves and the load of the
    checkpoint chosen before launch.

    Call :meth:`epoch_started` right before iterating the loader each epoch: the data
    loader's generator state at that moment is what a mid-epoch resume restores, so the
    resumed epoch's workers get the seeds the uninterrupted epoch gave them."""

    def __init__(
        self,
        fabric: Any,
        directory: Path,
        cfg: RunConfig,
        registry: Registry,
        method: TrainingMethod,
        optimizer: Any,
        loader: Any,
        steps_per_epoch: int,
    ) -> None:
        self.fabric, self.cfg, self.registry = fabric, cfg, registry
        self.method, self.optimizer, self.steps_per_epoch = method, optimizer, steps_per_epoch
        self.generator: torch.Generator | None = getattr(loader, "generator", None)
        self.files = Checkpoints(directory, cfg.run.keep_checkpoints)
        self.saved_step: int | None = None
        self._epoch_state: Tensor | None = None
        if fabric.is_global_zero:
            self.files.prepare(resuming=bool(cfg.run.resume))
        fabric.barrier()

    def epoch_started(self) -> None:
        if self.generator is not None:
            self._epoch_state = self.generator.get_state()

    def load(self, path: Path) -> int:
        """Restore the method, optimizer and this rank's RNG states from ``path`` (the
        checkpoint :func:`twinfold.resume.decide_resume` chose and checked); its step."""
        state = read_checkpoint(path)
        try:
            self.method.load_state_dict(state)
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this model: {exc}. Start a new run or "
                "resume with the config it was written with."
            ) from None
        restore_rank_rng(state["rng"], self.fabric.global_rank, self.generator)
        if self.fabric.is_global_zero:
            self.files.point_last_at(path)
        self.saved_step = int(state["step"])
        return self.saved_step

    def save(self, step: int) -> Path | None:
        """Save ``step`` on every rank together (once per step). Collective: every
        rank's RNG states are gathered, rank 0 writes, and every rank learns whether the
        write succeeded (so a failed write raises everywhere, no hang). Weights with an
        infinite or NaN value are never written: :class:`NonFiniteLossError` on every
        rank (their weights are identical), naming the tensor."""
        if step == self.saved_step:
            return None
        method_state = self.method.state_dict()
        bad = first_non_finite(method_state)
        if bad is not None:
            raise NonFiniteLossError(
                f"the weights are not finite after step {step}: {bad} holds inf or NaN (an "
                f"optimizer step overflowed); no checkpoint was written for it, and "
                f"{self.describe_last()}. Lower optimizer.lr or check the data."
            )
        local = rng_state(None, self.fabric.device)
        loader_state = self._epoch_state
        at_epoch_end = step % self.steps_per_epoch == 0
        if self.generator is not None and (at_epoch_end or loader_state is None):
            loader_state = self.generator.get_state()
        if loader_state is not None:
            local["loader"] = loader_state
        rng = gather_rng(self.fabric, local)
        path = self.files.step_path(step)
        error = ""
        if self.fabric.is_global_zero:
            try:
                self.files.write(self._contents(step, method_state, rng), step)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
        error = self.fabric.broadcast(error, src=0)
        if error:
            raise CheckpointError(
                f"rank 0 could not write checkpoint {path}: {error}. The previous checkpoint "
                f"in {self.files.directory} is intact; free disk space or fix permissions "
                "and resume."
            )
        self.saved_step = step
        return path

    def _contents(
        self, step: int, method_state: dict[str, Any], rng: dict[str, Tensor]
    ) -> dict[str, Any]:
        return build_checkpoint(
            self.cfg,
            self.registry,
            step,
            self.fabric.world_size,
            method_state,
            self.optimizer,
            rng,
        )

    def describe_last(self) -> str:
        if self.saved_step is None:
            return f"no checkpoint was written yet in {self.files.directory}"
        return (
            f"the last checkpoint ({self.files.step_path(self.saved_step)}, step "
            f"{self.saved_step}) is intact"
        )


__all__ = ["LAST", "Checkpointer", "Checkpoints", "first_non_finite"]
