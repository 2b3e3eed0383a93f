"""Classification data: the embedded ``digits`` set (no download) and ImageNet-layout folders.

Each builder returns a ``DataBundle`` of map-style datasets yielding ``(image, label)`` with
``image: float [3, H, W]`` (normalized) and ``label: int``. Loaders are built by the engine.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from fst.types import ConfigError, DataBundle

from . import DATASETS
from .images import IMAGE_SUFFIXES, SafeImageDataset
from .loaders import LOADERS, check_loader


class TensorImages(Dataset):
    """Images held in memory: ``images [N, 1, S, S]`` in [0, 1], ``labels [N]``.

    ``__getitem__`` returns a 3-channel normalized ``[3, S, S]`` image; with ``shift > 0`` the
    image is translated by a random integer offset in ``[-shift, shift]`` per axis (zero fill),
    drawn from the global torch RNG so that seeding and checkpointed RNG states reproduce it.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, shift: int = 0):
        self.images, self.labels, self.shift = images, labels, shift

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.shift:
            s = self.shift
            dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
            x = F.pad(x, (s, s, s, s))[
                :, s + dy : s + dy + x.shape[1], s + dx : s + dx + x.shape[2]
            ]
        x = (x.expand(3, -1, -1) - 0.5) / 0.5
        return x.contiguous(), int(self.labels[i])


@DATASETS.register("digits")
def digits(
    num_classes: int | None = 10,
    image_size: int = 32,
    val_fraction: float = 0.2,
    augment_shift: int = 2,
) -> DataBundle:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes).

    Split train/val with a fixed, stratified split (``val_fraction`` of each class to val),
    upsampled bilinearly to ``image_size`` px. Ships with scikit-learn: nothing is downloaded.
    """
    if num_classes not in (None, 10):
        raise ConfigError(f"data.num_classes={num_classes}, but digits has 10 classes; use 10")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data.val_fraction={val_fraction} must lie in (0, 1), e.g. 0.2")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [N, 1, 8, 8] in [0, 1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    y = torch.tensor(d.target, dtype=torch.long)
    idx_train, idx_val = train_test_split(
        range(len(y)), test_size=val_fraction, random_state=0, stratify=d.target
    )
    idx_train, idx_val = sorted(idx_train), sorted(idx_val)
    return DataBundle(
        train=TensorImages(x[idx_train], y[idx_train], shift=augment_shift * image_size // 32),
        val=TensorImages(x[idx_val], y[idx_val]),
        num_classes=10,
    )


@DATASETS.register("digits_hard")
def digits_hard(
    num_classes: int | None = 10,
    image_size: int = 32,
    val_fraction: float = 0.2,
    augment_shift: int = 2,
    rotate_deg: float = 30.0,
    distractor: float = 0.6,
    noise: float = 0.3,
) -> DataBundle:
    """A harder embedded set: the digits split, each image corrupted once, deterministically.

    Plain digits is too easy to separate pruning strategies (every one reaches ~97-99%). Here
    every image (train and val, fixed seed 0) is rotated by up to ``rotate_deg`` and scaled by
    0.8-1.2, overlaid with another random digit at ``distractor`` contrast, and given Gaussian
    noise of std ``noise``; values are clipped to [0, 1]. Nothing is downloaded.
    """
    bundle = digits(num_classes, image_size, val_fraction, augment_shift)
    g = torch.Generator().manual_seed(0)
    for part in (bundle.train, bundle.val):
        x = part.images
        n = x.shape[0]
        angle = (torch.rand(n, generator=g) * 2 - 1) * rotate_deg * torch.pi / 180
        scale = 0.8 + 0.4 * torch.rand(n, generator=g)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [
                torch.stack([cos, -sin, torch.zeros(n)], 1),
                torch.stack([sin, cos, torch.zeros(n)], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        warped = F.grid_sample(x, grid, align_corners=False)
        other = x[torch.randint(n, (n,), generator=g)].flip(-1)  # a mirrored distractor
        noisy = warped + distractor * other + noise * torch.randn(x.shape, generator=g)
        part.images = noisy.clamp(0, 1)
    return bundle


def _layout_error(root: str | None, problem: str) -> ConfigError:
    where = (
        "data.root is not set: pass data.root=/path/to/imagenet"
        if root is None
        else f"data.root={root!r}: {problem}"
    )
    return ConfigError(
        f"{where}. Expected ImageFolder layout:\n"
        "  ROOT/train/<class_name>/<image>.JPEG\n"
        "  ROOT/val/<class_name>/<image>.JPEG   (same class folders as train/)\n"
        "For a run that needs no data set, use the embedded digits data: data=digits "
        "(the default of `python train.py`)."
    )


def check_imagefolder_root(root: str | None, num_classes: int | None = None) -> list[str]:
    """Check ``root`` has ``train/`` and ``val/`` with the same non-empty class folders (at
    least 2, and ``num_classes`` of them when given).

    Returns the sorted class names; raises ``ConfigError`` naming the expected layout and the
    embedded alternative (``data=digits``).
    """
    if root in (None, "", "???"):
        raise _layout_error(None, "not set")
    r = Path(root).expanduser()
    if not r.is_dir():
        raise _layout_error(root, "no such directory")
    classes = {}
    for split in ("train", "val"):
        d = r / split
        if not d.is_dir():
            raise _layout_error(root, f"missing {split}/ folder")
        cls = sorted(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not cls:
            raise _layout_error(root, f"{split}/ has no class folders")
        empty = [
            c
            for c in cls
            if not any(f.suffix.lower() in IMAGE_SUFFIXES for f in (d / c).rglob("*"))
        ]
        if empty:
            raise _layout_error(root, f"{split}/{empty[0]} holds no images ({len(empty)} empty)")
        classes[split] = cls
    if classes["train"] != classes["val"]:
        diff = sorted(set(classes["train"]) ^ set(classes["val"]))
        raise _layout_error(root, f"train/ and val/ class folders differ (e.g. {diff[:3]})")
    found = classes["train"]
    if len(found) < 2:
        raise _layout_error(
            root, f"only one class folder ({found[0]!r}): a classifier needs at least 2 classes"
        )
    if num_classes is not None and int(num_classes) != len(found):
        raise ConfigError(
            f"data.num_classes={num_classes} but {root}/train has {len(found)} class folders; "
            f"set data.num_classes={len(found)} (or null to count them)"
        )
    return found


@DATASETS.register("imagenet")
def imagenet(
    root: str | None = None,
    num_classes: int | None = None,
    image_size: int = 224,
    resize_size: int = 256,
    on_error: str = "raise",
    loader: str = "torchvision",
    decode_device: str = "cpu",
) -> DataBundle:
    """ImageNet (or any classification set) in ImageFolder layout under ``root``.

    Train: ``RandomResizedCrop(image_size)`` + horizontal flip; val: ``Resize(resize_size)`` +
    ``CenterCrop(image_size)``; both normalized with the ImageNet mean/std. ``loader`` picks the
    decoder and where it runs (``pil``, ``torchvision``; ``decode_device`` for the latter), with
    the same samples, crop boxes and order in each: see ``fst.data.loaders``. Unreadable image
    files stop the run naming the file (``on_error="raise"``) or are skipped and counted
    (``"skip"``), see ``fst.data.images.SafeImageDataset``. The layout is checked by
    ``imagenet.check`` (the engine runs it before building anything).
    """
    decode_device = check_loader(loader, decode_device)

    r = Path(root).expanduser()

    def folder(split, train):
        ds, collate = LOADERS.get(loader)(
            r / split,
            train=train,
            image_size=image_size,
            resize_size=resize_size,
            decode_device=decode_device,
        )
        return SafeImageDataset(ds, on_error=on_error), collate

    train, collate_fn = folder("train", True)
    val, _ = folder("val", False)
    return DataBundle(train=train, val=val, collate_fn=collate_fn, num_classes=len(train.classes))


def _check_imagenet(root=None, num_classes=None, loader="torchvision", decode_device="cpu", **_):
    check_loader(loader, decode_device)
    return check_imagefolder_root(root, num_classes)


# The dataset check protocol (fst.engine.validate.check_data): run once, before anything is built.
imagenet.check = _check_imagenet
