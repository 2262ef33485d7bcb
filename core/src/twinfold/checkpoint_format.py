"""The checkpoint format: what a checkpoint holds and how it is read back safely.

A checkpoint is a plain mapping of tensors and plain values (``torch.load(...,
weights_only=True)`` reads it): the format tag, the step, the run config as a JSON
string, the components as registry names (never import paths), the method's state
(``online`` and ``target`` state dicts, plus ``target_rule`` when the rule has state),
the optimizer state and the random number generator states of every rank.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from twinfold.config import RunConfig
from twinfold.config.models import SLOTS
from twinfold.errors import CheckpointError, UnknownComponentError
from twinfold.registry import Registry
from twinfold.version import __version__

FORMAT = "twinfold-checkpoint/1"

REQUIRED = (
    ("step", int),
    ("world_size", int),
    ("config", str),
    ("online", dict),
    ("optimizer", dict),
    ("rng", dict),
    ("components", dict),
)
"""Keys every checkpoint has, with their types."""


def components(cfg: RunConfig, registry: Registry) -> dict[str, dict[str, str]]:
    """Each component slot of the method as registry names: kind, name, plugin and
    distribution."""
    out = {}
    for slot, kind in SLOTS.items():
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
    registry: Registry,
    step: int,
    world_size: int,
    method_state: dict[str, Any],
    optimizer: Any,
    rng: dict[str, Tensor],
) -> dict[str, Any]:
    """The checkpoint mapping (tensors and plain values only)."""
    return {
        "format": FORMAT,
        "twinfold_version": __version__,
        "step": int(step),
        "world_size": int(world_size),
        "config": cfg.model_dump_json(),
        "components": components(cfg, registry),
        **method_state,
        "optimizer": optimizer.state_dict(),
        "rng": rng,
    }


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


_DAMAGED = (
    "The file is damaged or not a checkpoint; resume from an older step-*.ckpt in the same "
    "folder (delete the newer ones) or start a new run."
)


def _load_weights_only(path: Path) -> Any:
    with path.open("rb") as file:
        pickled = file.read(1) == b"\x80"  # a bare pickle (protocol 2+), checked below
    if not (pickled or zipfile.is_zipfile(path)):
        raise CheckpointError(
            f"cannot read checkpoint {path}: it is neither a torch.save archive nor a "
            f"pickle (a truncated write?). {_DAMAGED}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
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
            f"cannot read checkpoint {path}: {type(exc).__name__}: {reason}. {_DAMAGED}"
        ) from None


CHECKSUM_SUFFIX = ".sha256"


def serialise(state: dict[str, Any]) -> bytes:
    """The bytes of a checkpoint file (``torch.save``)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def checksum_path(checkpoint: Path) -> Path:
    """``<checkpoint>.sha256``: the file's SHA-256 in ``sha256sum`` format."""
    return checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX)


def checksum_line(data: bytes, name: str) -> str:
    return f"{hashlib.sha256(data).hexdigest()}  {name}\n"


def _recorded_checksum(path: Path) -> tuple[str, Path] | None:
    """The SHA-256 recorded for ``path`` and where: its own ``.sha256`` file, or for
    ``last.ckpt`` (a hard link) that of the step file it is linked to."""
    candidates = [checksum_path(path)]
    candidates += [
        checksum_path(p)
        for p in path.parent.glob("step-*.ckpt")
        if p != path and p.is_file() and os.path.samefile(p, path)
    ]
    for side in candidates:
        if side.is_file():
            return side.read_text(encoding="utf-8").split(maxsplit=1)[0], side
    return None


def verify_checksum(path: Path) -> None:
    """Compare the file's SHA-256 with the one recorded when it was written; a
    mismatch (a flipped byte, a torn copy) is a :class:`CheckpointError`. Checkpoints
    written before checksums existed have none and pass."""
    recorded = _recorded_checksum(path)
    if recorded is None:
        return
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != recorded[0]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its SHA-256 differs from the one recorded in "
            f"{recorded[1]} when it was written. Resume from an older step-*.ckpt "
            "(run.resume=auto does that by itself) or start a new run."
        )


def read_checkpoint(path: Path, *, verified: bool = False) -> dict[str, Any]:
    """Verify a twinfold checkpoint's checksum (unless the caller just did:
    ``verified``), load it with torch's weights-only unpickler (nothing in the file is
    imported or called) and check its structure. Raises :class:`CheckpointError` naming
    the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not verified:
        verify_checksum(path)
    state = _load_weights_only(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path} is not a {FORMAT} file (format: {found!r}); it was written by another "
            "program or an older twinfold. Start a new run."
        )
    problems = [
        f"'{key}' should be a {kind.__name__}"
        for key, kind in REQUIRED
        if not isinstance(state.get(key), kind)
    ]
    if problems:
        raise CheckpointError(f"checkpoint {path} is malformed: {'; '.join(problems)}")
    _check_plain(state, "checkpoint")
    try:
        json.loads(state["config"])
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable config: {exc}") from None
    return state


def check_components(state: dict[str, Any], registry: Registry, path: Path) -> None:
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


__all__ = [
    "FORMAT",
    "build_checkpoint",
    "check_components",
    "checksum_path",
    "components",
    "read_checkpoint",
    "serialise",
    "verify_checksum",
]
