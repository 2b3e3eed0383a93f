"""COCO box AP through pycocotools' ``COCOeval`` (AP@[.5:.95], AP50, AP75, by object size)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import torch
from pycocotools.cocoeval import COCOeval

from fst.metrics.base import METRICS, Metric

_KEYS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


def coco_box_ap(
    coco_gt,
    image_ids: Sequence[int],
    predictions: Sequence[Mapping],
    label_to_cat_id: Mapping[int, int],
) -> dict[str, float]:
    """Evaluate ``predictions`` against ``coco_gt`` on the images ``image_ids``.

    Args:
        coco_gt: a ``pycocotools.coco.COCO`` holding the ground truth.
        image_ids: COCO image id of each prediction (same order); only these images are scored.
        predictions: per image ``{"boxes": [N, 4] xyxy pixels, "scores": [N], "labels": [N]}``.
        label_to_cat_id: contiguous label -> COCO ``category_id``.

    Returns:
        ``{"mAP": AP@[.5:.95], "AP50", "AP75", "APs", "APm", "APl"}`` (COCOeval's first six
        stats; an area range without ground truth reads -1, as in pycocotools).
    """
    if len(image_ids) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    results = []
    for image_id, p in zip(image_ids, predictions):
        boxes = torch.as_tensor(p["boxes"], dtype=torch.float64).reshape(-1, 4).cpu()
        wh = boxes[:, 2:] - boxes[:, :2]
        for b, s, l in zip(
            torch.cat([boxes[:, :2], wh], 1).tolist(),
            torch.as_tensor(p["scores"]).tolist(),
            torch.as_tensor(p["labels"]).tolist(),
        ):
            results.append(
                {
                    "image_id": int(image_id),
                    "category_id": label_to_cat_id[int(l)],
                    "bbox": b,
                    "score": float(s),
                }
            )
    if not results:  # loadRes rejects an empty list; nothing detected is AP 0
        return dict.fromkeys(_KEYS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = sorted({int(i) for i in image_ids})
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(_KEYS, ev.stats[:6])}


@METRICS.register("coco")
class CocoBoxAP(Metric):
    """:func:`coco_box_ap` over an evaluation, in percent as the paper's Table 4: ``update(preds,
    targets)`` with per-image predictions and targets (``image_id`` each); ``compute()`` ->
    ``mAP``, ``AP50``, ``AP75`` and ``APs``/``APm``/``APl`` (an area range without ground truth
    is left out)."""

    def __init__(self, coco_gt, label_to_cat_id: Mapping[int, int]):
        self.coco_gt, self.label_to_cat_id = coco_gt, label_to_cat_id
        super().__init__()

    @classmethod
    def from_data(cls, data) -> CocoBoxAP:
        """``data.val``: a COCO-format dataset (``.coco``, ``.label_to_cat_id``)."""
        return cls(data.val.coco, data.val.label_to_cat_id)

    def reset(self) -> None:
        self.image_ids: list[int] = []
        self.preds: list[Mapping] = []

    def update(self, preds: Sequence[Mapping], targets: Sequence[Mapping]) -> None:
        self.preds += preds
        self.image_ids += [int(t["image_id"]) for t in targets]

    def compute(self) -> dict[str, float]:
        if not self.preds:
            raise ValueError("the validation loader is empty")
        ap = coco_box_ap(self.coco_gt, self.image_ids, self.preds, self.label_to_cat_id)
        # -1: no ground truth in that size range (e.g. no large objects in small images)
        return {k: 100.0 * v for k, v in ap.items() if v >= 0}
