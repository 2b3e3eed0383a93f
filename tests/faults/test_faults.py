"""The fault table, run: each fault's exit status, its message (cause and fix), and that no
earlier result was lost. See ``tests/faults/table.py`` for the faults and the harness."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.faults.harness import Env, build_template, digest
from tests.faults.table import AREAS, FAULTS, markdown_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def earlier_template(tmp_path_factory) -> Path:
    return build_template(tmp_path_factory.mktemp("earlier"))


def _params() -> list:
    """A list, not a generator (pytest deprecates generators as parametrize values)."""
    params = []
    for f in FAULTS:
        marks = [pytest.mark.slow] if f.slow else []
        if "skip_if_cuda" in f.marks:
            marks.append(pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA"))
        params.append(pytest.param(f, id=f.id, marks=marks))
    return params


def _kept(env: Env) -> None:
    """No earlier result lost: every file of the earlier run holds the same bytes (for faults
    that continue it on purpose: its metrics before the resume point)."""
    if "prefix" in env.before:
        lines = (env.earlier / "metrics.jsonl").read_text().splitlines()
        n = len(env.before["metrics.jsonl"].splitlines())
        assert "\n".join(lines[:n]) == env.before["metrics.jsonl"]
        return
    assert digest(env.earlier) == env.before


@pytest.mark.parametrize("fault", list(_params()))
def test_fault(fault, earlier_template, tmp_path, capfd, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may land in the checkout
    env = Env(tmp_path, earlier_template, capfd, caplog)
    result = fault.act(env)
    assert result.status == fault.status, result
    for fragment in (*fault.message, *fault.fix):
        assert fragment in result.text, f"{fragment!r} not in:\n{result}"
    assert "Traceback" not in result.text or fault.area == "ddp", result
    if fault.check is not None:
        fault.check(env, result)
    _kept(env)


def test_table_covers_every_area_with_150_faults():
    assert len(FAULTS) >= 150
    assert len({f.id for f in FAULTS}) == len(FAULTS)
    assert {f.area for f in FAULTS} == set(AREAS)


def test_docs_show_the_table():
    """docs/faults.md holds the table (README.md's "When things go wrong" links to it)."""
    doc = (ROOT / "docs" / "faults.md").read_text()
    found = re.search(r"<!-- faults-table:start -->\n(.*?)<!-- faults-table:end -->", doc, re.S)
    assert found, "docs/faults.md lacks the faults table markers"
    assert found.group(1) == markdown_table(), "regenerate it: python tests/faults/table.py"
    assert "docs/faults.md" in (ROOT / "README.md").read_text()
