"""What a run is, in one flat dict: the fields ``summary.json``, every checkpoint's ``meta`` and
``eval.py``'s metrics file all carry (one definition, so the three never disagree)."""

from __future__ import annotations

import hashlib
from typing import Any

#: Datasets generated or bundled locally; results on them are labelled embedded-data results.
EMBEDDED_DATASETS = ("digits", "digits_hard", "shapes")


def run_record(cfg: Any) -> dict[str, Any]:
    """``name, task, model, dataset, strategy, backend`` of a run config (the composed
    ``DictConfig`` or the typed ``fst.engine.config.RunConfig``)."""
    strategy = cfg.sparsity.strategy
    return {
        "name": str(cfg.name),
        "task": str(cfg.task),
        "model": str(cfg.model.name),
        "dataset": str(cfg.data.name),
        "strategy": str(getattr(strategy, "name", strategy)),
        "backend": str(cfg.backend.name),
    }


def run_meta(cfg: Any, num_classes: int | None) -> dict[str, Any]:
    """What a checkpoint records about the run (compared on resume, shown by eval.py)."""
    meta = run_record(cfg)
    meta.pop("name")
    return {**meta, "num_classes": num_classes}


def data_fingerprint(dataset: Any) -> dict[str, Any]:
    """What identifies a data set independently of where it is stored: its size and, for an
    ImageFolder (``.samples``, through wrappers' ``.dataset``), a hash of every sample's
    ``class/file`` name and label. A resume compares it with the checkpoint's, so ``data.root``
    may move the same data but not point at other data."""
    out: dict[str, Any] = {"samples": len(dataset)}
    node, seen = dataset, 0
    while node is not None and not hasattr(node, "samples") and seen < 8:
        node, seen = getattr(node, "dataset", None), seen + 1
    samples = getattr(node, "samples", None)
    if isinstance(samples, list) and samples and isinstance(samples[0], tuple):
        h = hashlib.sha1()
        for path, label in samples:
            parts = str(path).replace("\\", "/").rsplit("/", 2)[-2:]
            h.update(f"{'/'.join(parts)}\t{label}\n".encode("utf-8", "surrogateescape"))
        out["files_sha1"] = h.hexdigest()
    return out
