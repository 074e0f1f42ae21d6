"""The user documentation: a short README that opens with the two set-up commands, README links that resolve, and
a docs site (docs/, mkdocs.yml) that builds with ``mkdocs build --strict``: no broken link or anchor, no page
missing from the nav (CI builds it too, in ``.ci/run``)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from helpers import REPO

README = REPO / "README.md"
MAX_README_LINES = 220
SETUP_COMMANDS = [
    'pip install -e ".[dev]" && python train.py experiment=madd_awdd',
    'pip install -e ".[dev]" && python -m pytest',
]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")


def test_readme_is_short_and_opens_with_the_setup_commands():
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move text to docs/"
    )
    first_block = FENCE.search(text)
    assert first_block, "README.md has no code block"
    assert [line.strip() for line in first_block.group(1).splitlines()[:2]] == SETUP_COMMANDS
    # nothing but the title comes before that block
    before = [line for line in text[: first_block.start()].splitlines() if line.strip()]
    assert len(before) == 1 and before[0].startswith("# "), before


def _relative_links(markdown: str) -> list[str]:
    prose = FENCE.sub("", markdown)
    prose = re.sub(r"`[^`\n]*`", "", prose)  # links inside code spans are not links
    targets = [m.group(1) for m in LINK.finditer(prose)]
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def test_link_parser_sees_relative_links_only():
    sample = "[a](docs/x.md#y) [b](https://e.org) ![c](img.png) [d](#top) `[e](f.md)`\n```\n[g](h.md)\n```\n"
    assert _relative_links(sample) == ["docs/x.md#y", "img.png"]


def test_every_relative_readme_link_points_to_a_file():
    links = _relative_links(README.read_text())
    assert links, "README.md links to no docs page"
    missing = []
    for link in links:
        path = re.split(r"[#?]", link, maxsplit=1)[0]
        if path and not (README.parent / path).exists():
            missing.append(link)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_docs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip('mkdocs is not installed: it comes with the dev extras (pip install -e ".[dev]")')
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (site / "index.html").is_file()
    assert (site / "methods" / "madd" / "index.html").is_file()


def _table(markdown: str, header: str) -> list[str]:
    lines = markdown.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def test_madd_code_map_names_every_file_of_the_method_folder():
    """The method folder's README table (paper component -> file -> equations) is the one on the docs page, and it
    names every module of ``src/madd/models/madd/``."""
    header = "| paper component | file | equations |"
    folder = REPO / "src" / "madd" / "models" / "madd"
    in_folder = _table((folder / "README.md").read_text(), header)
    assert in_folder == _table((REPO / "docs" / "methods" / "madd.md").read_text(), header)
    named = set(re.findall(r"`(\w+\.py)`", "\n".join(in_folder)))
    modules = {p.name for p in folder.glob("*.py")} - {"__init__.py"}
    assert named == modules, f"missing from the table: {sorted(modules - named)}, gone: {sorted(named - modules)}"
