"""README.md's layout (issue 26): under 30 KB, a table of contents that reaches every section,
set-up and the everyday commands first, links to docs/ that resolve, no stale test counts."""

from __future__ import annotations

import re

from tests.conftest import ROOT

README = ROOT / "README.md"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def test_readme_is_small_with_contents_first():
    text = README.read_text()
    assert len(text.encode()) < 30_000, f"README.md is {len(text.encode())} bytes"
    sections = re.findall(r"^## (.+)$", text, re.M)
    contents = text[: text.index("\n## ")]
    assert "**Contents:**" in contents
    for title in sections:  # every section is linked from the contents
        assert f"(#{_anchor(title)})" in contents, title
    # Set-up, then the everyday commands, within the first screens.
    assert sections[:2] == ["Set-up", "Everyday commands"], sections
    assert text.index("## Everyday commands") < 5_000


def test_links_to_docs_resolve_and_no_hard_test_counts():
    for md in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        text = md.read_text()
        for target in re.findall(r"\]\(([^)#\s:]+\.(?:md|png))(?:#[^)]*)?\)", text):
            assert (md.parent / target).is_file(), f"{md.name}: broken link {target}"
    # The suite's test counts and time go stale with every test added: not stated as numbers
    # (dated measurements in docs/ that name their record, results/..., are another matter).
    text = README.read_text()
    assert not re.search(r"\d[\d,]* passed, \d[\d,]* skipped", text)
    assert not re.search(r"pytest -q`? ran \d", text)
