"""Checks of the installed wheels, run by ``.ci/wheels`` with the fresh environment's
interpreter, from a temporary directory, reading this file from standard input (so no
repository directory is on ``sys.path``)::

    cd TMP && VENV/bin/python - REPO DIST_DIR < REPO/.ci/check_wheels.py

1. every sdist and wheel holds its distribution's sources, README and LICENSE, and every
   wheel was installed from its file (not editable) with complete metadata;
2. ``twinfold`` and every plugin are imported from the environment, never the repository;
3. ``twinfold --version`` and ``twinfold plugins --json`` list every plugin distribution;
4. every preset of every plugin validates, and ``twinfold train`` (the main job, shortened)
   exits 0 and leaves its run directory.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO, DIST = Path(sys.argv[1]), Path(sys.argv[2])
BIN = Path(sys.executable).parent
TRAIN = [
    "trainer.max_steps=3",
    "trainer.progress_bar=false",
    "evaluation.every_n_epochs=0",
    "run.output_dir=runs",
    "run.name=wheel-check",
]
REQUIRED_METADATA = (
    "Summary",
    "Requires-Python",
    "License-Expression",
    "License-File",
    "Author",
    "Keywords",
    "Classifier",
    "Project-URL",
)


def fail(message: str) -> None:
    sys.exit(f"wheel check failed: {message}")


def run(*args: str) -> str:
    """A command of the environment; one intra-op thread, as in the tests (on 2 busy
    cores a second thread makes tiny steps several times slower)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def project_dirs() -> dict[str, Path]:
    """Distribution name (normalised) -> its directory in the repository."""
    found = {}
    plugins = sorted(p for p in (REPO / "plugins").iterdir() if p.is_dir())
    for project in [REPO / "core", *plugins, REPO / "examples" / "plugin"]:
        text = (project / "pyproject.toml").read_text()
        name = re.search(r'^name = "([^"]+)"', text, re.MULTILINE)
        assert name, project
        found[normalise(name.group(1))] = project
    return found


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sources(project: Path) -> set[str]:
    """Paths inside ``src/`` that a wheel must hold (caches and egg-info excluded)."""
    src = project / "src"
    return {
        p.relative_to(src).as_posix()
        for p in src.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
    }


def check_archives(projects: dict[str, Path]) -> None:
    wheels = {normalise(w.name.split("-")[0]): w for w in DIST.glob("*.whl")}
    sdists = {normalise(s.name.rsplit("-", 1)[0]): s for s in DIST.glob("*.tar.gz")}
    if set(wheels) != set(projects) or set(sdists) != set(projects):
        fail(f"built {sorted(wheels)} / {sorted(sdists)}, expected {sorted(projects)}")
    for name, project in projects.items():
        with zipfile.ZipFile(wheels[name]) as whl:
            inside = set(whl.namelist())
        missing = sources(project) - inside
        if missing:
            fail(f"{wheels[name].name} lacks {sorted(missing)} (package data not declared?)")
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in inside):
            fail(f"{wheels[name].name} has no LICENSE in its .dist-info")
        with tarfile.open(sdists[name]) as sdist:
            members = {m.split("/", 1)[1] for m in sdist.getnames() if "/" in m}
        wanted = {"pyproject.toml", "README.md", "LICENSE"} | {f"src/{s}" for s in sources(project)}
        if wanted - members:
            fail(f"{sdists[name].name} lacks {sorted(wanted - members)}")
    print(f"archives: {len(wheels)} wheels and {len(sdists)} sdists hold every source file")


def check_installed(projects: dict[str, Path]) -> None:
    for name in projects:
        dist = md.distribution(name)
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
        if direct.get("dir_info", {}).get("editable") or not direct.get("url", "").endswith(".whl"):
            fail(f"{name} was not installed from its wheel: {direct}")
        missing = [key for key in REQUIRED_METADATA if not dist.metadata.get(key)]
        if not str(dist.metadata.get_payload()).strip():  # type: ignore[attr-defined]
            missing.append("the description (README)")
        if missing:
            fail(f"{name} {dist.version}: metadata lacks {missing}")
        for top in (dist.read_text("top_level.txt") or "").split():
            module = importlib.import_module(top)
            if str(REPO) in str(module.__file__) or not module.__file__.startswith(sys.prefix):
                fail(f"{top} imported from {module.__file__}, not from the environment")
    if any(str(REPO) in entry for entry in sys.path):
        fail(f"the repository is on sys.path: {sys.path}")
    print(f"installed: {len(projects)} distributions from their wheels, imported from {sys.prefix}")


def check_commands(projects: dict[str, Path]) -> None:
    plugins = set(projects) - {"twinfold"}
    versions = run("twinfold", "--version")
    listed = {normalise(line.split()[0]) for line in versions.splitlines()[1:-1]}
    if listed != plugins:
        fail(f"twinfold --version lists {sorted(listed)}, expected {sorted(plugins)}:\n{versions}")
    report = json.loads(run("twinfold", "plugins", "--json"))
    providers = {normalise(c["distribution"]) for c in report["components"]}
    if providers != set(projects) or report["broken"] or report["conflicts"]:
        fail(f"twinfold plugins: providers {sorted(providers)}, broken {report['broken']}")
    print(versions.rstrip())
    presets = [c["name"] for c in report["components"] if c["kind"] == "preset"]
    code = (
        "import sys, twinfold\n"
        "for p in sys.argv[1:]:\n"
        "    twinfold.load_config({'preset': p}, overrides=['data.root=/unused'])\n"
    )
    run("python", "-c", code, *presets)
    print(f"presets: {len(presets)} validate ({', '.join(presets)})")
    out = run("twinfold", "train", *(arg for key in TRAIN for arg in ("--set", key)))
    run_dir = Path("runs/wheel-check")
    for name in ("config.yaml", "summary.json", "backbone.safetensors"):
        if not (run_dir / name).is_file():
            fail(f"twinfold train left no {run_dir / name}:\n{out}")
    print("twinfold train: " + " | ".join(out.strip().splitlines()[-3:]))


if __name__ == "__main__":
    found = project_dirs()
    check_archives(found)
    check_installed(found)
    check_commands(found)
