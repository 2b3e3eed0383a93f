"""What a run is, in one flat dict: the fields ``summary.json``, every checkpoint's ``meta`` and
``eval.py``'s metrics file all carry (one definition, so the three never disagree)."""

from __future__ import annotations

from typing import Any

#: Datasets generated or bundled locally; results on them are labelled embedded-data results.
EMBEDDED_DATASETS = ("digits", "digits_hard", "shapes")


def run_record(cfg: Any) -> dict[str, Any]:
    """``name, task, model, dataset, strategy, backend`` of a run config."""
    return {
        "name": str(cfg.name),
        "task": str(cfg.task),
        "model": str(cfg.model.name),
        "dataset": str(cfg.data.name),
        "strategy": str(cfg.sparsity.strategy),
        "backend": str(cfg.backend.name),
    }


def run_meta(cfg: Any, num_classes: int | None) -> dict[str, Any]:
    """What a checkpoint records about the run (compared on resume, shown by eval.py)."""
    meta = run_record(cfg)
    meta.pop("name")
    return {**meta, "num_classes": num_classes}
