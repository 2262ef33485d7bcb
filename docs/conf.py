"""Sphinx configuration of the twinfold documentation site.

Build (warnings are errors, as in CI)::

    pip install -e "core[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The reference pages (hooks, configuration, presets) are generated from the installed code
when the build starts (``_ext/twinfold_docgen.py``), so the installed plugins appear in them.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

project = "twinfold"
author = "the twinfold authors"
copyright = "the twinfold authors, Apache-2.0"

extensions = ["myst_parser", "twinfold_docgen"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_ext", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
html_theme = "alabaster"
html_theme_options = {"description": "non-contrastive self-supervised learning, pluggable"}
html_title = "twinfold"
pygments_style = "sphinx"

# Pages in the main table of contents (index.md); every other top-level page in docs/
# (results, evaluation, benchmarks, reliability, ... as they appear) is listed after them
# by a generated toctree, so a new page never breaks the build for not being in a toctree.
MAIN_PAGES = [
    "quickstart",
    "concepts",
    "python-api",
    "configuration",
    "methods",
    "distributed",
    "writing-a-plugin",
    "plugins",
    "hooks",
    "presets",
    "architecture",
]
FIRST_EXTRA = ["results", "evaluation"]


def _extra_pages() -> list[str]:
    found = sorted(p.stem for p in HERE.glob("*.md") if p.stem not in {"index", *MAIN_PAGES})
    return [p for p in FIRST_EXTRA if p in found] + [p for p in found if p not in FIRST_EXTRA]


def _write_extra_toc(app: object) -> None:
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    pages = _extra_pages()
    text = ""
    if pages:
        entries = "".join(f"{p}\n" for p in pages)
        text = f"```{{toctree}}\n:maxdepth: 2\n:caption: Results and operations\n\n{entries}```\n"
    path = out / "extra-toc.md"
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)


def setup(app: object) -> None:
    app.connect("builder-inited", _write_extra_toc)  # type: ignore[attr-defined]
