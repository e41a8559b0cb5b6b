"""docs/architecture.md stays true to the tree: every path it names exists, every section the
code cites exists, and nothing cites a design document the repository does not carry."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
SOURCES = [p for p in (REPO / "visbricks").rglob("*") if p.suffix in (".py", ".yaml")]
SOURCES += list((REPO / "tests").glob("*.py")) + list((REPO / "bench").glob("*.py"))


def _sections() -> set[int]:
    return {int(m[1]) for m in re.finditer(r"^## (\d+)\. ", DOC.read_text(), re.M)}


def test_every_path_the_architecture_names_exists():
    named = set(re.findall(r"`([\w./-]+(?:\.py|\.md|/))`", DOC.read_text()))
    named |= set(
        re.findall(
            r"`((?:visbricks|tasks|engine|data|models|metrics|deploy|ops)"
            r"/[\w./-]+)`",
            DOC.read_text(),
        )
    )
    assert len(named) > 30
    missing = [
        p for p in sorted(named)
        if not any((base / p).exists() for base in (REPO, REPO / "visbricks"))
    ]  # fmt: skip
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"


def test_code_cites_sections_that_exist_and_no_missing_design_document():
    sections = _sections()
    assert sections == set(range(1, 11))
    dangling, cited = [], 0
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bDESIGN\.md\b", text) and path.name != "test_docs.py":
            dangling.append(str(path.relative_to(REPO)))
        for m in re.finditer(r"docs/architecture\.md §(\d+)", text):
            cited += 1
            assert int(m[1]) in sections, f"{path}: cites §{m[1]}, which does not exist"
    assert not dangling, f"cite docs/architecture.md, not DESIGN.md: {dangling}"
    assert cited >= 10
