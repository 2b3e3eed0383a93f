"""Image classification: cross-entropy (optional label smoothing) training, top-1/top-5 evaluation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fst.data import DATASETS
from fst.models import MODELS
from fst.types import ConfigError

from . import TASKS
from .base import DataBundle, Task


@TASKS.register("classification")
class ClassificationTask(Task):
    """Batches are ``(images [B, 3, H, W], labels [B])``; metrics ``top1``/``top5`` in percent."""

    primary_metric = "top1"
    higher_is_better = True
    metric = "accuracy"

    def __init__(self, run):
        super().__init__(run)
        self.label_smoothing = float(run.loss.label_smoothing)
        self.channels_last = bool(run.trainer.channels_last)

    def build_data(self) -> DataBundle:
        data = DATASETS.get(self.run.data.name)(**self.run.data.kwargs)
        if data.num_classes is not None and data.num_classes < 2:
            raise ConfigError(
                f"data={self.run.data.name} has {data.num_classes} class: a classifier needs at "
                "least 2 (check data.root and the class folders under train/)"
            )
        if self.num_classes is None:
            self.num_classes = data.num_classes
        self.data = data
        return data

    def build_model(self) -> nn.Module:
        kwargs = dict(self.run.model.kwargs)
        if "num_classes" in kwargs and kwargs["num_classes"] is None:
            kwargs["num_classes"] = self.num_classes
        return MODELS.get(self.run.model.name)(**kwargs)

    def _to(self, batch, device: torch.device):
        images, labels = batch
        images = images.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels.to(device, non_blocking=True)

    def train_step(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, labels = self._to(batch, device)
        logits = model(images)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            acc = (logits.argmax(1) == labels).float().mean() * 100
        return {"loss": loss, "top1": acc}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """Top-1/top-5 accuracy (%) and mean cross-entropy (without label smoothing)."""
        metric = self.build_metric()
        for batch in loader:
            images, labels = self._to(batch, device)
            metric.update(model(images), labels)
        return metric.compute()
