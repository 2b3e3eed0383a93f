"""``metrics.jsonl``: one JSON object per logging call, the source of truth for result tables."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from fst.types import FstError


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/Inf; keep them visible as strings
    return v


class JsonlWriter:
    """Append records ``{"step": ..., "epoch": ..., "time": ..., **metrics}`` to ``path``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (a resumed run re-does those steps)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if rec.get("step", 0) <= step:
                keep.append(line)
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(k + "\n" for k in keep))
        os.replace(tmp, self.path)

    def write(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        except OSError as e:
            raise write_failed(self.path, e) from None


def write_failed(path: Path, e: OSError) -> FstError:
    """The error for a failed write of a run file: cause, file, fix."""
    return FstError(
        f"cannot write {path}: {e.strerror or e} (errno {e.errno}). Free space under "
        f"{path.parent} (or point output_root= to a larger disk), then continue the run with "
        "resume=auto (it restarts from the newest checkpoint)"
    )


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (torn lines skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
