"""Sphinx configuration of the twinfold documentation site.

Build (warnings are errors, as in CI)::

    pip install -e "core[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html

The reference pages in ``reference/`` (configuration, presets, hooks) are generated from
the code and committed, so they also read on the repository page; regenerate them with
``python docs/_ext/twinfold_docgen.py`` (``tests/test_docs.py`` fails while they are
stale). The build itself imports nothing of twinfold.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent

project = "twinfold"
author = "the twinfold authors"
copyright = "the twinfold authors, Apache-2.0"

extensions = ["myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "_ext", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# furo: a search box, light and dark modes (following the system, with a toggle), and a
# content column wide enough for the minimal plugins and config examples (_static/)
html_theme = "furo"
html_title = "twinfold"
html_static_path = ["_static"]
html_css_files = ["twinfold.css"]

MAIN_PAGES = [
    "quickstart",
    "concepts",
    "python-api",
    "methods",
    "distributed",
    "speed",
    "writing-a-plugin",
    "plugins",
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
