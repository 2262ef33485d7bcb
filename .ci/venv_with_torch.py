"""Create an empty virtual environment that already has torch, torchvision (and pip).

Usage (with the interpreter of the environment that has torch, e.g. ``.venv/bin/python``)::

    python .ci/venv_with_torch.py NEW_VENV

The new environment is made ``--without-pip``; then every file that the installed
distributions torch, torchvision and pip and everything they require (with markers
evaluated here) list in their ``RECORD`` is hard-linked into its ``site-packages``, so
it holds real installed distributions, ``.dist-info`` included, and nothing else (no
twinfold, no editable install). Copying the several GB of a CUDA build of torch would take
minutes; links take seconds. Where links are impossible (another file system), the
script falls back to ``pip install torch==X torchvision==Y`` with the same versions.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOTS = ("torch", "torchvision", "pip")


def closure(names: tuple[str, ...]) -> list[md.Distribution]:
    """The installed distributions ``names`` and, recursively, what they require
    (the requirements of a requested extra included, e.g. ``cuda-toolkit[cublas]``)."""
    found: dict[str, md.Distribution] = {}
    extras_done: set[tuple[str, str]] = set()
    todo: list[tuple[str, str]] = [(n, "") for n in names]
    while todo:
        name, extra = todo.pop()
        key = (canonicalize_name(name), extra)
        if key in extras_done:
            continue
        extras_done.add(key)
        dist = found.setdefault(key[0], md.distribution(key[0]))
        for text in dist.requires or ():
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": extra}):
                todo += [(req.name, e) for e in ("", *req.extras)]
    return list(found.values())


def site_packages(env: Path) -> Path:
    scheme = sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})
    return Path(scheme["purelib"])


def link_distribution(dist: md.Distribution, source: Path, target: Path) -> int:
    """Hard-link the files of ``dist`` that lie in ``source`` into ``target``."""
    count = 0
    for file in dist.files or ():
        path = Path(os.path.normpath(dist.locate_file(file)))
        if not path.is_file() or not path.is_relative_to(source):
            continue  # scripts in bin/, files listed but absent
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, dest)
        count += 1
    return count


def main(new_env: Path) -> None:
    venv.EnvBuilder(with_pip=False, clear=True).create(new_env)
    source = site_packages(Path(sys.prefix))
    target = site_packages(new_env)
    dists = closure(ROOTS)
    try:
        files = sum(link_distribution(d, source, target) for d in dists)
    except OSError as exc:  # e.g. another file system: install the same versions instead
        print(f"hard links failed ({exc}); installing torch with pip", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(new_env)
        pins = [f"{n}=={md.version(n)}" for n in ("torch", "torchvision")]
        python = new_env / "bin" / "python"
        subprocess.run([python, "-m", "pip", "install", "--quiet", *pins], check=True)
        return
    print(f"linked {len(dists)} distributions ({files} files) into {target}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]).resolve())
