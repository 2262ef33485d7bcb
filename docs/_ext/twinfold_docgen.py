"""Reference pages generated at docs build time from the code itself: the hook reference
from the hook specs' docstrings, the configuration reference from the pydantic models and
the installed components' config classes, and the presets with their deviations.

Each generator returns reStructuredText; :func:`setup` (a Sphinx extension) writes them to
``docs/_generated/`` when the build starts, where the hand-written pages include them.
The generators fail loudly (``DocgenError``) on what would make a silent hole in the
docs, e.g. a hook spec without a docstring.
"""

from __future__ import annotations

import inspect
import json
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

GENERATED = Path(__file__).resolve().parents[1] / "_generated"


class DocgenError(RuntimeError):
    """Something in the code leaves the generated reference incomplete."""


# --- hooks ------------------------------------------------------------------------------


def hook_specs(module: types.ModuleType) -> list[Callable[..., Any]]:
    """The functions of ``module`` marked as twinfold hook specs, in source order."""
    marker = f"{module.PROJECT}_spec"
    specs = [f for f in vars(module).values() if inspect.isfunction(f) and hasattr(f, marker)]
    return sorted(specs, key=lambda f: f.__code__.co_firstlineno)


def hook_reference(module: types.ModuleType | None = None) -> str:
    """One section per hook spec: its kind, signature and docstring (which is a minimal
    plugin for that kind). Raises :class:`DocgenError` for a spec without a docstring and
    for a kind in ``HOOKS`` whose hook is not a spec."""
    if module is None:
        import twinfold.hookspecs as module
    specs = hook_specs(module)
    kinds = {hook: kind for kind, hook in module.HOOKS.items()}
    names = {f.__name__ for f in specs}
    missing = sorted(set(kinds) - names)
    if missing:
        raise DocgenError(
            f"HOOKS names {', '.join(missing)} but {module.__name__} has no such hook spec; "
            "declare it with @hookspec or remove it from HOOKS"
        )
    out: list[str] = []
    for f in specs:
        doc = inspect.getdoc(f)
        if not doc or not doc.strip():
            raise DocgenError(
                f"hook spec {module.__name__}.{f.__name__} has no docstring; document what "
                "it registers and give a minimal plugin in its docstring"
            )
        title = f"``{f.__name__}``"
        out += [title, "-" * len(title), ""]
        kind = kinds.get(f.__name__)
        if kind is not None:
            out += [f"Component kind: ``{kind}``.", ""]
        signature = f"{f.__name__}{inspect.signature(f)}".replace("'", "")
        out += [".. code-block:: python", "", f"    @hookimpl\n    def {signature}: ...", ""]
        out += [doc, ""]
    return "\n".join(out)


# --- configuration ----------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A short, readable rendering of a field's annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, default=str)


def literal(text: str) -> str:
    """Inline literal that survives any content (reST has no escape inside ``...``)."""
    text = text.replace("\n", " ").replace("`", "'")
    return f":code:`{text}`" if text else ""


NO_DESCRIPTION = {
    "preset": "name of a registered preset; the rest of the config is merged onto it",
    "in_dim": "filled by the method from the module before it; leave unset",
}


def plain(text: str) -> str:
    """Free text (descriptions, summaries, deviations) with reST's inline markup
    characters escaped, on one line."""
    text = " ".join(text.split()).replace("\\", "\\\\")
    for char in "*`|_[]<>":
        text = text.replace(char, "\\" + char)
    return text


def field_rows(
    model: type[BaseModel], prefix: str, skip: Iterable[str] = ()
) -> list[tuple[str, str, str, str]]:
    """One row per key; a key holding a settings model (``run.mlflow``) is followed by
    the rows of its own keys (``run.mlflow.experiment``)."""
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        nested = field.annotation
        nested = nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None
        about = NO_DESCRIPTION.get(f"{prefix}{name}", "")
        about = field.description or (_first_line(nested.__doc__) if nested else about)
        rows.append(
            (
                literal(f"{prefix}{name}"),
                literal(type_name(field.annotation)),
                literal(default_text(field)),
                plain(about),
            )
        )
        if nested is not None:
            rows += field_rows(nested, f"{prefix}{name}.")
    return rows


def field_table(model: type[BaseModel], prefix: str, skip: Iterable[str] = ()) -> list[str]:
    rows = field_rows(model, prefix, skip)
    if not rows:
        return ["No settings besides ``name``.", ""]
    out = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 30 25 20 45",
        "",
        "   * - key",
        "     - type",
        "     - default",
        "     - meaning",
    ]
    for row in rows:
        out.append(f"   * - {row[0]}")
        out += [f"     - {cell}" for cell in row[1:]]
    return [*out, ""]


def _first_line(doc: str | None) -> str:
    return " ".join((inspect.cleandoc(doc or "").split("\n\n")[0]).split())


SECTIONS = ("data", "optimizer", "schedule", "trainer", "run", "evaluation")
SLOTS = (
    ("encoder", "encoder"),
    ("projector", "head"),
    ("predictor", "head"),
    ("target", "target"),
    ("loss", "loss"),
    ("views", "augmentation"),
)


def config_reference(registry: Any = None) -> str:
    """Every key of the run config (section by section, from the pydantic models) and every
    installed component's config class (kind by kind, from the registry)."""
    from twinfold.config import RunConfig
    from twinfold.config.models import MethodConfig

    if registry is None:
        from twinfold.registry import default_registry

        registry = default_registry()
    out: list[str] = []

    def heading(text: str, char: str) -> None:
        out.extend([text, char * len(text), ""])

    heading("Top level", "-")
    out += field_table(RunConfig, "", skip=(*SECTIONS, "method"))
    for section in SECTIONS:
        model = RunConfig.model_fields[section].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        heading(f"``{section}``", "-")
        out += [_first_line(model.__doc__), ""]  # docstrings are reST already
        out += field_table(model, f"{section}.")
    heading("``method``", "-")
    out += [_first_line(MethodConfig.__doc__), ""]
    out += [
        "Each slot takes a mapping with the ``name`` of an installed component (or, in "
        "Python, an instance of its config class); the other keys are that component's "
        "settings, listed below by kind. ``predictor`` may be ``null`` (no predictor).",
        "",
    ]
    out += [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - slot",
        "     - kind",
        "     - installed names",
    ]
    for slot, kind in SLOTS:
        names = ", ".join(f"``{n}``" for n in registry.available(kind))
        out += [f"   * - ``method.{slot}``", f"     - {kind}", f"     - {names}"]
    out.append("")
    for kind in ("encoder", "head", "target", "loss", "augmentation"):
        heading(f"Components of kind ``{kind}``", "-")
        for record in registry.records(kind):
            cls = record.record.config
            heading(f"``{record.name}``", "~")
            out += [
                f"{plain(record.summary)} — from ``{record.distribution}`` {record.version} "
                f"(plugin ``{record.plugin}``), config class "
                f"``{cls.__module__}.{cls.__qualname__}``.",
                "",
            ]
            out += field_table(cls, "", skip=("name",))
    return "\n".join(out)


def preset_reference(registry: Any = None) -> str:
    """Every installed preset: summary, provider, paper, deviations and its config."""
    if registry is None:
        from twinfold.registry import default_registry

        registry = default_registry()
    out: list[str] = []
    for record in registry.records("preset"):
        preset = record.record
        title = f"``{preset.name}``"
        out += [title, "-" * len(title), ""]
        out += [f"{plain(preset.summary)} — from ``{record.distribution}`` {record.version}.", ""]
        if preset.paper:
            out += [f"Paper: {plain(preset.paper)}.", ""]
        if preset.deviations:
            out += ["Deviations from the paper:", ""]
            out += [f"- {plain(d)}" for d in preset.deviations] + [""]
        else:
            out += ["Deviations from the paper: none listed.", ""]
        body = yaml.safe_dump(json.loads(json.dumps(dict(preset.config))), sort_keys=False)
        out += [".. code-block:: yaml", "", textwrap.indent(body, "    "), ""]
    return "\n".join(out)


# --- Sphinx -----------------------------------------------------------------------------

PAGES: dict[str, Callable[[], str]] = {
    "hooks.rst": hook_reference,
    "configuration.rst": config_reference,
    "presets.rst": preset_reference,
}


def write_all(directory: Path = GENERATED) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, generate in PAGES.items():
        path = directory / name
        text = generate() + "\n"
        if not path.is_file() or path.read_text() != text:  # keep mtimes for incremental builds
            path.write_text(text)
        written.append(path)
    return written


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", lambda app: write_all())
    return {"parallel_read_safe": True, "parallel_write_safe": True}
