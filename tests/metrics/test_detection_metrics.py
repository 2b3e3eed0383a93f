"""The VOC and COCO metrics on a fixed set of detections whose AP is computed by hand.

Class 1 has two ground-truth boxes in image 0; ranked detections are TP, FP, TP (then a duplicate
of the first box, FP), so precision is 1 up to recall 0.5 and 2/3 up to recall 1:
  VOC07 11-point: (6 * 1 + 5 * 2/3) / 11;  area: 0.5 * 1 + 0.5 * 2/3;
  COCO 101-point: (51 * 1 + 50 * 2/3) / 101 (boxes are exact, so every IoU threshold agrees).
Class 2 has one box and no detections (AP 0), so each mAP is half of class 1's AP.
"""

import contextlib
import io

import numpy as np
import pytest
import torch

from fst.metrics import coco_box_ap, voc_ap, voc_map

A, B, FAR = [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]
C2 = [5.0, 5.0, 25.0, 25.0]
AP07 = (6 + 5 * 2 / 3) / 11
AP_AREA = 0.5 + 0.5 * 2 / 3
AP_COCO = (51 + 50 * 2 / 3) / 101


def _preds():
    return [
        {
            "boxes": torch.tensor([A, FAR, B, A]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
            "labels": torch.tensor([1, 1, 1, 1]),
        },
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        },
    ]


def _gts():
    return [
        {"boxes": torch.tensor([A, B]), "labels": torch.tensor([1, 1])},
        {"boxes": torch.tensor([C2]), "labels": torch.tensor([2])},
    ]


def test_voc_ap_interpolations():
    rec, prec = np.array([0.5, 0.5, 1.0, 1.0]), np.array([1.0, 0.5, 2 / 3, 0.5])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(AP07)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(AP_AREA)


@pytest.mark.parametrize("use07,expected", [(True, AP07), (False, AP_AREA)])
def test_voc_map_hand_computed(use07, expected):
    out = voc_map(_preds(), _gts(), num_classes=2, use_07_metric=use07)
    assert out["AP"][0] == pytest.approx(expected)
    assert out["AP"][1] == 0.0
    assert out["mAP"] == pytest.approx(expected / 2)


def test_voc_map_difficult_boxes_are_ignored():
    preds, gts = _preds(), _gts()
    # A detection on a difficult box is neither TP nor FP; the box is not a positive either.
    gts[1] = {
        "boxes": torch.tensor([C2, FAR]),
        "labels": torch.tensor([2, 1]),
        "difficult": torch.tensor([False, True]),
    }
    preds[1] = {
        "boxes": torch.tensor([FAR]),
        "scores": torch.tensor([0.95]),
        "labels": torch.tensor([1]),
    }
    assert voc_map(preds, gts, num_classes=2)["AP"][0] == pytest.approx(AP07)
    # The same box not difficult: one more positive, found first.
    gts[1]["difficult"] = torch.tensor([False, False])
    out = voc_map(preds, gts, num_classes=2, use_07_metric=False)
    # ranked: TP, TP, FP, TP, FP over 3 positives -> precision 1 to recall 2/3, then 3/4.
    assert out["AP"][0] == pytest.approx(2 / 3 + 1 / 3 * 3 / 4)


def test_voc_map_iou_threshold():
    shifted = [
        {
            "boxes": torch.tensor([[0.0, 0.0, 10.0, 20.0]]),
            "scores": torch.tensor([1.0]),
            "labels": torch.tensor([1]),
        }
    ]
    gt = [{"boxes": torch.tensor([A]), "labels": torch.tensor([1])}]
    assert voc_map(shifted, gt, 1)["mAP"] == 0.0  # IoU exactly 0.5 is not above 0.5
    assert voc_map(shifted, gt, 1, iou_threshold=0.4)["mAP"] == pytest.approx(1.0)


def _coco_gt():
    from pycocotools.coco import COCO

    anns = []
    for img, (box, cat) in [(1, (A, 1)), (1, (B, 1)), (2, (C2, 2))]:
        x1, y1, x2, y2 = box
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": img,
                "category_id": cat,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
        )
    coco = COCO()
    coco.dataset = {
        "images": [{"id": 1, "width": 64, "height": 64}, {"id": 2, "width": 64, "height": 64}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def test_coco_box_ap_hand_computed():
    out = coco_box_ap(_coco_gt(), [1, 2], _preds(), {1: 1, 2: 2})
    assert out["AP50"] == pytest.approx(AP_COCO / 2, abs=1e-6)
    assert out["AP75"] == pytest.approx(AP_COCO / 2, abs=1e-6)
    assert out["mAP"] == pytest.approx(AP_COCO / 2, abs=1e-6)


def test_coco_box_ap_perfect_and_empty():
    gt = _coco_gt()
    perfect = [
        {
            "boxes": torch.tensor([A, B]),
            "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1]),
        },
        {"boxes": torch.tensor([C2]), "scores": torch.tensor([0.5]), "labels": torch.tensor([2])},
    ]
    assert coco_box_ap(gt, [1, 2], perfect, {1: 1, 2: 2})["mAP"] == pytest.approx(1.0)
    empty = [
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
    ] * 2
    assert coco_box_ap(gt, [1, 2], empty, {1: 1, 2: 2})["mAP"] == 0.0


def test_registry_entries_accumulate_batches_as_the_functions_score_them():
    """``METRICS[key].from_data(data)`` fed image by image gives the functions' numbers, in %."""
    from types import SimpleNamespace

    from fst.metrics import METRICS

    targets = [{**g, "image_id": i + 1} for i, g in enumerate(_gts())]
    voc_data = SimpleNamespace(num_classes=2, extra={"use_07_metric": False})
    coco_data = SimpleNamespace(val=SimpleNamespace(coco=_coco_gt(), label_to_cat_id={1: 1, 2: 2}))
    for key, data, want in [
        ("voc", voc_data, {"mAP": 100 * AP_AREA / 2, "AP50": 100 * AP_AREA / 2}),
        ("coco", coco_data, {k: 100 * v for k, v in coco_box_ap(
            coco_data.val.coco, [1, 2], _preds(), {1: 1, 2: 2}).items() if v >= 0}),
    ]:  # fmt: skip
        metric = METRICS[key].from_data(data)
        with pytest.raises(ValueError, match="empty"):
            metric.compute()
        for p, t in zip(_preds(), targets):
            metric.update([p], [t])
        got = metric.compute()
        assert got.keys() == want.keys() and got == pytest.approx(want), key


def test_accuracy_entry():
    from fst.metrics import METRICS

    metric = METRICS["accuracy"].from_data(None)
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 1.0, 3.0]])
    metric.update(logits[:1], torch.tensor([0]))
    metric.update(logits[1:], torch.tensor([1]))
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).item()
    assert metric.compute() == pytest.approx({"top1": 50.0, "top5": 100.0, "loss": loss})
