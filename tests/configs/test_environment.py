"""environment.yml (conda) and pyproject.toml agree; .ci/run runs the README's test command."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from tests.conftest import ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the project supports 3.10


def _pip_deps() -> list[str]:
    env = OmegaConf.to_container(OmegaConf.load(ROOT / "environment.yml"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return [p for p in pip if not p.startswith("-e")]


def test_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if name != "mmdet":  # needs mmcv built from source: scripts/install_mmdet.sh, not conda
            wanted += extra
    assert sorted(set(_pip_deps())) == sorted(set(wanted))


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^pip install .*$", readme, flags=re.M)
    test_cmd = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()
    assert "set -euo pipefail" in ci
    assert any("python train.py" in c for c in commands)  # the first command trains
