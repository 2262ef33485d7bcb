"""Shared fixtures: fixture plugins really installed with pip into a private directory,
and one intra-op thread for tests of tiny models."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

FIXTURE_PLUGINS = Path(__file__).parent / "plugins"
LEFTOVERS = shutil.ignore_patterns("build", "*.egg-info")  # of earlier in-tree builds


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the fixture plugin distributions are installed by pip, with
    their ``twinfold`` entry points in real ``.dist-info`` metadata. pip builds in the
    source tree, so each test process builds from its own copy (pytest-xdist workers run
    this fixture at the same time)."""
    sources = tmp_path_factory.mktemp("plugin-sources")
    names = ("toy", "broken", "conflict")
    for name in names:
        shutil.copytree(FIXTURE_PLUGINS / name, sources / name, ignore=LEFTOVERS)
    site = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(  # one pip process for the three (each start costs about a second)
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(site),
            *(str(sources / name) for name in names),
        ],
        check=True,
    )
    return site


@pytest.fixture
def fixture_paths(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Search paths: the fixture site first, then the normal ``sys.path``."""
    monkeypatch.syspath_prepend(str(plugin_site))
    return [str(plugin_site), *sys.path]


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models run faster so on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
