"""The reference pages, generated from the code and committed as Markdown, so that they
read on the repository page as well as on the documentation site:

- ``docs/reference/hooks.md``: the hook specs and their docstrings (each a minimal plugin);
- ``docs/reference/configuration.md``: every key of the run config and every component's
  config class;
- ``docs/reference/presets.md``: every preset with its deviations from its paper.

Regenerate them after changing a hook spec, a config model, a component or a preset::

    python docs/_ext/twinfold_docgen.py          # write the pages
    python docs/_ext/twinfold_docgen.py --check  # exit 1 and name the stale pages

Only the components and presets of this repository's distributions (``core/``,
``plugins/*/``, ``examples/plugin``) are listed, whatever else is installed.
``tests/test_docs.py`` fails when a committed page differs from what this generates. The
generators fail loudly (:class:`DocgenError`) on what would leave a silent hole in the
reference, e.g. a hook spec without a docstring.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parents[1]
REPO = DOCS.parent
REFERENCE = DOCS / "reference"
COMMAND = "python docs/_ext/twinfold_docgen.py"
NOTICE = (
    f"<!-- Generated from the code by `{COMMAND}`; do not edit. "
    "tests/test_docs.py fails when this page is stale. -->"
)


class DocgenError(RuntimeError):
    """Something in the code leaves the generated reference incomplete."""


# --- Markdown ---------------------------------------------------------------------------


def code(text: str) -> str:
    """An inline code span holding ``text`` (backticks inside get a longer fence)."""
    text = " ".join(str(text).split())
    if not text:
        return ""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """Free text (descriptions, summaries, deviations) on one line, with Markdown's
    inline markup characters escaped."""
    text = " ".join(text.split())
    return re.sub(r"([\\`*_\[\]<>|])", r"\\\1", text)


def cell(text: str) -> str:
    """Text for a table cell: a ``|`` must be escaped, even inside a code span."""
    return text.replace("|", "\\|")


def table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


_ROLE = re.compile(r":[a-z]+(?::[a-z]+)?:`~?([^`]+)`")


def rst_inline(text: str) -> str:
    """reST inline markup of docstrings as Markdown: ``x`` and :role:`x` become code."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        short = match.group(0).split("`")[1].startswith("~")
        return code(target.rsplit(".", 1)[-1] if short else target)

    text = _ROLE.sub(role, text)
    return re.sub(r"``(.+?)``", lambda m: code(m.group(1)), text)


def rst_docstring(doc: str) -> str:
    """A docstring's reST as Markdown: paragraphs with inline markup converted, and each
    ``::`` literal block as a fenced Python block."""
    out: list[str] = []
    lines = doc.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.rstrip().endswith("::"):
            out.append(rst_inline(line))
            i += 1
            continue
        intro = line.rstrip()[:-2].rstrip()
        if intro:
            out.append(rst_inline(intro) + ":")
        block: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith((" ", "\t"))):
            block.append(lines[i])
            i += 1
        body = textwrap.dedent("\n".join(block)).strip("\n")
        out += ["", "```python", body, "```", ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def page(title: str, intro: str, body: list[str]) -> str:
    return "\n".join([NOTICE, "", f"# {title}", "", intro.strip(), "", *body]).rstrip() + "\n"


# --- which components: this repository's distributions -------------------------------------


def repository_distributions() -> set[str]:
    """Normalised names of the distributions in this repository."""
    projects = [REPO / "core", *sorted((REPO / "plugins").glob("*/")), REPO / "examples/plugin"]
    names = set()
    for project in projects:
        found = re.search(r'^name = "([^"]+)"', (project / "pyproject.toml").read_text(), re.M)
        if found is None:
            raise DocgenError(f"{project}/pyproject.toml names no distribution")
        names.add(normalise(found.group(1)))
    return names


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def own_records(registry: Any, kind: str) -> list[Any]:
    """The registry's records of ``kind`` from this repository's distributions."""
    ours = repository_distributions()
    return [r for r in registry.records(kind) if normalise(r.distribution) in ours]


def _registry(registry: Any) -> Any:
    if registry is None:
        from twinfold.registry import default_registry

        registry = default_registry()
    return registry


# --- hooks ------------------------------------------------------------------------------

HOOKS_INTRO = """
One hook spec per component kind, all in `twinfold.hookspecs` under the `twinfold_`
prefix. Each takes no arguments and returns (or yields) registration records:
`twinfold.Component(config_class, factory, summary)`, or `twinfold.Preset` for presets.
There are no lifecycle hooks, no `firstresult` and no wrappers: behaviour lives in the
components. Implement a hook by defining a function of the same name decorated with
`twinfold.hookimpl` in the module your entry point names (see
[Writing a plugin](../writing-a-plugin.md) and the [plugin rules](../plugins.md)).

Each section below is a hook spec's docstring, which shows a minimal plugin for its kind.
"""


def hook_specs(module: types.ModuleType) -> list[Callable[..., Any]]:
    """The functions of ``module`` marked as twinfold hook specs, in source order."""
    marker = f"{module.PROJECT}_spec"
    specs = [f for f in vars(module).values() if inspect.isfunction(f) and hasattr(f, marker)]
    return sorted(specs, key=lambda f: f.__code__.co_firstlineno)


def hook_reference(module: types.ModuleType | None = None) -> str:
    """One section per hook spec: its kind, signature and docstring (a minimal plugin
    for that kind). Raises :class:`DocgenError` for a spec without a docstring and for a
    kind in ``HOOKS`` whose hook is not a spec."""
    if module is None:
        import twinfold.hookspecs as module
    specs = hook_specs(module)
    kinds = {hook: kind for kind, hook in module.HOOKS.items()}
    missing = sorted(set(kinds) - {f.__name__ for f in specs})
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
        out += [f"## {code(f.__name__)}", ""]
        if f.__name__ in kinds:
            out += [f"Component kind: {code(kinds[f.__name__])}.", ""]
        signature = f"{f.__name__}{inspect.signature(f)}".replace("'", "")
        out += ["```python", "@hookimpl", f"def {signature}: ...", "```", ""]
        out += [rst_docstring(doc), ""]
    return page("Hook reference", HOOKS_INTRO, out)


# --- configuration ----------------------------------------------------------------------

CONFIG_INTRO = """
Every key of a run config, generated from the pydantic models. Keys are written as dotted
paths, as `--set` takes them (`twinfold train --set trainer.epochs=5`) and as YAML nests
them. Every model forbids unknown keys, and the whole config is validated before anything
runs; an invalid config exits with status 2 and lists every problem with its dotted path.

The `method` slots accept any *installed* component. The component sections below list
the components of this repository's distributions (the core builtins, the four method
plugins, `twinfold-timm` and the example plugin `twinfold-directpred`);
`twinfold config schema` prints the same information for your environment as a JSON
schema, and
`twinfold config show [--preset NAME]` prints a resolved config with every default.
"""

NO_DESCRIPTION = {
    "preset": "name of a registered preset; the rest of the config is merged onto it",
    "in_dim": "filled by the method from the module before it; leave unset",
}
SLOTS = (
    ("encoder", "encoder"),
    ("projector", "head"),
    ("predictor", "head"),
    ("target", "target"),
    ("loss", "loss"),
    ("views", "augmentation"),
)
COMPONENT_KINDS = ("encoder", "head", "target", "loss", "augmentation")


def type_parts(annotation: Any) -> list[str]:
    """A field's annotation as short texts, one per alternative of a union or Literal."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return [json.dumps(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType):
        return [part for a in typing.get_args(annotation) for part in type_parts(a)]
    if origin is typing.Annotated:
        return type_parts(typing.get_args(annotation)[0])
    if origin is not None:
        args = ", ".join(" | ".join(type_parts(a)) for a in typing.get_args(annotation))
        return [f"{getattr(origin, '__name__', str(origin))}[{args}]"]
    if annotation is type(None):
        return ["None"]
    return [getattr(annotation, "__name__", str(annotation).replace("typing.", ""))]


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


def field_rows(
    model: type[BaseModel], prefix: str, skip: Iterable[str] = ()
) -> list[tuple[str, str, str, str]]:
    """One row per key; a key holding a settings model (``run.mlflow``) is followed by
    the rows of its own keys (``run.mlflow.experiment``)."""
    rows = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        nested = field.annotation
        nested = nested if isinstance(nested, type) and issubclass(nested, BaseModel) else None
        about = field.description or (
            _first_paragraph(nested.__doc__) if nested else NO_DESCRIPTION.get(key, "")
        )
        rows.append(
            (
                code(key),
                " | ".join(code(p) for p in type_parts(field.annotation)),
                code(default_text(field)),
                plain(about),
            )
        )
        if nested is not None:
            rows += field_rows(nested, f"{key}.")
    return rows


def field_table(model: type[BaseModel], prefix: str, skip: Iterable[str] = ()) -> list[str]:
    rows = field_rows(model, prefix, skip)
    if not rows:
        return ["No settings besides `name`.", ""]
    return table(("key", "type", "default", "meaning"), rows)


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def sections() -> list[str]:
    """The run config's sections (fields that are models), ``method`` apart."""
    from twinfold.config import RunConfig

    return [
        name
        for name, field in RunConfig.model_fields.items()
        if isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
        and name != "method"
    ]


def config_reference(registry: Any = None) -> str:
    """Every key of the run config (section by section, from the pydantic models) and every
    component config class of this repository's distributions (kind by kind)."""
    from twinfold.config import RunConfig
    from twinfold.config.models import MethodConfig

    registry = _registry(registry)
    out = ["## Top level", ""]
    out += field_table(RunConfig, "", skip=(*sections(), "method"))
    for section in sections():
        model = RunConfig.model_fields[section].annotation
        out += [f"## {code(section)}", "", rst_inline(_first_paragraph(model.__doc__)), ""]
        out += field_table(model, f"{section}.")
    out += [f"## {code('method')}", "", rst_inline(_first_paragraph(MethodConfig.__doc__)), ""]
    out += [
        "Each slot takes a mapping with the `name` of an installed component (or, in "
        "Python, an instance of its config class); the other keys are that component's "
        "settings, listed below by kind. `predictor` may be `null` (no predictor).",
        "",
    ]
    slot_rows = []
    for slot, kind in SLOTS:
        names = ", ".join(code(r.name) for r in own_records(registry, kind))
        slot_rows.append((code(f"method.{slot}"), kind, names))
    out += table(("slot", "kind", "names"), slot_rows)
    for kind in COMPONENT_KINDS:
        out += [f"## Components of kind {code(kind)}", ""]
        for record in own_records(registry, kind):
            cls = record.record.config
            out += [f"### {code(record.name)}", ""]
            out += [
                f"{plain(record.summary)} — from {code(record.distribution)} {record.version} "
                f"(plugin {code(record.plugin)}), config class "
                f"{code(f'{cls.__module__}.{cls.__qualname__}')}.",
                "",
            ]
            out += field_table(cls, "", skip=("name",))
    return page("Configuration reference", CONFIG_INTRO, out)


# --- presets ----------------------------------------------------------------------------

PRESETS_INTRO = """
Every preset of this repository's distributions with its summary, the paper it follows,
its **deviations** from that paper and the partial config it contributes (a user's config
is merged on top of it). In Python: `twinfold.default_registry().preset(NAME).deviations`;
the resolved config: `twinfold config show --preset NAME`. See [Methods](../methods.md)
for the recipes in prose.
"""


def preset_reference(registry: Any = None) -> str:
    """Every preset: summary, provider, paper, deviations and its config."""
    out: list[str] = []
    for record in own_records(_registry(registry), "preset"):
        preset = record.record
        out += [f"## {code(preset.name)}", ""]
        out += [f"{plain(preset.summary)} — from {code(record.distribution)} {record.version}.", ""]
        if preset.paper:
            out += [f"Paper: {plain(preset.paper)}.", ""]
        if preset.deviations:
            out += ["Deviations from the paper:", ""]
            out += [f"- {plain(d)}" for d in preset.deviations] + [""]
        else:
            out += ["Deviations from the paper: none listed.", ""]
        body = yaml.safe_dump(json.loads(json.dumps(dict(preset.config))), sort_keys=False)
        out += ["```yaml", body.rstrip(), "```", ""]
    return page("Preset reference", PRESETS_INTRO, out)


# --- the committed pages ----------------------------------------------------------------

PAGES: dict[str, Callable[[], str]] = {
    "hooks.md": hook_reference,
    "configuration.md": config_reference,
    "presets.md": preset_reference,
}


def stale_pages(directory: Path = REFERENCE) -> list[Path]:
    """The committed pages that differ from what the code generates now."""
    return [
        directory / name
        for name, generate in PAGES.items()
        if not (directory / name).is_file() or (directory / name).read_text() != generate()
    ]


def write_all(directory: Path = REFERENCE) -> list[Path]:
    """Write the pages whose text changed; returns them."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name, generate in PAGES.items():
        path, text = directory / name, generate()
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"stale: {path.relative_to(REPO)} (regenerate: {COMMAND})")
        return 1 if stale else 0
    for path in write_all():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
