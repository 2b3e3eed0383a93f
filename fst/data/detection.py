"""Detection data: COCO-format and PASCAL VOC datasets, their augmentations, and the embedded
``shapes`` set (generated on first use as real COCO-format files, so the COCO path runs offline).

Every dataset yields ``(image, target)``:

- ``image``: ``uint8`` or ``float32`` tensor ``[3, H, W]`` (after ``transforms``: ``float32`` in
  ``[0, 1]``); images keep their own size, the detectors resize internally.
- ``target``: ``{"boxes": float32 [N, 4] (x1, y1, x2, y2) in pixels of this image,
  "labels": int64 [N] in 1..K (0 is the detectors' background), "image_id": int}``; evaluation
  targets of VOC also carry ``"difficult": bool [N]``.

Labels are contiguous: a COCO ``category_id`` maps to ``1 + its rank`` among the sorted category
ids (``dataset.label_to_cat_id`` maps back for the COCO evaluator).

Registered in ``fst.data.DATASETS`` as ``shapes``, ``coco`` and ``voc`` (the ``configs/data/`` stems);
each entry takes the data config and returns a ``DetectionData``.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2 as T
from torchvision.transforms.v2 import functional as TF

from fst.types import ConfigError, MissingFileError

from . import DATASETS

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
SHAPE_CLASSES = ("circle", "square", "triangle", "cross")
# Bump when the generator's output changes, so stale caches are never reused.
SHAPES_VERSION = 1


def collate(batch: list[tuple[Any, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection collate: images differ in size and box count, so keep lists, don't stack."""
    images, targets = zip(*batch)
    return list(images), list(targets)


# --------------------------------------------------------------------------------------------
# Augmentations
# --------------------------------------------------------------------------------------------


def build_transforms(kind: str, train: bool, fill: tuple[int, int, int] = (123, 117, 104)):
    """Paired image+box transforms (torchvision ``transforms.v2``), as in torchvision's
    detection references (``references/detection/presets.py``).

    ``kind``: ``"ssd"`` - photometric distort, zoom out (filled with the mean colour), IoU crop,
    horizontal flip (the SSD paper's augmentation); ``"flip"`` - horizontal flip only (the Faster
    R-CNN recipe); ``"none"``. Evaluation (``train=False``) only converts to ``float32`` in
    ``[0, 1]``: the detectors resize internally and map boxes back to the original image.
    """
    ops: list = []
    if train:
        if kind == "ssd":
            ops += [
                T.RandomPhotometricDistort(p=1.0),
                T.RandomZoomOut(fill={tv_tensors.Image: fill, "others": 0}),
                T.RandomIoUCrop(),
                T.RandomHorizontalFlip(0.5),
            ]
        elif kind == "flip":
            ops += [T.RandomHorizontalFlip(0.5)]
        elif kind != "none":
            raise ConfigError(f"unknown augmentation {kind!r}; valid choices: ssd, flip, none")
    ops += [T.ToDtype(torch.float32, scale=True)]
    if train:
        # Crops and zooms can push boxes out of the image: drop the degenerate ones (and labels).
        ops += [T.SanitizeBoundingBoxes(min_size=1.0)]
    ops += [T.ToPureTensor()]
    return T.Compose(ops)


def _wrap(
    image: torch.Tensor, boxes: torch.Tensor
) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
    h, w = image.shape[-2:]
    return tv_tensors.Image(image), tv_tensors.BoundingBoxes(
        boxes.reshape(-1, 4), format="XYXY", canvas_size=(h, w)
    )


def _load_rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as im:
        return TF.pil_to_tensor(im.convert("RGB"))


# --------------------------------------------------------------------------------------------
# COCO format
# --------------------------------------------------------------------------------------------


def _load_coco(coco_cls, ann_file: Path):
    """``pycocotools.coco.COCO(ann_file)`` with every annotation checked (``_check_coco_anns``);
    malformed files fail naming the file and what to fix instead of a bare ``KeyError``."""
    try:
        blob = json.loads(ann_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"COCO annotation file {ann_file} is not valid JSON ({e.msg} at line {e.lineno}, "
            f"column {e.colno}); the file is damaged or cut short: download or generate it again"
        ) from None
    if not isinstance(blob, dict) or not isinstance(blob.get("images"), list):
        raise ConfigError(
            f"COCO annotation file {ann_file} has no 'images' list; a COCO instances file is a "
            "JSON object with 'images', 'annotations' and 'categories' lists"
        )
    _check_coco_anns(blob, ann_file)
    coco = coco_cls()
    coco.dataset = blob
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def _check_coco_anns(blob: dict, ann_file: Path) -> None:
    """Every annotation has an ``id``, an ``image_id`` of an image in the file, a ``category_id``
    of a category in the file and a ``bbox`` of 4 finite numbers with width, height >= 0."""
    cats = {c.get("id") for c in blob.get("categories") or []}
    images = {i.get("id") for i in blob["images"]}
    fix = "fix or remove that annotation"
    for a in blob.get("annotations") or []:
        aid = a.get("id", "<no id>")
        where = f"{ann_file}: annotation id {aid}"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise ConfigError(
                    f"{where} has no {key!r} (a COCO object annotation needs image_id, "
                    f"category_id and bbox: [x, y, width, height] in pixels); {fix}"
                )
        where += f" (image {a['image_id']})"
        if a["image_id"] not in images:
            raise ConfigError(f"{where}: image_id {a['image_id']} is not in 'images'; {fix}")
        if a["category_id"] not in cats:
            shown = ", ".join(str(c) for c in sorted(cats, key=str)[:12])
            raise ConfigError(
                f"{where} has category_id {a['category_id']}, which is not in the file's "
                f"'categories' (ids: {shown}); add that category or {fix}"
            )
        box = a["bbox"]
        ok = isinstance(box, list | tuple) and len(box) == 4
        ok = ok and all(isinstance(v, int | float) and math.isfinite(v) for v in box)
        if not ok or box[2] < 0 or box[3] < 0:
            raise ConfigError(
                f"{where} has bbox {box}: expected 4 finite numbers [x, y, width, height] with "
                f"width, height >= 0; {fix}"
            )


class CocoDetection(Dataset):
    """Images in ``image_dir`` annotated by a COCO ``instances_*.json`` (boxes only).

    Crowd annotations and boxes under 1 px are dropped (as torchvision's references do).
    ``train=True`` also drops images left without boxes (nothing to learn from).

    Attributes:
        coco: the ``pycocotools.coco.COCO`` index (ground truth for ``fst.metrics.coco``).
        ids: image ids in dataset order.
        label_to_cat_id: ``{label: category_id}``, labels 1..K.
        class_names: category names in label order (index 0 = label 1).
    """

    def __init__(
        self, image_dir: str | Path, ann_file: str | Path, transforms=None, train: bool = False
    ):
        image_dir, ann_file = Path(image_dir), Path(ann_file)
        if not ann_file.is_file():
            raise MissingFileError(
                f"COCO annotation file {ann_file} not found; set data.root to the COCO 2017 folder "
                "(with annotations/instances_{train,val}2017.json and train2017/, val2017/)"
            )
        if not image_dir.is_dir():
            raise MissingFileError(f"COCO image folder {image_dir} not found (check data.root)")
        self.coco = _load_coco(COCO, ann_file)
        self.image_dir = image_dir
        self.transforms = transforms
        cat_ids = sorted(self.coco.getCatIds())
        self.cat_id_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_cat_id = {i + 1: c for i, c in enumerate(cat_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in cat_ids]
        ids = sorted(self.coco.imgs)
        if train:
            ids = [i for i in ids if len(self._annotations(i)[0])]
        # Every image the annotations name must be on disk: found now, not as a crash mid-epoch.
        missing = [i for i in ids if not (image_dir / self.coco.imgs[i]["file_name"]).is_file()]
        if missing:
            first = self.coco.imgs[missing[0]]
            raise MissingFileError(
                f"{ann_file} names {len(missing)} image(s) missing from {image_dir} (e.g. "
                f"{first['file_name']}, image id {missing[0]}); restore those files, or remove "
                "their entries from the annotation file"
            )
        self.ids = ids

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        info = self.coco.imgs[image_id]
        w, h = info["width"], info["height"]
        boxes, labels = [], []
        for a in self.coco.imgToAnns.get(image_id, []):
            if a.get("iscrowd", 0):
                continue
            x, y, bw, bh = a["bbox"]
            x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
            if x2 - x1 < 1 or y2 - y1 < 1:
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(self.cat_id_to_label[a["category_id"]])
        return (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64),
        )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        image = _load_rgb(self.image_dir / self.coco.imgs[image_id]["file_name"])
        boxes, labels = self._annotations(image_id)
        image, boxes = _wrap(image, boxes)
        target = {"boxes": boxes, "labels": labels, "image_id": image_id}
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


# --------------------------------------------------------------------------------------------
# PASCAL VOC
# --------------------------------------------------------------------------------------------


def parse_voc_xml(path: str | Path) -> dict:
    """One VOC annotation file -> ``{"boxes": [[x1, y1, x2, y2]], "labels": [1..20],
    "difficult": [bool], "size": (h, w)}``.

    VOC corners are 1-based inclusive pixel indices; ``(xmin - 1, ymin - 1, xmax, ymax)`` is the
    same region in 0-based continuous coordinates.
    """
    root = ET.parse(path).getroot()
    size = root.find("size")
    hw = (int(size.find("height").text), int(size.find("width").text))
    boxes, labels, difficult = [], [], []
    for obj in root.iter("object"):
        name = obj.find("name").text.strip()
        if name not in VOC_CLASSES:
            raise ConfigError(
                f"{path}: unknown VOC class {name!r}; the 20 VOC classes are "
                + ", ".join(VOC_CLASSES)
            )
        bb = obj.find("bndbox")
        x1, y1, x2, y2 = (float(bb.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        labels.append(VOC_CLASSES.index(name) + 1)
        d = obj.find("difficult")
        difficult.append(d is not None and int(d.text) == 1)
    return {"boxes": boxes, "labels": labels, "difficult": difficult, "size": hw}


class VOCDetection(Dataset):
    """PASCAL VOC in the standard ``VOCdevkit`` layout: ``<root>/VOC<year>/{JPEGImages,
    Annotations, ImageSets/Main/<split>.txt}``; ``splits`` concatenates e.g. 07+12 trainval.

    ``keep_difficult=False`` (training) drops boxes marked difficult and then images without boxes;
    ``True`` (evaluation) keeps them with ``target["difficult"]``, which the VOC metric ignores.
    """

    def __init__(
        self,
        root: str | Path,
        splits: list[tuple[str, str]] | list[list[str]],
        transforms=None,
        keep_difficult: bool = False,
    ):
        root = Path(root)
        self.transforms = transforms
        self.keep_difficult = keep_difficult
        self.class_names = list(VOC_CLASSES)
        self.items: list[tuple[Path, dict]] = []
        for year, split in splits:
            base = root / f"VOC{year}"
            listing = base / "ImageSets" / "Main" / f"{split}.txt"
            if not listing.is_file():
                raise MissingFileError(
                    f"{listing} not found; set data.root to the VOCdevkit folder holding "
                    f"VOC{year}/ (standard layout: JPEGImages/, Annotations/, ImageSets/Main/)"
                )
            for stem in listing.read_text().split():
                ann = parse_voc_xml(base / "Annotations" / f"{stem}.xml")
                if not keep_difficult:
                    keep = [not d for d in ann["difficult"]]
                    for k in ("boxes", "labels", "difficult"):
                        ann[k] = [v for v, ok in zip(ann[k], keep) if ok]
                    if not ann["boxes"]:
                        continue
                self.items.append((base / "JPEGImages" / f"{stem}.jpg", ann))

    @property
    def num_classes(self) -> int:
        return len(VOC_CLASSES)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, ann = self.items[index]
        image = _load_rgb(path)
        image, boxes = _wrap(image, torch.tensor(ann["boxes"], dtype=torch.float32))
        target = {
            "boxes": boxes,
            "labels": torch.tensor(ann["labels"], dtype=torch.int64),
            "image_id": index,
        }
        if self.keep_difficult:
            target["difficult"] = torch.tensor(ann["difficult"], dtype=torch.bool)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


# --------------------------------------------------------------------------------------------
# The embedded shapes set
# --------------------------------------------------------------------------------------------


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background ``uint8 [size, size, 3]``: a colour gradient, oriented stripes and
    blocky noise, so that boxes cannot be found by thresholding a flat background."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    t = rng.uniform(0, 1) * xx + rng.uniform(0, 1) * yy
    img = c0 + (c1 - c0) * (t / max(t.max(), 1e-6))[..., None]
    theta, freq = rng.uniform(0, math.pi), rng.uniform(4, 16)
    stripes = np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)))
    img += rng.uniform(8, 30) * stripes[..., None]
    cells = max(size // 8, 1)
    blocks = rng.normal(0, rng.uniform(5, 20), (cells, cells, 3))
    img += np.kron(blocks, np.ones((size // cells + 1, size // cells + 1, 1)))[:size, :size]
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(
    kind: str, cx: float, cy: float, s: float, angle: float
) -> list[tuple[float, float]]:
    """Vertices of one shape of size ``s`` (its box side before rotation) centred at (cx, cy)."""
    if kind == "circle":
        pts = [
            (math.cos(2 * math.pi * k / 32) / 2, math.sin(2 * math.pi * k / 32) / 2)
            for k in range(32)
        ]
        angle = 0.0
    elif kind == "square":
        pts = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
    elif kind == "triangle":
        pts = [
            (math.cos(a) / 2, math.sin(a) / 2) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)
        ]
    elif kind == "cross":
        a, b = 0.5, 0.17
        pts = [
            (-b, -a),
            (b, -a),
            (b, -b),
            (a, -b),
            (a, b),
            (b, b),
            (b, a),
            (-b, a),
            (-b, b),
            (-a, b),
            (-a, -b),
            (-b, -b),
        ]
    else:
        raise ValueError(kind)
    ca, sa = math.cos(angle), math.sin(angle)
    return [(cx + s * (x * ca - y * sa), cy + s * (x * sa + y * ca)) for x, y in pts]


def _polygon_area(pts: list[tuple[float, float]]) -> float:
    return 0.5 * abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1])))


def _overlap(a: list[float], b: list[float]) -> float:
    """Intersection over the smaller box's area (how much of one box the other may hide)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller if smaller > 0 else 1.0


def _draw_image(rng: np.random.Generator, size: int, max_objects: int, scale: tuple[float, float]):
    """One image and its objects ``[(class index, polygon, box)]``; a box may cover at most 10%
    of another (shapes stay recognisable)."""
    img = Image.fromarray(_texture(rng, size))
    draw = ImageDraw.Draw(img)
    objects, boxes = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            k = int(rng.integers(len(SHAPE_CLASSES)))
            s = float(rng.uniform(*scale)) * size
            cx, cy = rng.uniform(s / 2, size - s / 2, 2)
            poly = _shape_polygon(
                SHAPE_CLASSES[k], float(cx), float(cy), s, float(rng.uniform(0, 2 * math.pi))
            )
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            box = [max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), size), min(max(ys), size)]
            if all(_overlap(box, b) < 0.1 for b in boxes):
                break
        else:
            continue
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        outline = tuple(255 - c for c in colour)
        draw.polygon(poly, fill=colour, outline=outline)
        objects.append((k, poly, box))
        boxes.append(box)
    return img, objects


def generate_shapes(
    out_dir: str | Path,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    max_objects: int = 4,
    scale: tuple[float, float] = (0.15, 0.5),
    seed: int = 0,
) -> Path:
    """Write the shapes set to ``out_dir`` as COCO files and return ``out_dir``:
    ``{train,val}/*.jpg`` and ``annotations/instances_{train,val}.json`` (boxes, polygons, areas).

    Each image is a textured background with 1..``max_objects`` filled shapes
    (``SHAPE_CLASSES``) of side ``scale`` x ``image_size``, rotated at random. Deterministic: image
    ``i`` of a split depends only on ``(seed, split, i)``. Written to a temporary sibling folder
    that is renamed into place, so concurrent callers never see half a dataset.
    """
    out_dir = Path(out_dir)
    if (out_dir / "annotations" / "instances_val.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "annotations").mkdir()
        categories = [
            {"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPE_CLASSES)
        ]
        for split_id, (split, n) in enumerate((("train", num_train), ("val", num_val))):
            (tmp / split).mkdir()
            images, annotations = [], []
            for i in range(n):
                rng = np.random.default_rng([seed, split_id, i])
                img, objects = _draw_image(rng, image_size, max_objects, tuple(scale))
                name = f"{i:06d}.jpg"
                img.save(tmp / split / name, quality=95)
                images.append(
                    {"id": i + 1, "file_name": name, "width": image_size, "height": image_size}
                )
                for k, poly, (x1, y1, x2, y2) in objects:
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": i + 1,
                            "category_id": k + 1,
                            "bbox": [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)],
                            "area": round(_polygon_area(poly), 2),
                            "segmentation": [[round(c, 2) for p in poly for c in p]],
                            "iscrowd": 0,
                        }
                    )
            info = {"description": "fst embedded shapes (synthetic)", "version": SHAPES_VERSION}
            blob = {
                "info": info,
                "images": images,
                "annotations": annotations,
                "categories": categories,
            }
            (tmp / "annotations" / f"instances_{split}.json").write_text(json.dumps(blob))
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first (the target exists and is not empty): use theirs.
            if not (out_dir / "annotations" / "instances_val.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def default_cache_dir() -> Path:
    """``$FST_CACHE/shapes`` if set, else ``~/.cache/fst/shapes``."""
    base = os.environ.get("FST_CACHE")
    return Path(base) / "shapes" if base else Path.home() / ".cache" / "fst" / "shapes"


# --------------------------------------------------------------------------------------------
# Registry entries: data config -> DetectionData
# --------------------------------------------------------------------------------------------


@dataclass
class DetectionData:
    """Train/val datasets plus what evaluation needs: ``metric`` (a key of
    :data:`fst.metrics.METRICS`: "coco" or "voc") picks the evaluator, ``class_names`` the label names (index 0 = label 1), ``log_images`` how many
    validation images with boxes the task logs per evaluation."""

    train: Dataset
    val: Dataset
    metric: str
    class_names: list[str]
    log_images: int = 4
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


#: The shapes set's parameters (their defaults: :func:`build_shapes`'s, written there once).
SHAPES_PARAMS = ("num_train", "num_val", "image_size", "max_objects", "scale", "generator_seed")


def shapes_dir(
    root: str | None,
    *,
    num_train: int,
    num_val: int,
    image_size: int,
    max_objects: int,
    scale: tuple[float, float],
    generator_seed: int,
) -> Path:
    """The shapes set's COCO folder under ``root`` (default: ``default_cache_dir()``), named by
    its parameters and generated on first use (``data=shapes`` and mmdet's ``FSTShapesDataset``
    share it)."""
    base = Path(root).expanduser() if root else default_cache_dir()
    name = (
        f"v{SHAPES_VERSION}_s{image_size}_n{num_train}-{num_val}_o{max_objects}"
        f"_sc{scale[0]:g}-{scale[1]:g}_seed{generator_seed}"
    )
    return generate_shapes(
        base / name, num_train, num_val, image_size, max_objects, tuple(scale), generator_seed
    )


@DATASETS.register("shapes")
def build_shapes(
    root: str | None = None,
    num_train: int = 1000,
    num_val: int = 200,
    image_size: int = 128,
    max_objects: int = 4,
    scale: tuple[float, float] = (0.15, 0.5),
    generator_seed: int = 0,
    augment: str = "flip",
    log_images: int = 4,
) -> DetectionData:
    """The embedded set, generated on first use under ``root`` (default: ``default_cache_dir()``)
    in a folder named by its parameters, then read through the COCO code path."""
    d = shapes_dir(
        root,
        num_train=num_train,
        num_val=num_val,
        image_size=image_size,
        max_objects=max_objects,
        scale=scale,
        generator_seed=generator_seed,
    )
    ann = d / "annotations"
    train = CocoDetection(
        d / "train", ann / "instances_train.json", build_transforms(augment, True), train=True
    )
    val = CocoDetection(d / "val", ann / "instances_val.json", build_transforms(augment, False))
    return DetectionData(train, val, "coco", train.class_names, log_images)


def shapes_params(kwargs: dict) -> dict:
    """Pop the shapes set's parameters (:data:`SHAPES_PARAMS`) out of ``kwargs``, with
    :func:`build_shapes`'s defaults for those not given."""
    defaults = inspect.signature(build_shapes).parameters
    return {k: kwargs.pop(k, defaults[k].default) for k in SHAPES_PARAMS}


def _require_root(root: str | None, what: str) -> Path:
    if not root or root == "???":
        raise ConfigError(f"data.root is not set; pass data.root=/path/to/{what}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data.root={root} is not a directory (expected {what})")
    return path


@DATASETS.register("coco")
def build_coco(
    root: str | None = None,
    train_split: str = "train2017",
    val_split: str = "val2017",
    augment: str = "flip",
    log_images: int = 4,
) -> DetectionData:
    """COCO 2017: ``<root>/{train2017,val2017}/`` and ``<root>/annotations/instances_<split>.json``."""
    root_p = _require_root(root, "coco (the folder holding annotations/, train2017/, val2017/)")
    ann = root_p / "annotations"
    train = CocoDetection(
        root_p / train_split,
        ann / f"instances_{train_split}.json",
        build_transforms(augment, True),
        train=True,
    )
    val = CocoDetection(
        root_p / val_split, ann / f"instances_{val_split}.json", build_transforms(augment, False)
    )
    return DetectionData(train, val, "coco", train.class_names, log_images)


def _check_coco(root=None, train_split="train2017", val_split="val2017", **_) -> None:
    """Fail before anything is built if the COCO files are not where the config says."""
    root_p = _require_root(root, "coco (the folder holding annotations/, train2017/, val2017/)")
    for split in (train_split, val_split):
        for p in (root_p / "annotations" / f"instances_{split}.json", root_p / split):
            if not p.exists():
                raise ConfigError(
                    f"{p} not found; data.root must be the COCO 2017 folder (annotations/, "
                    f"{train_split}/, {val_split}/)"
                )


build_coco.check = _check_coco


@DATASETS.register("voc")
def build_voc(
    root: str | None = None,
    train_splits: list = (("2007", "trainval"), ("2012", "trainval")),
    val_splits: list = (("2007", "test"),),
    augment: str = "flip",
    use_07_metric: bool = True,
    log_images: int = 4,
) -> DetectionData:
    """PASCAL VOC: 07+12 trainval for training, 07 test for evaluation (mAP@0.5;
    ``use_07_metric``: 11-point interpolation as VOC2007, else the area under the curve)."""
    root_p = _require_root(root, "VOCdevkit")
    train = VOCDetection(root_p, [tuple(s) for s in train_splits], build_transforms(augment, True))
    val = VOCDetection(
        root_p,
        [tuple(s) for s in val_splits],
        build_transforms(augment, False),
        keep_difficult=True,
    )
    return DetectionData(
        train, val, "voc", list(VOC_CLASSES), log_images, {"use_07_metric": bool(use_07_metric)}
    )


def _check_voc(
    root=None,
    train_splits=(("2007", "trainval"), ("2012", "trainval")),
    val_splits=(("2007", "test"),),
    **_,
) -> None:
    root_p = _require_root(root, "VOCdevkit")
    for year, split in [*train_splits, *val_splits]:
        listing = root_p / f"VOC{year}" / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise ConfigError(
                f"{listing} not found; data.root must be the VOCdevkit folder (VOC{year}/...)"
            )


build_voc.check = _check_voc
