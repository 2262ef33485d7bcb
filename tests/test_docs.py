"""The generated reference pages of the documentation site: every hook spec is documented
and on the hook reference page, every config key and installed component is on the
configuration page, every preset with its deviations on the preset page. (The site itself
is built with warnings as errors by .ci/run.)"""

from __future__ import annotations

import importlib.util
import inspect
import types
from pathlib import Path

import pytest

import twinfold.hookspecs as hookspecs
from twinfold.config import RunConfig
from twinfold.registry import default_registry

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


def test_every_hook_spec_is_on_the_reference_page() -> None:
    page = docgen.hook_reference()
    for kind, hook in hookspecs.HOOKS.items():
        title = f"``{hook}``"
        assert f"{title}\n{'-' * len(title)}\n" in page, f"{hook} missing from the reference"
        assert f"Component kind: ``{kind}``." in page
        first_line = inspect.getdoc(getattr(hookspecs, hook)).splitlines()[0]
        assert first_line in page
    assert ".. include:: _generated/hooks.rst" in (DOCS / "hooks.rst").read_text()


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
    for section in docgen.SECTIONS:
        model = RunConfig.model_fields[section].annotation
        for key, field in model.model_fields.items():
            assert f":code:`{section}.{key}`" in page, f"{section}.{key} missing"
            for sub in getattr(field.annotation, "model_fields", {}):  # run.mlflow.experiment
                assert f":code:`{section}.{key}.{sub}`" in page, f"{section}.{key}.{sub} missing"
    assert ":code:`preset`" in page
    registry = default_registry()
    for kind in ("encoder", "head", "target", "loss", "augmentation"):
        for record in registry.records(kind):
            assert f"``{record.name}``\n" in page and record.distribution in page
            for key in record.record.config.model_fields:
                if key != "name":
                    assert f":code:`{key}`" in page


def test_preset_page_lists_every_preset_and_its_deviations() -> None:
    page = docgen.preset_reference()
    for record in default_registry().records("preset"):
        assert f"``{record.name}``\n" in page
        for deviation in record.record.deviations:
            assert docgen.plain(deviation) in page
