"""Validation metrics. ``METRICS[key].from_data(data)`` accumulates a task's evaluation
(:mod:`fst.metrics.base`): ``accuracy`` (classification top-1/top-5 and loss), ``coco`` (COCO box
AP) and ``voc`` (PASCAL VOC mAP@0.5).

Detection metrics take per-image predictions ``{"boxes": [N, 4] xyxy, "scores": [N], "labels":
[N]}`` in the pixel coordinates of the original image (what torchvision detectors return in eval
mode).
"""

from fst.metrics import classification, coco, voc  # noqa: F401  (fill METRICS)
from fst.metrics.base import METRICS, Metric
from fst.metrics.classification import Accuracy
from fst.metrics.coco import CocoBoxAP, coco_box_ap
from fst.metrics.voc import VocMAP, voc_ap, voc_map

__all__ = [
    "METRICS",
    "Metric",
    "Accuracy",
    "CocoBoxAP",
    "VocMAP",
    "coco_box_ap",
    "voc_ap",
    "voc_map",
]
