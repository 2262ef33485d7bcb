"""Checkpoints: durable atomic writes, the newest N kept, weights-only reads.

A checkpoint is a plain mapping of tensors and plain values (``torch.load(...,
weights_only=True)`` reads it): the step, the run config as a JSON string, the
components as registry names, the online / target / optimizer state dicts and the random
number generator states of every rank. It is written by global rank 0 into
``<run>/checkpoints/step-<N>.ckpt`` through a temporary file in the same directory
(fsync of the file, rename, fsync of the directory); ``last.ckpt`` is then re-pointed (a
hard link, replaced atomically) at the newest file, and older files beyond
``run.keep_checkpoints`` are deleted. A crash at any moment leaves the previous
checkpoint complete and at most a hidden temporary file, removed at the next start.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from twinfold.config import RunConfig
from twinfold.errors import CheckpointError, UnknownComponentError

FORMAT = "twinfold-checkpoint/1"
LAST = "last.ckpt"
_STEP_FILE = re.compile(r"^step-(\d+)\.ckpt$")
_TMP_PREFIX = ".tmp-"

COMPONENT_SLOTS = {
    "encoder": "encoder",
    "projector": "head",
    "predictor": "head",
    "target": "target",
    "loss": "loss",
    "views": "augmentation",
}
"""Method config slot -> registry kind."""

MAY_CHANGE_ON_RESUME = (
    "preset",  # the resolved config is compared, not the preset's name
    "run.name",
    "run.output_dir",
    "run.resume",
    "run.overwrite",
    "run.force_resume",
    "run.keep_checkpoints",
    "run.checkpoint_every",
    "run.tensorboard",
    "run.plots",
    "trainer.stop_after",
    "trainer.log_every",
    "trainer.progress_bar",
    "trainer.collective_timeout_s",
    "data.num_workers",
    "evaluation",
)
"""Config keys (and key prefixes) that may differ between a checkpoint and the run that
resumes it: they decide where, how often and how verbosely, never what is computed."""


# ----------------------------------------------------------------------- files
def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (no-op where directories can't sync)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename over ``path``,
    fsync the directory. On any failure the temporary file is removed and ``path`` is
    left as it was."""
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _atomic_link(source: Path, link: Path) -> None:
    """Point ``link`` at ``source``'s content atomically: a hard link where the file
    system has them, else an atomic copy."""
    tmp = link.with_name(f"{_TMP_PREFIX}{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(link.parent)


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
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(_TMP_PREFIX))

    def prepare(self, *, resuming: bool) -> None:
        """Before training (rank 0): remove temporary files left by a killed save; when
        not resuming (a fresh or overwritten run), also the previous run's checkpoints."""
        self.directory.mkdir(parents=True, exist_ok=True)
        doomed = self.temporaries()
        if not resuming:
            doomed += [p for _, p in self.steps()] + ([self.last] if self.last.exists() else [])
        for p in doomed:
            p.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def write(self, obj: dict[str, Any], step: int) -> Path:
        """Write ``obj`` as the checkpoint of ``step`` (rank 0 only); returns its path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.step_path(step)
        atomic_save(obj, path)
        _atomic_link(path, self.last)
        for _, old in self.steps()[: -self.keep]:
            old.unlink(missing_ok=True)
        fsync_dir(self.directory)
        return path


# ----------------------------------------------------------------------- random state
def rng_state(loader_generator: torch.Generator | None, device: torch.device) -> dict[str, Tensor]:
    """This process's generator states as tensors: torch (CPU and the current CUDA
    device), numpy, Python ``random`` and the data loader's private generator (whose
    draws seed the data-loader workers)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    assert kind == "MT19937"
    version, py_state, py_gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state(),
        "numpy": torch.tensor([*keys.tolist(), pos, has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor([gauss], dtype=torch.float64),
        "python": torch.tensor([version, *py_state], dtype=torch.int64),
        "python_gauss": torch.tensor(  # [has a cached value, the value]
            [0.0, 0.0] if py_gauss is None else [1.0, py_gauss], dtype=torch.float64
        ),
    }
    if loader_generator is not None:
        out["loader"] = loader_generator.get_state()
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Tensor], loader_generator: torch.Generator | None) -> None:
    """Restore what :func:`rng_state` captured (one rank's row)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    np_vals = state["numpy"].tolist()
    gauss = float(state["numpy_gauss"][0])
    np.random.set_state(
        ("MT19937", np.array(np_vals[:624], dtype=np.uint32), np_vals[624], np_vals[625], gauss)
    )
    py = state["python"].tolist()
    has_gauss, py_gauss = state["python_gauss"].tolist()
    random.setstate((py[0], tuple(py[1:]), py_gauss if has_gauss else None))
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"].to(torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8).cpu())


def gather_rng(fabric: Any, local: dict[str, Tensor]) -> dict[str, Tensor]:
    """Every rank's :func:`rng_state`, stacked ``[world, ...]`` (a collective)."""
    from twinfold.stopping import gather_ranks

    return {k: gather_ranks(v.to(fabric.device)).cpu() for k, v in local.items()}


# ----------------------------------------------------------------------- contents
def _unwrap(module: nn.Module) -> nn.Module:
    """The module inside Fabric's wrapper (its state dict has no wrapper prefixes)."""
    return getattr(module, "_original_module", module)


def components(cfg: RunConfig, registry: Any) -> dict[str, dict[str, str]]:
    """Each component slot of the method as registry names: kind, name, plugin and
    distribution (never an import path)."""
    out = {}
    for slot, kind in COMPONENT_SLOTS.items():
        comp = getattr(cfg.method, slot, None)
        if comp is None:
            continue
        rec = registry.get(kind, comp.name)
        out[slot] = {
            "kind": kind,
            "name": comp.name,
            "plugin": rec.plugin,
            "distribution": rec.distribution,
        }
    return out


def build_checkpoint(
    cfg: RunConfig,
    registry: Any,
    step: int,
    world_size: int,
    online: nn.Module,
    target: nn.Module | None,
    optimizer: Any,
    rng: dict[str, Tensor],
) -> dict[str, Any]:
    """The checkpoint mapping (tensors and plain values only)."""
    import twinfold

    state: dict[str, Any] = {
        "format": FORMAT,
        "twinfold_version": twinfold.__version__,
        "step": int(step),
        "world_size": int(world_size),
        "config": cfg.model_dump_json(),
        "components": components(cfg, registry),
        "online": _unwrap(online).state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng,
    }
    if target is not None:
        state["target"] = target.state_dict()
    return state


_PLAIN = (str, int, float, bool, type(None), torch.Size, torch.dtype, torch.device)


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, (Tensor, *_PLAIN)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise CheckpointError(f"{where} has a key of type {type(k).__name__}")
            _check_plain(v, f"{where}.{k}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(f"{where} holds a {type(value).__name__}, not a tensor or plain value")


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a twinfold checkpoint with torch's weights-only unpickler (nothing in the
    file is imported or called) and check its structure. Raises
    :class:`CheckpointError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with path.open("rb") as file:
        pickled = file.read(1) == b"\x80"  # a bare pickle (protocol 2+), checked below
    if not (pickled or zipfile.is_zipfile(path)):
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is neither a torch.save archive nor a "
            "pickle. The file is damaged or not a checkpoint (a truncated write?); resume from an "
            "older step-*.ckpt in the same folder (delete the newer ones) or start a new run."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:
        text = str(exc).strip().splitlines()
        reason = next((ln for ln in text if "unsupported" in ln.lower()), text[0] if text else "")
        if "Weights only load failed" in str(exc) or "unsupported" in reason.lower():
            raise CheckpointError(
                f"refused checkpoint {path}: it holds pickled objects other than tensors and "
                f"plain values ({reason.strip()}). twinfold never runs code from a "
                "checkpoint; use only checkpoints written by twinfold from a trusted source."
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(exc).__name__}: {reason}. The file is "
            "damaged or not a checkpoint; resume from an older step-*.ckpt in the same "
            "folder (delete the newer ones) or start a new run."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a {FORMAT} file (format: {found!r}); it was written by another "
            "program or an older twinfold. Start a new run."
        )
    problems = []
    for key, kind in (
        ("step", int),
        ("world_size", int),
        ("config", str),
        ("online", dict),
        ("optimizer", dict),
        ("rng", dict),
        ("components", dict),
    ):
        if not isinstance(state.get(key), kind):
            problems.append(f"'{key}' should be a {kind.__name__}")
    if problems:
        raise CheckpointError(f"checkpoint {path} is malformed: {'; '.join(problems)}")
    _check_plain(state, "checkpoint")
    try:
        json.loads(state["config"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable config: {exc}") from None
    return state


def check_components(state: dict[str, Any], registry: Any, path: Path) -> None:
    """Every component the checkpoint names must be registered (looked up by name,
    never imported from the file)."""
    for slot, entry in state["components"].items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in ("kind", "name")
        ):
            raise CheckpointError(f"checkpoint {path}: component '{slot}' is malformed")
        try:
            registry.get(entry["kind"], entry["name"])
        except UnknownComponentError as exc:
            dist = entry.get("distribution", "?")
            raise CheckpointError(
                f"checkpoint {path} needs {entry['kind']} '{entry['name']}' (plugin "
                f"'{entry.get('plugin', '?')}' from distribution '{dist}'), which is not "
                f"installed or is blocked: {exc} Install '{dist}' or start a new run."
            ) from None


def _diff(a: Any, b: Any, prefix: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    return [] if a == b else [prefix]


def _may_change(key: str, allowed: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


def _with_current_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """The saved config re-validated by this version, so a key added since (absent from
    the file) counts as its default (an ``auto`` step setting as resolved here) rather
    than as a change; unchanged if it no longer validates (the raw difference is then
    reported)."""
    from twinfold.config import load_config
    from twinfold.fast_path import with_fast_settings

    try:
        resolved, _ = with_fast_settings(load_config(saved))  # 'auto' as this machine has it
        return json.loads(resolved.model_dump_json())
    except Exception:
        return saved


def config_changes(saved_json: str, cfg: RunConfig) -> list[str]:
    """Dotted keys whose value differs between the checkpoint's config and ``cfg``,
    without those in :data:`MAY_CHANGE_ON_RESUME`."""
    from twinfold.fast_path import with_fast_settings

    saved = _with_current_defaults(json.loads(saved_json))
    now = json.loads(with_fast_settings(cfg)[0].model_dump_json())
    return [k for k in _diff(saved, now, "") if not _may_change(k, MAY_CHANGE_ON_RESUME)]


def check_resume(path: Path, cfg: RunConfig, registry: Any) -> dict[str, Any]:
    """Read ``path`` and check that ``cfg`` may continue it: known components and no
    config change beyond :data:`MAY_CHANGE_ON_RESUME` unless ``run.force_resume``."""
    state = read_checkpoint(path)
    check_components(state, registry, path)
    changed = config_changes(state["config"], cfg)
    if changed and not cfg.run.force_resume:
        raise CheckpointError(
            f"checkpoint {path} (step {state['step']}) was written with another config; "
            f"changed: {', '.join(changed)}. Restore those values, start a new run, or set "
            "run.force_resume=true to continue anyway (the result then differs from an "
            "uninterrupted run)."
        )
    return state


# ----------------------------------------------------------------------- save / load
def save(
    fabric: Any,
    checkpoints: Checkpoints,
    cfg: RunConfig,
    registry: Any,
    step: int,
    online: nn.Module,
    target: nn.Module | None,
    optimizer: Any,
    loader_generator_state: Tensor | None,
) -> Path:
    """Collective: gather every rank's RNG states, rank 0 writes, every rank learns
    whether the write succeeded (so a failed write raises everywhere, no hang)."""
    local = rng_state(None, fabric.device)
    if loader_generator_state is not None:
        local["loader"] = loader_generator_state
    rng = gather_rng(fabric, local)
    path = checkpoints.step_path(step)
    error = ""
    if fabric.is_global_zero:
        try:
            state = build_checkpoint(
                cfg, registry, step, fabric.world_size, online, target, optimizer, rng
            )
            checkpoints.write(state, step)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    error = fabric.broadcast(error, src=0)
    if error:
        raise CheckpointError(
            f"rank 0 could not write checkpoint {path}: {error}. The previous checkpoint "
            f"in {checkpoints.directory} is intact; free disk space or fix permissions and "
            "resume."
        )
    return path


def load(
    fabric: Any,
    path: Path,
    cfg: RunConfig,
    registry: Any,
    online: nn.Module,
    target: nn.Module | None,
    optimizer: Any,
    loader_generator: torch.Generator | None,
) -> int:
    """Restore modules, optimizer and this rank's RNG states from ``path``; returns the
    step to continue from."""
    state = check_resume(path, cfg, registry)
    try:
        _unwrap(online).load_state_dict(state["online"], strict=True)
        if target is not None:
            if "target" not in state:
                raise KeyError("the checkpoint has no target network")
            target.load_state_dict(state["target"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model: {exc}. Start a new run or resume "
            "with the config it was written with."
        ) from None
    rng = state["rng"]
    rows = {k: v.shape[0] for k, v in rng.items()}
    saved_world = min(rows.values()) if rows else 0
    if saved_world:
        row = fabric.global_rank % saved_world
        set_rng_state({k: v[row].clone() for k, v in rng.items()}, loader_generator)
    return int(state["step"])


class Checkpointer:
    """The loop's handle on its checkpoints: what to save, where, and how to resume.

    Call :meth:`epoch_started` right before iterating the loader each epoch: the data
    loader's generator state at that moment is what a mid-epoch resume restores, so the
    resumed epoch's workers get the seeds the uninterrupted epoch gave them."""

    def __init__(
        self,
        fabric: Any,
        directory: Path,
        cfg: RunConfig,
        registry: Any,
        method: Any,
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
            self.files.prepare(resuming=cfg.run.resume)
        fabric.barrier()

    def epoch_started(self) -> None:
        if self.generator is not None:
            self._epoch_state = self.generator.get_state()

    def resume(self) -> int:
        """Load the newest checkpoint into the method, optimizer and RNGs; its step."""
        path = self.files.latest()
        if path is None:
            raise CheckpointError(f"no checkpoint to resume in {self.files.directory}")
        step = load(
            self.fabric,
            path,
            self.cfg,
            self.registry,
            self.method.online,
            self.method.target,
            self.optimizer,
            self.generator,
        )
        self.saved_step = step
        return step

    def save(self, step: int) -> Path | None:
        """Save ``step`` on every rank together (once per step)."""
        if step == self.saved_step:
            return None
        at_epoch_end = step % self.steps_per_epoch == 0
        loader_state = self._epoch_state
        if self.generator is not None and (at_epoch_end or loader_state is None):
            loader_state = self.generator.get_state()
        path = save(
            self.fabric,
            self.files,
            self.cfg,
            self.registry,
            step,
            self.method.online,
            self.method.target,
            self.optimizer,
            loader_state,
        )
        self.saved_step = step
        return path

    def describe_last(self) -> str:
        if self.saved_step is None:
            return f"no checkpoint was written yet in {self.files.directory}"
        return (
            f"the last checkpoint ({self.files.step_path(self.saved_step)}, step "
            f"{self.saved_step}) is intact"
        )


__all__ = [
    "FORMAT",
    "LAST",
    "MAY_CHANGE_ON_RESUME",
    "Checkpointer",
    "Checkpoints",
    "atomic_save",
    "check_components",
    "check_resume",
    "config_changes",
    "load",
    "read_checkpoint",
    "save",
]
