"""Inputs for the feature analyses (Figures 4 and 5): natural images and white noise.

Natural images come from files that ship inside installed packages (scikit-image's
``skimage/data`` photographs, scikit-learn's two sample images), read straight from disk so
nothing downloads; or from a user's ImageNet-style folder. Crops are deterministic given
``seed``. All tensors are ``[N, 3, size, size]`` float32, ImageNet-normalised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage
import sklearn.datasets
import torch
import torch.nn.functional as F
from skimage import io

from fst.data.images import IMAGENET_MEAN, IMAGENET_STD

# Photographs of natural scenes shipped in skimage/data (no fetcher, no download).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "camera.png",
    "coins.png",
    "moon.png",
    "horse.png",
)


def _shipped_image_paths() -> list[Path]:
    data = Path(skimage.__file__).parent / "data"
    paths = [data / n for n in SKIMAGE_PHOTOS if (data / n).exists()]
    sk = Path(sklearn.datasets.__file__).parent / "images"
    paths += sorted(sk.glob("*.jpg"))
    return paths


def _read_rgb(path: Path) -> torch.Tensor:
    """``[3, H, W]`` float in [0, 1]; grey images are repeated to 3 channels, alpha dropped."""
    a = np.asarray(io.imread(str(path)))
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    a = a[..., :3]
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()
    return t / (255.0 if a.dtype == np.uint8 else max(float(t.max()), 1.0))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def natural_images(
    n: int, size: int = 224, seed: int = 0, folder: str | None = None
) -> torch.Tensor:
    """``n`` natural-image crops ``[n, 3, size, size]``, ImageNet-normalised.

    Each source image is resized so its short side is ``size * 1.15`` and random ``size``
    crops are taken (cycling over the images). ``folder``: a directory searched recursively
    for ``*.jpg/*.jpeg/*.png`` (e.g. an ImageNet val folder) instead of the shipped photos.
    """
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise FileNotFoundError(
                f"image folder {folder!r} does not exist; pass a directory of JPEG/PNG images"
            )
        paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
        if not paths:
            raise FileNotFoundError(f"no .jpg/.jpeg/.png files under {folder!r}")
    else:
        paths = _shipped_image_paths()
        if not paths:
            raise FileNotFoundError(
                "no shipped images found in scikit-image / scikit-learn; pass folder="
            )
    return _crops(paths, n, size, seed)[0]


def _crops(paths: list[Path], n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random ``size`` crops cycling over ``paths`` (short side resized to 1.15 * size),
    ImageNet-normalised, and the index in ``paths`` of each crop's image."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(paths), generator=g).tolist()
    cache: dict[int, torch.Tensor] = {}
    out, labels = [], []
    for i in range(n):
        k = order[i % len(paths)]
        labels.append(k)
        if k not in cache:
            img = _read_rgb(paths[k])
            short = min(img.shape[-2:])
            scale = size * 1.15 / short
            hw = (max(size, round(img.shape[-2] * scale)), max(size, round(img.shape[-1] * scale)))
            cache[k] = F.interpolate(
                img[None], size=hw, mode="bilinear", antialias=True, align_corners=False
            )[0]
        img = cache[k]
        top = int(torch.randint(0, img.shape[-2] - size + 1, (1,), generator=g))
        left = int(torch.randint(0, img.shape[-1] - size + 1, (1,), generator=g))
        out.append(img[:, top : top + size, left : left + size])
    return _normalise(torch.stack(out).clamp(0, 1)), torch.tensor(labels)


def photo_crops(n: int, size: int = 224, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)``: ``n`` random crops of the shipped photographs (as
    :func:`natural_images`) and, as a class label, which photograph each crop comes from
    (``len(shipped_photo_names())`` classes). A task any network can be trained on here."""
    paths = _shipped_image_paths()
    if not paths:
        raise FileNotFoundError("no shipped images found in scikit-image / scikit-learn")
    return _crops(paths, n, size, seed)


def shipped_photo_names() -> list[str]:
    """File names of the shipped photographs, in label order of :func:`photo_crops`."""
    return [p.name for p in _shipped_image_paths()]


def white_noise(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """i.i.d. uniform [0, 1] pixels, ImageNet-normalised like the natural images."""
    g = torch.Generator().manual_seed(seed)
    return _normalise(torch.rand(n, 3, size, size, generator=g))
