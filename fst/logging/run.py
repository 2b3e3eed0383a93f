"""``RunLogger``: what the engine logs, written to ``metrics.jsonl`` and (optionally) W&B."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .jsonl import JsonlWriter, write_failed
from .wandb import WandbWriter


class RunLogger:
    """Logs scalar dicts with a global step. Inactive (writes nothing) on ranks other than 0.

    Args:
        run_dir: the run directory; ``metrics.jsonl`` and ``summary.json`` go there.
        config: the resolved config (a plain dict), logged to W&B.
        wandb_cfg: the ``logger.wandb`` group (``None``: no W&B).
        resume_step: a resumed run's global step; later records are dropped from the file.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        config: dict[str, Any],
        *,
        name: str,
        wandb_cfg: dict[str, Any] | None = None,
        active: bool = True,
        resume_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.active = active
        self.t0 = time.time()
        self.jsonl = JsonlWriter(self.run_dir / "metrics.jsonl") if active else None
        self.wandb = None
        if not active:
            return
        if resume_step is not None:
            self.jsonl.truncate_after(resume_step)
        if wandb_cfg is not None and wandb_cfg.get("mode") != "disabled":
            self.wandb = WandbWriter(self.run_dir, config, name=name, **wandb_cfg)

    def log(self, metrics: dict[str, Any], step: int, epoch: int | None = None) -> None:
        if not self.active:
            return
        rec = {"step": step, "epoch": epoch, "time": round(time.time() - self.t0, 3), **metrics}
        self.jsonl.write(rec)
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)

    def write_summary(self, summary: dict[str, Any]) -> Path | None:
        """Write ``summary.json`` (atomically) and mirror scalar entries to the W&B summary."""
        if not self.active:
            return None
        path = self.run_dir / "summary.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise write_failed(path, e) from None
        if self.wandb is not None:
            self.wandb.summary(summary)
        return path

    def finish(self, exit_code: int = 0) -> None:
        if self.wandb is not None:
            self.wandb.finish(exit_code)
