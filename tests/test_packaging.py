"""The distributions' metadata (license, URLs, classifiers, Python versions, the pins on
the core) and ``twinfold --version``. Building and installing the wheels in a fresh
environment is ``.ci/wheels`` (run by ``.ci/run`` after the tests)."""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

import pytest
from runner import run_here

from twinfold.entry_points import plugin_entry_points
from twinfold.version import __version__

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the dev extra installs tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = [ROOT / "core", *sorted((ROOT / "plugins").glob("*/")), ROOT / "examples" / "plugin"]
URL_KEYS = {"Homepage", "Documentation", "Source", "Issues"}


def project(directory: Path) -> dict:
    return tomllib.loads((directory / "pyproject.toml").read_text())


def python_classifiers(meta: dict) -> list[tuple[int, int]]:
    pattern = re.compile(r"Programming Language :: Python :: 3\.(\d+)")
    found = [pattern.fullmatch(c) for c in meta["classifiers"]]
    return sorted((3, int(m.group(1))) for m in found if m)


@pytest.mark.parametrize("directory", PROJECTS, ids=lambda p: p.name)
def test_every_distribution_has_complete_metadata(directory: Path) -> None:
    data = project(directory)
    meta = data["project"]
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]
    assert (directory / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert (directory / meta["readme"]).stat().st_size > 200, "the PyPI page is the README"
    assert meta["description"] and meta["authors"] and meta["keywords"]
    assert set(meta["urls"]) == URL_KEYS
    assert meta["urls"] == project(ROOT / "core")["project"]["urls"], "URLs differ from core's"
    # license-files needs setuptools 77 (PEP 639)
    assert data["build-system"]["requires"] == ["setuptools>=77"]
    minimum = tuple(map(int, meta["requires-python"].removeprefix(">=").split(".")))
    versions = python_classifiers(meta)
    assert versions and versions[0] == minimum, (meta["requires-python"], versions)
    assert versions == [(3, minor) for minor in range(minimum[1], versions[-1][1] + 1)]
    # PEP 639: the license expression replaces the license classifiers
    assert not any(c.startswith("License ::") for c in meta["classifiers"])


@pytest.mark.parametrize("directory", PROJECTS[1:], ids=lambda p: p.name)
def test_plugins_pin_the_core_minor_version_and_use_the_entry_point_group(
    directory: Path,
) -> None:
    meta = project(directory)["project"]
    major, minor = __version__.split(".")[:2]
    assert f"twinfold>={major}.{minor},<{major}.{int(minor) + 1}" in meta["dependencies"]
    assert meta["entry-points"]["twinfold"], "no plugin without a twinfold entry point"
    assert md.version(meta["name"]) == meta["version"], "reinstall: bash .ci/install"


def test_the_core_version_has_one_source() -> None:
    meta = project(ROOT / "core")["project"]
    assert "version" not in meta and meta["dynamic"] == ["version"]
    assert md.version("twinfold") == __version__


def test_version_lists_the_core_and_every_installed_plugin_distribution() -> None:
    code, out, err = run_here("--version", cwd=ROOT)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"twinfold {__version__}"
    expected = {}
    for found in plugin_entry_points():
        expected.setdefault((found.distribution, found.version), []).append(found.entry_point.name)
    plugin_lines = lines[1:-1]
    assert len(plugin_lines) == len(expected) >= 5  # four methods + the example plugin
    for (dist, version), names in expected.items():
        assert f"{dist} {version} (plugin {', '.join(sorted(names))})" in plugin_lines
    assert "twinfold-directpred 0.1.0 (plugin directpred)" in plugin_lines
    assert lines[-1].startswith("Python 3.") and f"torch {md.version('torch')}" in lines[-1]


def test_version_reads_metadata_only_so_a_broken_plugin_is_listed_too(
    plugin_site: Path,
) -> None:
    code, out, _ = run_here("--version", cwd=ROOT, env={"PYTHONPATH": str(plugin_site)})
    assert code == 0
    assert "twinfold-test-toy 0.0.2 (plugin toy)" in out.splitlines()
    # its module raises on import; --version never imports a plugin
    assert "twinfold-test-broken 0.0.1 (plugin broken)" in out.splitlines()
