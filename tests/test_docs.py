"""The reference pages generated from the code and committed under docs/reference/: they
are current, every hook spec is documented and on the hook reference page, every config key
and component is on the configuration page, every preset with its deviations on the preset
page, and only this repository's distributions are listed. (The site itself is built with
warnings as errors by .ci/run.)"""

from __future__ import annotations

import importlib.util
import inspect
import types
import warnings
from pathlib import Path

import pytest

import twinfold.hookspecs as hookspecs
from twinfold.config import RunConfig
from twinfold.registry import Registry, default_registry

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _docgen() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "twinfold_docgen", DOCS / "_ext" / "twinfold_docgen.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


docgen = _docgen()


def test_every_hook_spec_has_a_docstring_with_a_minimal_plugin() -> None:
    specs = docgen.hook_specs(hookspecs)
    assert {f.__name__ for f in specs} == set(hookspecs.HOOKS.values())
    for f in specs:
        doc = inspect.getdoc(f) or ""
        assert doc.strip(), f"{f.__name__} has no docstring"
        assert "@hookimpl" in doc and f"def {f.__name__}():" in doc, (
            f"{f.__name__}'s docstring must show a minimal plugin implementing it"
        )


def test_the_committed_reference_pages_are_current() -> None:
    stale = [str(path.relative_to(DOCS.parent)) for path in docgen.stale_pages()]
    assert not stale, (
        f"{', '.join(stale)} differ from what the code generates; regenerate and commit them: "
        f"{docgen.COMMAND}"
    )
    index = (DOCS / "index.md").read_text()
    for name in docgen.PAGES:
        assert f"reference/{name.removesuffix('.md')}\n" in index, f"{name} not in the toctree"


def test_a_stale_page_is_found_and_rewritten(tmp_path: Path) -> None:
    assert docgen.write_all(tmp_path) == [tmp_path / name for name in docgen.PAGES]
    assert docgen.stale_pages(tmp_path) == [] and docgen.write_all(tmp_path) == []
    page = tmp_path / "presets.md"
    page.write_text(page.read_text().replace("Deviations", "Departures", 1))
    assert docgen.stale_pages(tmp_path) == [page]
    assert docgen.write_all(tmp_path) == [page] and docgen.stale_pages(tmp_path) == []


def test_every_hook_spec_is_on_the_reference_page() -> None:
    page = docgen.hook_reference()
    assert page.startswith(docgen.NOTICE)
    for kind, hook in hookspecs.HOOKS.items():
        assert f"\n## `{hook}`\n\nComponent kind: `{kind}`.\n" in page, f"{hook} missing"
        first_line = inspect.getdoc(getattr(hookspecs, hook)).splitlines()[0]
        assert first_line in page
        # the signature and the docstring's minimal plugin, each a fenced Python block
        section = page.split(f"\n## `{hook}`\n")[1].split("\n## ")[0]
        assert section.count("```python\n") == 2 and section.count("\n```\n") == 2
        example = section.split("```python\n")[2]
        assert f"@hookimpl\ndef {hook}():\n" in example and "::" not in section


def test_rest_markup_of_docstrings_becomes_markdown() -> None:
    doc = "A :class:`~twinfold.components.Loss` of ``[B, D]``::\n\n    x = 1\n\n    y = 2\n\nDone."
    assert docgen.rst_docstring(doc) == (
        "A `Loss` of `[B, D]`:\n\n```python\nx = 1\n\ny = 2\n```\n\nDone."
    )
    assert docgen.cell(docgen.code("a | b")) == "`a \\| b`"
    assert docgen.plain("a_b *c* [d] <e>") == "a\\_b \\*c\\* \\[d\\] \\<e\\>"


def _fake_specs(documented: bool) -> types.ModuleType:
    module = types.ModuleType("fake_hookspecs")
    module.PROJECT = "twinfold"
    module.HOOKS = {"loss": "twinfold_losses"}

    @hookspecs.hookspec
    def twinfold_losses():
        pass

    if documented:
        twinfold_losses.__doc__ = "Register losses."
    module.twinfold_losses = twinfold_losses
    return module


def test_an_undocumented_or_missing_hook_fails_the_build() -> None:
    assert "Register losses." in docgen.hook_reference(_fake_specs(documented=True))
    with pytest.raises(docgen.DocgenError, match="fake_hookspecs.twinfold_losses has no docstring"):
        docgen.hook_reference(_fake_specs(documented=False))
    module = _fake_specs(documented=True)
    module.HOOKS = {**module.HOOKS, "encoder": "twinfold_encoders"}
    with pytest.raises(docgen.DocgenError, match="HOOKS names twinfold_encoders"):
        docgen.hook_reference(module)


def test_configuration_page_lists_every_key_and_component() -> None:
    page = docgen.config_reference()
    assert {"data", "optimizer", "schedule", "trainer", "run", "evaluation"} <= set(
        docgen.sections()
    )
    for section in docgen.sections():
        assert f"\n## `{section}`\n" in page
        model = RunConfig.model_fields[section].annotation
        for key, field in model.model_fields.items():
            assert f"\n| `{section}.{key}` | " in page, f"{section}.{key} missing"
            for sub in getattr(field.annotation, "model_fields", {}):  # run.mlflow.experiment
                assert f"\n| `{section}.{key}.{sub}` | " in page, f"{section}.{key}.{sub} missing"
    assert "\n| `preset` | `str` \\| `None` | `null` | " in page
    registry = default_registry()
    for kind in ("encoder", "head", "target", "loss", "augmentation"):
        for record in registry.records(kind):
            assert f"\n### `{record.name}`\n" in page and record.distribution in page
            for key in record.record.config.model_fields:
                if key != "name":
                    assert f"\n| `{key}` | " in page


def test_preset_page_lists_every_preset_and_its_deviations() -> None:
    page = docgen.preset_reference()
    for record in default_registry().records("preset"):
        assert f"\n## `{record.name}`\n" in page
        for deviation in record.record.deviations:
            assert f"\n- {docgen.plain(deviation)}\n" in page


def test_only_this_repositorys_distributions_are_listed(fixture_paths: list[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture 'broken' plugin
        registry = Registry(paths=fixture_paths, blocked=["conflict"])
    assert "toy-mse" in registry.available("loss") and "toy-small" in registry.available("preset")
    assert "toy-mse" not in docgen.config_reference(registry)
    assert "toy-small" not in docgen.preset_reference(registry)
    # what the repository's own plugins give, without the fixture site (not the default
    # registry: built for the first time under this fixture, it would hold the site too)
    own = Registry(paths=[p for p in fixture_paths if p != fixture_paths[0]])
    assert "toy-mse" not in own.available("loss")
    assert docgen.config_reference(registry) == docgen.config_reference(own)
