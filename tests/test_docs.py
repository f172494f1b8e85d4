"""The project's documentation lives in the project: README.md and docs/.

Nothing in the repository points outside it (a clone has no ``../shared``), every relative
link resolves to a file of the repository, and the API reference names every public name.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbwork

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCANNED = ("README.md", "*.md", "docs/**/*", "notebooks/**/*.ipynb", "nbwork/**/*.py",
           "tests/**/*.py", "bench/**/*.py", "tools/**/*.py", "pyproject.toml", ".ci/*")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _files() -> list[Path]:
    found = {p for pattern in SCANNED for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(p for p in found if p != Path(__file__).resolve())


def test_nothing_points_outside_the_repository():
    outside = "../" + "shared"  # spelled in two parts, so this file does not match itself
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _files()
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             if outside in line]
    assert not found, f"these lines point at {outside}, which a clone does not have: {found}"


def test_the_readme_links_every_doc_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    docs = sorted(p.name for p in DOCS.glob("*.md"))
    assert {"concepts.md", "api.md", "semantics.md", "cli.md", "architecture.md",
            "testing.md"} <= set(docs)
    for name in docs:
        assert f"(docs/{name})" in readme, f"README.md does not link docs/{name}"
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{page.name} links outside the repo: {target}"
            assert path.exists(), f"{page.name} links a missing file: {target}"


def test_the_api_reference_names_every_public_name():
    reference = (DOCS / "api.md").read_text()
    missing = [name for name in nbwork.__all__ if f"`{name}" not in reference]
    assert not missing, f"docs/api.md does not describe {missing}"
