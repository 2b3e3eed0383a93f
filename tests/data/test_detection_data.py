"""Detection data: the embedded shapes generator, COCO/VOC readers and the paired transforms."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest
import torch
from PIL import Image

from fst.data import DATASETS
from fst.data.detection import (
    SHAPE_CLASSES,
    VOC_CLASSES,
    CocoDetection,
    VOCDetection,
    build_transforms,
    collate,
    generate_shapes,
    parse_voc_xml,
)
from fst.types import ConfigError

SMALL = dict(num_train=6, num_val=3, image_size=64)


def test_shapes_are_deterministic_coco_files(tmp_path):
    a = generate_shapes(tmp_path / "a", **SMALL, seed=3)
    b = generate_shapes(tmp_path / "b", **SMALL, seed=3)
    c = generate_shapes(tmp_path / "c", **SMALL, seed=4)
    for split in ("train", "val"):
        ja = json.loads((a / "annotations" / f"instances_{split}.json").read_text())
        jb = json.loads((b / "annotations" / f"instances_{split}.json").read_text())
        assert ja == jb
        assert [c["name"] for c in ja["categories"]] == list(SHAPE_CLASSES)
        assert len(ja["images"]) == SMALL[f"num_{split}"]
        for ann in ja["annotations"]:
            x, y, w, h = ann["bbox"]
            assert (
                w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 + 1e-6 and y + h <= 64 + 1e-6
            )
            assert 0 < ann["area"] <= w * h + 1e-3 and ann["iscrowd"] == 0
        for im in ja["images"]:
            assert (a / split / im["file_name"]).read_bytes() == (
                b / split / im["file_name"]
            ).read_bytes()
    assert (a / "train" / "000000.jpg").read_bytes() != (c / "train" / "000000.jpg").read_bytes()
    # Nothing half-written is left next to the result.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]


def _gen(path):
    generate_shapes(path, **SMALL)


def test_concurrent_generation_is_atomic(tmp_path):
    target = tmp_path / "shapes"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_gen, args=(target,)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert (
        len(json.loads((target / "annotations" / "instances_train.json").read_text())["images"])
        == 6
    )
    assert [p.name for p in tmp_path.iterdir()] == ["shapes"]


def test_shapes_dataset_reads_through_coco_path(tmp_path):
    data = DATASETS["shapes"](root=str(tmp_path), **SMALL)
    assert (
        data.metric == "coco" and data.class_names == list(SHAPE_CLASSES) and data.num_classes == 4
    )
    image, target = data.val[0]
    assert (
        image.dtype == torch.float32
        and image.shape == (3, 64, 64)
        and 0 <= image.min() <= image.max() <= 1
    )
    assert set(target) == {"boxes", "labels", "image_id"}
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert len(target["labels"]) == len(target["boxes"]) >= 1
    assert ((target["labels"] >= 1) & (target["labels"] <= 4)).all()
    assert type(target["boxes"]) is torch.Tensor  # plain tensors after ToPureTensor
    images, targets = collate([data.train[0], data.train[1]])
    assert len(images) == len(targets) == 2


def _coco_json(path, anns, cats):
    blob = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30}],
        "annotations": anns,
        "categories": cats,
    }
    path.write_text(json.dumps(blob))


def test_coco_labels_are_contiguous_and_crowd_dropped(tmp_path):
    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "a.jpg")
    anns = [
        {
            "id": 1,
            "image_id": 7,
            "category_id": 90,
            "bbox": [1, 2, 10, 5],
            "area": 50,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 7,
            "category_id": 5,
            "bbox": [30, 20, 20, 20],
            "area": 100,
            "iscrowd": 0,
        },
        {"id": 3, "image_id": 7, "category_id": 5, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 1},
        {"id": 4, "image_id": 7, "category_id": 5, "bbox": [3, 3, 0.5, 4], "area": 2, "iscrowd": 0},
    ]
    _coco_json(tmp_path / "ann.json", anns, [{"id": 90, "name": "z"}, {"id": 5, "name": "y"}])
    ds = CocoDetection(tmp_path, tmp_path / "ann.json")
    assert ds.class_names == ["y", "z"] and ds.label_to_cat_id == {1: 5, 2: 90}
    image, target = ds[0]
    assert image.shape == (3, 30, 40) and target["image_id"] == 7
    # crowd and sub-pixel boxes dropped; the second box is clipped to the 40x30 image
    torch.testing.assert_close(
        target["boxes"], torch.tensor([[1.0, 2.0, 11.0, 7.0], [30.0, 20.0, 40.0, 30.0]])
    )
    assert target["labels"].tolist() == [2, 1]


def test_coco_missing_files_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root"):
        CocoDetection(tmp_path, tmp_path / "nope.json")
    with pytest.raises(ValueError, match="data.root"):
        DATASETS["coco"](root=None)
    with pytest.raises(ConfigError, match="COCO 2017"):
        DATASETS["coco"].check(root=str(tmp_path))


def test_flip_moves_boxes():
    image = torch.zeros(3, 20, 50, dtype=torch.uint8)
    image[:, 5:10, 2:12] = 255
    boxes = torch.tensor([[2.0, 5.0, 12.0, 10.0]])
    from fst.data.detection import _wrap

    flip = build_transforms("flip", train=True)
    seen = set()
    for seed in range(20):
        torch.manual_seed(seed)
        im, bx = _wrap(image, boxes)
        out, t = flip(im, {"boxes": bx, "labels": torch.tensor([1])})
        b = t["boxes"][0].tolist()
        assert b in ([2.0, 5.0, 12.0, 10.0], [38.0, 5.0, 48.0, 10.0])
        # the bright patch is where the box says
        x1, y1, x2, y2 = (int(v) for v in b)
        assert out[0, y1:y2, x1:x2].min() == 1.0
        seen.add(tuple(b))
    assert len(seen) == 2


def test_ssd_augmentation_keeps_boxes_valid(tmp_path):
    d = generate_shapes(tmp_path / "s", **SMALL)
    ds = CocoDetection(
        d / "train",
        d / "annotations" / "instances_train.json",
        build_transforms("ssd", True),
        train=True,
    )
    torch.manual_seed(0)
    for i in range(len(ds)):
        for _ in range(3):
            image, t = ds[i]
            h, w = image.shape[-2:]
            b = t["boxes"]
            assert len(b) == len(t["labels"])
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
            assert (b[:, :2] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    with pytest.raises(ValueError, match="valid choices"):
        build_transforms("mosaic", True)


VOC_XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
<object><name>dog</name><difficult>0</difficult><bndbox><xmin>11</xmin><ymin>21</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
<object><name>person</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>
</annotation>"""


def _voc(root, year, split, stems, only_difficult=()):
    base = root / f"VOC{year}"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for s in stems:
        Image.new("RGB", (48, 44)).save(base / "JPEGImages" / f"{s}.jpg")
        xml = VOC_XML.format(w=48, h=44)
        if s in only_difficult:  # an image whose only object is difficult
            xml = xml.split("<object>")[0] + "<object>" + xml.split("<object>")[2]
        (base / "Annotations" / f"{s}.xml").write_text(xml)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")


def test_voc_reader(tmp_path):
    _voc(tmp_path, "2007", "trainval", ["000001", "000002"], only_difficult=["000002"])
    _voc(tmp_path, "2012", "trainval", ["2008_000001"])
    _voc(tmp_path, "2007", "test", ["000003"])
    ann = parse_voc_xml(tmp_path / "VOC2007" / "Annotations" / "000001.xml")
    assert ann["boxes"][0] == [10.0, 20.0, 30.0, 40.0]  # 1-based inclusive -> 0-based continuous
    assert ann["labels"] == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("person") + 1]
    assert ann["difficult"] == [False, True] and ann["size"] == (44, 48)

    data = DATASETS["voc"](root=str(tmp_path))
    assert data.metric == "voc" and data.num_classes == 20
    assert len(data.train) == 2  # 07 image with only a difficult box dropped, 12 image kept
    _, t = data.train[0]
    assert t["labels"].tolist() == [VOC_CLASSES.index("dog") + 1] and "difficult" not in t
    _, t = data.val[0]
    assert t["difficult"].tolist() == [False, True] and len(t["boxes"]) == 2


def test_voc_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOCdevkit"):
        VOCDetection(tmp_path, [("2007", "test")])
    with pytest.raises(ConfigError, match="VOCdevkit"):
        DATASETS["voc"].check(root=str(tmp_path))
    (tmp_path / "bad.xml").write_text(VOC_XML.replace("dog", "unicorn").format(w=4, h=4))
    with pytest.raises(ValueError, match="unicorn"):
        parse_voc_xml(tmp_path / "bad.xml")
