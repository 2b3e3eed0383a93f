"""Evaluation metrics for detection: COCO box AP (``coco``) and PASCAL VOC mAP@0.5 (``voc``).

Both take per-image predictions ``{"boxes": [N, 4] xyxy, "scores": [N], "labels": [N]}`` in the
pixel coordinates of the original image (what torchvision detectors return in eval mode).
"""

from .coco import coco_box_ap
from .voc import voc_ap, voc_map

__all__ = ["coco_box_ap", "voc_ap", "voc_map"]
