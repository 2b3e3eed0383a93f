"""Object detection: torchvision detectors' loss dicts in training, COCO box AP or VOC mAP@0.5 in
evaluation.

Batches are ``(images, targets)`` lists (``fst.data.detection.collate``): ``images[i]`` is a
``float32 [3, H_i, W_i]`` tensor in ``[0, 1]``, ``targets[i]`` a dict with ``boxes [N_i, 4]``
(xyxy pixels), ``labels [N_i]`` (1..K) and ``image_id``. Images keep their own sizes; the
detector resizes and batches them internally.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from fst.data import DATASETS
from fst.data.detection import collate
from fst.logging.progress import track
from fst.models import MODELS
from fst.types import ConfigError

from . import TASKS
from .base import DataBundle, Task

log = logging.getLogger(__name__)


def _to(targets: list[dict], device: torch.device) -> list[dict]:
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


@TASKS.register("detection")
class DetectionTask(Task):
    """``train_step`` returns the detector's losses (``loss`` = their sum, plus each component,
    e.g. ``loss_classifier``/``loss_box_reg``/``loss_objectness``/``loss_rpn_box_reg`` for Faster
    R-CNN, ``bbox_regression``/``classification`` for SSD); ``evaluate`` returns, in percent as
    the paper's Table 4, ``mAP`` (COCO AP@[.5:.95], or VOC mAP@0.5 on VOC), ``AP50`` and, for
    COCO-format data, ``AP75`` and ``APs``/``APm``/``APl`` (left out when the validation set has
    no box of that size)."""

    primary_metric = "mAP"
    higher_is_better = True

    def build_data(self) -> DataBundle:
        self.data = DATASETS.get(self.run.data.name)(**self.run.data.kwargs)
        if self.num_classes is None:
            self.num_classes = self.data.num_classes
        elif self.num_classes != self.data.num_classes:
            raise ConfigError(
                f"model.num_classes={self.num_classes} but the {self.run.data.name} data has "
                f"{self.data.num_classes} classes; set model.num_classes=null to infer it"
            )
        self.metric = self.data.metric  # the data's METRICS key: "coco" or "voc"
        return DataBundle(
            self.data.train, self.data.val, collate_fn=collate, num_classes=self.num_classes
        )

    def build_model(self) -> nn.Module:
        kwargs = dict(self.run.model.kwargs)
        if kwargs.get("num_classes") is None:
            if self.num_classes is None:
                raise ValueError("model.num_classes is null: call build_data() first or set it")
            kwargs["num_classes"] = self.num_classes
        return MODELS.get(self.run.model.name)(**kwargs)

    def train_step(self, model: nn.Module, batch, device: torch.device) -> dict[str, torch.Tensor]:
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        losses = model(images, _to(targets, device))
        out = {k: v.float() for k, v in losses.items()}
        total = sum(out.values())
        return {"loss": total, **{k: v.detach() for k, v in out.items()}}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device) -> dict[str, float]:
        """Detect on every batch of ``loader`` and score with the data's metric."""
        if self.data is None:
            raise RuntimeError("evaluate() needs build_data() first (it holds the ground truth)")
        metric = self.build_metric()
        shown = []
        show_bar = self.run.trainer.progress_bar
        for images, targets in track(loader, "eval", unit="batch", leave=False, enabled=show_bar):
            out = model([im.to(device, non_blocking=True) for im in images])
            out = [
                {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in o.items()}
                for o in out
            ]
            metric.update(out, targets)
            if len(shown) < self.data.log_images:
                shown += list(zip(images, targets, out))[: self.data.log_images - len(shown)]
        metrics = metric.compute()
        if shown:
            self._log_images(shown)
        return metrics

    def _log_images(self, shown: list[tuple[torch.Tensor, dict, dict[str, Any]]]) -> None:
        """A few validation images with predicted (score >= 0.3) and true boxes, to the active
        W&B run (merged into the engine's next ``val/`` record); nothing without one."""
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is None:
            return
        names = {i + 1: n for i, n in enumerate(self.data.class_names)}
        pics = []
        for image, target, pred in shown:
            h, w = image.shape[-2:]
            keep = pred["scores"] >= 0.3

            def boxes(bx, labels, scores=None, w=w, h=h):
                return [
                    {
                        "position": {
                            "minX": b[0] / w,
                            "minY": b[1] / h,
                            "maxX": b[2] / w,
                            "maxY": b[3] / h,
                        },
                        "class_id": int(c),
                        "box_caption": names.get(int(c), str(int(c)))
                        + (f" {s:.2f}" if s is not None else ""),
                        **({"scores": {"score": float(s)}} if s is not None else {}),
                    }
                    for b, c, s in zip(
                        bx.tolist(),
                        labels.tolist(),
                        scores.tolist() if scores is not None else [None] * len(bx),
                    )
                ]

            pics.append(
                wandb.Image(
                    image.float().clamp(0, 1).permute(1, 2, 0).cpu().numpy(),
                    boxes={
                        "predictions": {
                            "box_data": boxes(
                                pred["boxes"][keep], pred["labels"][keep], pred["scores"][keep]
                            ),
                            "class_labels": names,
                        },
                        "ground_truth": {
                            "box_data": boxes(target["boxes"], target["labels"]),
                            "class_labels": names,
                        },
                    },
                )
            )
        try:
            wandb.run.log({"val/predictions": pics}, commit=False)
        except Exception as e:  # noqa: BLE001 - logging must never stop training
            log.warning("could not log validation images to W&B (%s)", e)
