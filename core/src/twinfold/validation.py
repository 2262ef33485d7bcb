"""Turn pydantic validation errors into ``(dotted.path, message)`` problems, with "did
you mean" hints from the config classes (the registry's, for component slots)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from twinfold.components import ComponentConfig
from twinfold.errors import UnknownComponentError

if TYPE_CHECKING:
    from twinfold.registry import Registry


def dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(
    root: type[BaseModel], data: Any, loc: tuple[Any, ...], registry: Registry | None
) -> type | None:
    """The model class that validates the mapping found at ``loc`` inside ``data``
    (component slots are looked up in ``registry``; without one, no class)."""
    cls: type | None = root
    for key in loc:
        if cls is None or not isinstance(data, Mapping) or key not in data:
            return None
        field = cls.model_fields.get(key) if issubclass(cls, BaseModel) else None
        data = data[key]
        if field is None:
            return None
        ann = field.annotation
        args = (
            typing.get_args(ann)
            if typing.get_origin(ann) in (typing.Union, types.UnionType)
            else (ann,)
        )
        nxt = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if nxt is not None and issubclass(nxt, ComponentConfig) and isinstance(data, Mapping):
            nxt = _component_class(registry, nxt, data.get("name"))
        cls = nxt
    return cls


def _component_class(
    registry: Registry | None, base: type[ComponentConfig], name: Any
) -> type | None:
    """The registered config class named ``name`` of ``base``'s kind, or None."""
    if registry is None or not isinstance(name, str):
        return None
    try:
        kind = next(k for k, v in registry.kinds.items() if v.config_base is base)
        return registry.config_class(kind, name)
    except (StopIteration, UnknownComponentError):
        return None


def problems_from_validation(
    exc: ValidationError,
    root: type[BaseModel] | None = None,
    data: Any = None,
    prefix: str = "",
    registry: Registry | None = None,
) -> list[tuple[str, str]]:
    """One problem per pydantic error, with full dotted paths and fix hints (the allowed
    keys of the model at the error's location: ``root`` and ``data`` locate it)."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = dotted(((prefix,) if prefix else ()) + loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            owner = _model_at(root, data, loc[:-1], registry) if root is not None else None
            allowed = sorted(owner.model_fields) if owner is not None else []
            msg = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=2, cutoff=0.6)
            if close:
                msg += f"; did you mean {' or '.join(repr(c) for c in close)}?"
            if allowed:
                msg += f" Allowed keys here: {', '.join(allowed)}"
        elif kind == "missing":
            msg = "required but missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                msg += f" (got {_short(err['input'])})"
        problems.append((path, msg))
    return problems
