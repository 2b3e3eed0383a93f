"""The contract between the engine's one training loop and a kind of model (a *task*).

The engine (``fst/engine/``) owns everything task-independent: devices, DDP, samplers, the
optimizer and schedule, autocast, gradient accumulation, checkpoints, logging. A task owns what a
batch *means*: which model and data to build, what one training step computes, how to evaluate.

A task is registered in ``fst.tasks.TASKS`` under the value of the top-level ``task`` config field
(``task: classification`` or ``task: detection``) and is constructed as ``TASKS[run.task](run)``
with the typed run config (``fst.engine.config.RunConfig``, from ``resolve_config``; a task reads
its ``model``, ``data``, ``loss`` and ``trainer`` parts). The engine then calls, in order::

    task = TASKS[run.task](run)
    data = task.build_data()                # DataBundle(train=Dataset, val=Dataset, collate_fn=...)
    model = task.build_model()              # plain nn.Module, before sparsification; may use
                                            # what build_data learned (e.g. the class count)
    # engine: fst.sparsify(model, ...), .to(device), DDP wrap, loaders with a resumable sampler
    losses = task.train_step(model, batch, device)   # {"loss": scalar tensor, ...}; engine does backward
    metrics = task.evaluate(model, val_loader, device)  # {"top1": ..., "loss": ...}; floats
                                            # (a METRICS[task.metric] fed batch by batch)
    metrics[task.primary_metric]            # the number that ranks checkpoints ("best")

``model`` in ``train_step`` may be a ``DistributedDataParallel`` wrapper (call it, don't reach into
it); in ``evaluate`` it is always the unwrapped module, run on rank 0 only, under ``torch.no_grad``
and ``model.eval()`` already set by the engine, with autocast active when configured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fst.metrics import METRICS, Metric
from fst.types import DataBundle

__all__ = ["DataBundle", "Task"]


class Task:
    """Base class for tasks. Subclasses implement the four methods and set ``primary_metric``.

    Attributes:
        run: the typed run config (``fst.engine.config.RunConfig``) the task was built from.
        primary_metric: key of ``evaluate``'s result used to pick the best checkpoint and
            reported as the run's headline number (e.g. ``"top1"`` or ``"map"``).
        higher_is_better: direction of ``primary_metric``.
        metric: key of :data:`fst.metrics.METRICS` that ``evaluate`` accumulates (a task may
            take it from its data in ``build_data``, as detection does).
        data: the data ``build_data`` built (None before it), which ``build_metric`` reads.
    """

    primary_metric: str = "loss"
    higher_is_better: bool = True
    metric: str = ""

    def __init__(self, run: Any):
        self.run = run
        self.num_classes: int | None = run.model.kwargs.get("num_classes")
        self.data: Any = None

    def build_model(self) -> nn.Module:
        """Return the dense model described by ``run.model`` (the engine sparsifies it)."""
        raise NotImplementedError

    def build_data(self) -> DataBundle:
        """Return the train/val datasets described by ``run.data``."""
        raise NotImplementedError

    def train_step(
        self, model: nn.Module, batch: Any, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """Move ``batch`` to ``device``, run the model, return its losses.

        Must return a dict with key ``"loss"`` (a scalar tensor with grad, averaged over the
        micro-batch); other entries (detached scalars) are logged as ``train/<key>``. Must not
        call ``backward`` or step the optimizer: the engine does (with accumulation and scaling).
        """
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device) -> dict[str, float]:
        """Evaluate ``model`` on every batch of ``loader``; return metrics as Python floats.

        Must include ``primary_metric``. Keys are logged as ``val/<key>``.
        """
        raise NotImplementedError

    def build_metric(self) -> Metric:
        """A fresh ``METRICS[self.metric]`` for one evaluation, built from ``self.data``."""
        return METRICS.get(self.metric).from_data(self.data)

    def batch_size(self, batch: Any) -> int:
        """Number of samples in ``batch`` (for img/s); default: length of its first element."""
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        if isinstance(first, Mapping):
            first = next(iter(first.values()))
        return len(first)

    def is_better(self, new: float, best: float | None) -> bool:
        """``True`` if ``new`` improves on ``best`` in the direction of ``primary_metric``."""
        if best is None:
            return True
        return new > best if self.higher_is_better else new < best
