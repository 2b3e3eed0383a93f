"""Classification data: embedded digits and ImageFolder trees."""

from __future__ import annotations

import pytest
import torch

from fst.data import DATASETS
from fst.types import ConfigError
from tests.conftest import make_imagefolder


def test_digits_split_is_fixed_and_stratified():
    a = DATASETS.get("digits")(image_size=32, augment_shift=0)
    b = DATASETS.get("digits")(image_size=32, augment_shift=0)
    assert (len(a.train), len(a.val), a.num_classes) == (1437, 360, 10)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert torch.bincount(a.val.labels).min() >= 35  # every class in val (stratified)
    x, y = a.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert x.min() >= -1 and x.max() <= 1


def test_digits_shift_augmentation_is_seeded():
    d = DATASETS.get("digits")(image_size=16, augment_shift=2)
    torch.manual_seed(0)
    a = d.train[3][0]
    torch.manual_seed(0)
    assert torch.equal(a, d.train[3][0])


def test_imagefolder(tmp_path):
    root = make_imagefolder(tmp_path, classes=("a", "b"), per_class=2, size=20)
    d = DATASETS.get("imagenet")(root=str(root), image_size=16, resize_size=18)
    assert d.num_classes == 2 and len(d.train) == 4 and len(d.val) == 4
    x, y = d.val[0]
    assert x.shape == (3, 16, 16) and y in (0, 1)


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda r: None, "no such directory"),
        (lambda r: (r / "train" / "a").mkdir(parents=True), "holds no images|missing val"),
        (
            lambda r: (
                make_imagefolder(r, classes=("a",)) and (r / "val" / "a").rename(r / "val" / "z")
            ),
            "differ",
        ),
        (
            lambda r: make_imagefolder(r, classes=("a",)),
            "only one class folder .'a'.: a classifier needs at least 2 classes",
        ),
    ],
)
def test_imagefolder_layout_errors(tmp_path, setup, match):
    """The dataset check protocol: ``DATASETS[name].check(**data)``, run once by the engine."""
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(ConfigError, match=match) as e:
        DATASETS.get("imagenet").check(root=str(root))
    assert "train/<class_name>" in str(e.value) and "data=digits" in str(e.value)


def test_imagefolder_num_classes_is_checked(tmp_path):
    root = make_imagefolder(tmp_path, classes=("a", "b"), per_class=1, size=8)
    assert DATASETS.get("imagenet").check(root=str(root), num_classes=2) == ["a", "b"]
    with pytest.raises(ConfigError, match="data.num_classes=5 but .* has 2 class folders"):
        DATASETS.get("imagenet").check(root=str(root), num_classes=5)


def test_digits_hard_is_deterministic_and_corrupted():
    a = DATASETS.get("digits_hard")(image_size=16, augment_shift=0)
    b = DATASETS.get("digits_hard")(image_size=16, augment_shift=0)
    plain = DATASETS.get("digits")(image_size=16, augment_shift=0)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.images, b.val.images)
    assert torch.equal(a.train.labels, plain.train.labels)
    assert a.train.images.min() >= 0 and a.train.images.max() <= 1
    assert (a.train.images - plain.train.images).abs().mean() > 0.1
