"""``import fst`` works without the optional frameworks of ``fst.integrations``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_fst_loads_no_mmdet():
    code = (
        "import sys, fst, fst.integrations; "
        "bad = [m for m in ('mmdet', 'mmcv', 'mmengine') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
