"""Reading image files: 8-bit RGB (16-bit scaled, not clipped), unreadable files and data.on_error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fst.data.images import SafeImageDataset, UnreadableImageError, load_image
from fst.types import ConfigError


def _folder_with_bad_image(root: Path) -> Path:
    d = root / "a"
    d.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(d / f"{i}.png")
    (d / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # unreadable
    return root


def test_load_image_names_the_file(tmp_path):
    root = _folder_with_bad_image(tmp_path)
    assert load_image(root / "a" / "0.png").size == (8, 8)
    with pytest.raises(UnreadableImageError) as e:
        load_image(root / "a" / "2.png")
    assert str(root / "a" / "2.png") in str(e.value) and "data.on_error=skip" in str(e.value)
    assert e.value.path == str(root / "a" / "2.png")


def test_unreadable_images_are_skipped_counted_and_logged(tmp_path, caplog):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    root = _folder_with_bad_image(tmp_path)
    ds = SafeImageDataset(ImageFolder(root, transform=pil_to_tensor, loader=load_image), "skip")
    assert len(ds) == 4 and ds.classes == ["a"]
    with caplog.at_level("WARNING"):
        items = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 1 and "2.png" in caplog.text
    assert torch.equal(items[2][0], items[3][0])  # replaced by the next readable image
    # Worker processes share the count.
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    assert sum(len(b[1]) for b in loader) == 4
    assert ds.skipped == 2


def test_unreadable_image_raises_with_on_error_raise(tmp_path):
    from torchvision.datasets import ImageFolder

    root = _folder_with_bad_image(tmp_path)
    ds = SafeImageDataset(ImageFolder(root, loader=load_image), "raise")
    ds[1]
    with pytest.raises(UnreadableImageError, match="2.png"):
        ds[2]


def test_all_images_unreadable_is_an_error(tmp_path):
    from torchvision.datasets import ImageFolder

    d = tmp_path / "a"
    d.mkdir()
    for i in range(3):
        (d / f"{i}.png").write_bytes(b"junk")
    ds = SafeImageDataset(ImageFolder(tmp_path, loader=load_image), "skip", max_consecutive=5)
    with pytest.raises(UnreadableImageError, match="3 unreadable images in a row"):
        ds[0]
    with pytest.raises(ConfigError, match="valid choices: skip, raise"):
        SafeImageDataset(ds.dataset, "ignore")


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    # A 16-bit ramp: PIL's convert("RGB") clips everything above 255 to white.
    ramp = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I;16")
    rgb = np.asarray(load_image(tmp_path / "ramp.png"))
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], (ramp >> 8).astype(np.uint8))
    assert len(np.unique(rgb)) == 256  # every level survives (clipping leaves 2)


def test_float_image_is_refused_naming_the_file(tmp_path):
    Image.fromarray(np.random.rand(8, 8).astype(np.float32), "F").save(tmp_path / "f.tiff")
    with pytest.raises(UnreadableImageError, match="f.tiff.*float image.*convert it"):
        load_image(tmp_path / "f.tiff")
