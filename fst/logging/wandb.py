"""Weights & Biases, offline by default: the run is written under ``<run dir>/wandb``.

Never asks for or stores credentials; online mode uses whatever ``wandb login`` the user did.
Any failure to import or start W&B is a warning, not an error: ``metrics.jsonl`` stays complete.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class WandbWriter:
    """Thin wrapper over a ``wandb`` run; ``ok`` is False when W&B could not start."""

    def __init__(
        self,
        run_dir: Path,
        config: dict[str, Any],
        *,
        name: str,
        mode: str = "offline",
        project: str = "fst",
        entity: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
    ):
        self.run = None
        id_file = run_dir / "wandb_id.txt"
        try:
            import wandb
        except Exception as e:  # noqa: BLE001 - logging must never stop training
            log.warning(
                "W&B unavailable (%s: %s); logging to metrics.jsonl only", type(e).__name__, e
            )
            return
        # A resumed run continues the same W&B run (same id) instead of starting a new one.
        # A run started by a W&B sweep agent must use the agent's run id (WANDB_RUN_ID), or
        # the sweep never sees its run.
        run_id = (
            id_file.read_text().strip()
            if id_file.exists()
            else os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8]
        )
        os.environ.setdefault("WANDB_SILENT", "true")
        # An unreachable service must not cost the run its W&B record: fall back to offline.
        for attempt in [mode] + (["offline"] if mode != "offline" else []):
            try:
                self.run = wandb.init(
                    project=project,
                    entity=entity,
                    group=group,
                    tags=list(tags or []),
                    name=name,
                    id=run_id,
                    resume="allow",
                    mode=attempt,
                    dir=str(run_dir),
                    config=config,
                    settings=wandb.Settings(console="off", x_disable_stats=True),
                )
                id_file.write_text(run_id)
                return
            except Exception as e:  # noqa: BLE001 - logging must never stop training
                nxt = "falling back to offline" if attempt != "offline" else "metrics.jsonl only"
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                log.warning(
                    "W&B %s start failed (%s: %s); %s", attempt, type(e).__name__, first, nxt
                )
                self.run = None
                # The failed run keeps its id registered in W&B's service process, and an
                # offline run with the same id is then refused ("run ID ... is in use"):
                # shut the service down so the fallback starts clean (same id: `wandb sync`
                # later uploads it as this run).
                try:
                    wandb.teardown()
                except Exception:  # noqa: BLE001
                    pass

    @property
    def ok(self) -> bool:
        return self.run is not None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as e:  # noqa: BLE001
            log.warning("W&B log failed (%s); continuing with metrics.jsonl only", e)
            self.run = None

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            for k, v in values.items():
                if isinstance(v, (int, float, str, bool)):
                    self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            try:
                self.run.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                log.warning("W&B finish failed (%s)", e)
            self.run = None
