"""``python train.py --help``: a description and the README's everyday commands, fast (issue 26)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT, subprocess_env

# Runs train.py as `python train.py --help` does, then says whether torch was imported.
PROBE = (
    "import runpy, sys\n"
    "sys.argv = ['train.py', '--help']\n"
    "try:\n"
    "    runpy.run_path('train.py', run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    assert not e.code, e.code\n"
    "print('TORCH IMPORTED' if 'torch' in sys.modules else 'NO TORCH')\n"
)


def test_help_has_description_groups_and_the_readme_commands():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert out.startswith("train.py: fully sparse 2:4 training")
    assert "sparsity: asfp, asp, dense" in out and "Everyday commands" in out
    assert out.rstrip().endswith("NO TORCH"), "--help imported torch (slow)"
    # Every command --help lists is one of README.md's, as written there.
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^  (python \S+.*?)(?:\s+#.*)?$", out, re.M)
    assert len(commands) >= 6, out
    for cmd in commands:
        assert cmd in readme, f"--help shows {cmd!r}, README.md does not"
