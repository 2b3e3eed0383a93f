"""PASCAL VOC detection mAP (the VOC devkit's rules, re-implemented).

Per class, detections of all images are ranked by score; a detection is a true positive if its
IoU with an unmatched ground-truth box of that class in its image is above ``iou_threshold``
(0.5), a false positive otherwise (or if that box was already matched). Detections whose best
match is a ``difficult`` box count as neither; difficult boxes are not in the positives.

Boxes are continuous ``(x1, y1, x2, y2)``: the devkit's ``+1`` in widths belongs to its 1-based
inclusive pixel corners, which ``fst.data.detection`` converts to this convention on load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fst.metrics.base import METRICS, Metric


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision from a ranked list's ``recall`` and ``precision`` ([D] each, in rank order).

    ``use_07_metric=True``: VOC2007's 11-point interpolation, mean over t in {0, 0.1, ..., 1} of
    the best precision at recall >= t. ``False``: the area under the monotone precision envelope
    (VOC2010+).
    """
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        ap = 0.0
        for t in np.linspace(0, 1, 11):
            p = precision[recall >= t - 1e-12]
            ap += (p.max() if p.size else 0.0) / 11
        return float(ap)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with boxes [G, 4] -> [G]."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    return inter / np.maximum(union, np.finfo(float).eps)


def voc_map(
    predictions: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> dict:
    """VOC mAP over images.

    Args:
        predictions: per image ``{"boxes": [N, 4], "scores": [N], "labels": [N] in 1..num_classes}``.
        ground_truths: per image (same order) ``{"boxes": [G, 4], "labels": [G]}``, optionally
            ``"difficult": bool [G]``.
        num_classes: K (labels 1..K; 0 is background and never scored).

    Returns:
        ``{"mAP": mean AP over classes with at least one non-difficult box, "AP": [K] per-class AP
        (NaN for classes without ground truth)}``.
    """
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{len(predictions)} predictions for {len(ground_truths)} images")
    aps = np.full(num_classes, np.nan)
    gts = []
    for g in ground_truths:
        boxes = _np(g["boxes"]).reshape(-1, 4).astype(float)
        diff = _np(g.get("difficult", np.zeros(len(boxes), bool))).astype(bool)
        gts.append((boxes, _np(g["labels"]).astype(int), diff))
    for c in range(1, num_classes + 1):
        npos = sum(int(((lab == c) & ~diff).sum()) for _, lab, diff in gts)
        if npos == 0:
            continue
        dets = []  # (score, image index, box)
        for i, p in enumerate(predictions):
            lab = _np(p["labels"]).astype(int)
            boxes, scores = _np(p["boxes"]).reshape(-1, 4), _np(p["scores"])
            dets += [(float(s), i, b) for s, b in zip(scores[lab == c], boxes[lab == c])]
        dets.sort(key=lambda d: -d[0])  # stable: ties keep image order, as the devkit's argsort
        matched = {i: np.zeros(int((lab == c).sum()), bool) for i, (_, lab, _) in enumerate(gts)}
        tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
        for d, (_, i, box) in enumerate(dets):
            gboxes, glab, gdiff = gts[i]
            sel = glab == c
            gb, gd = gboxes[sel], gdiff[sel]
            if len(gb) == 0:
                fp[d] = 1
                continue
            ious = _iou(np.asarray(box, float), gb)
            j = int(ious.argmax())
            if ious[j] > iou_threshold:
                if gd[j]:
                    continue
                if not matched[i][j]:
                    tp[d], matched[i][j] = 1, True
                else:
                    fp[d] = 1
            else:
                fp[d] = 1
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / npos
        precision = tp / np.maximum(tp + fp, np.finfo(float).eps)
        aps[c - 1] = voc_ap(recall, precision, use_07_metric)
    valid = aps[~np.isnan(aps)]
    return {"mAP": float(valid.mean()) if valid.size else 0.0, "AP": aps.tolist()}


@METRICS.register("voc")
class VocMAP(Metric):
    """:func:`voc_map` over an evaluation, in percent: ``update(preds, targets)`` with per-image
    predictions and ground truths; ``compute()`` -> ``{"mAP", "AP50"}`` (both mAP@0.5)."""

    def __init__(self, num_classes: int, use_07_metric: bool = True):
        self.num_classes, self.use_07_metric = num_classes, use_07_metric
        super().__init__()

    @classmethod
    def from_data(cls, data) -> VocMAP:
        """``data``: ``num_classes`` and ``extra["use_07_metric"]`` (default True)."""
        return cls(data.num_classes, use_07_metric=data.extra.get("use_07_metric", True))

    def reset(self) -> None:
        self.preds: list[Mapping] = []
        self.targets: list[Mapping] = []

    def update(self, preds: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        self.preds += preds
        self.targets += targets

    def compute(self) -> dict[str, float]:
        if not self.preds:
            raise ValueError("the validation loader is empty")
        voc = voc_map(self.preds, self.targets, self.num_classes, use_07_metric=self.use_07_metric)
        return {"mAP": 100.0 * voc["mAP"], "AP50": 100.0 * voc["mAP"]}
