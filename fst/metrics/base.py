"""The validation-metric contract and its registry, ``METRICS``.

A task's ``evaluate`` runs the model over the validation loader and hands each batch's outputs
to one :class:`Metric`, which reduces them to the ``{name: float}`` the engine logs as
``val/<name>``::

    metric = METRICS[key].from_data(data)   # data: what the task's build_data returned
    for batch in loader:
        metric.update(preds, targets)        # what the task's model returned, and the truth
    metrics = metric.compute()               # {"top1": ..., "loss": ...} or {"mAP": ..., ...}

The key is chosen by the data (``DetectionData.metric``: ``coco`` or ``voc``) or by the task
(classification: ``accuracy``).
"""

from __future__ import annotations

from typing import Any

from fst.registry import Registry

__all__ = ["METRICS", "Metric"]


class Metric:
    """Accumulates one evaluation batch by batch. Subclasses implement the three methods and,
    when they need the ground truth or the class count, :meth:`from_data`."""

    def __init__(self) -> None:
        self.reset()

    @classmethod
    def from_data(cls, data: Any) -> Metric:
        """The metric for the task's ``data`` (its ``build_data()`` result; None before it).
        Default: one that needs nothing of it."""
        return cls()

    def reset(self) -> None:
        """Forget every batch seen (called by ``__init__``)."""
        raise NotImplementedError

    def update(self, preds: Any, targets: Any) -> None:
        """Add one batch: the model's outputs and the ground truth, as the task holds them."""
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        """The metrics of every batch seen, as Python floats; ``ValueError`` if there was none."""
        raise NotImplementedError


#: ``METRICS[key]`` is a :class:`Metric` subclass; build one with ``.from_data(data)``.
METRICS: Registry[type[Metric]] = Registry("metric")
