"""An ImageFolder of real-size JPEG photographs made from the pictures scikit-image ships.

For loader benchmarks and tests that need ImageNet-like files without a download: every image
is a random crop of one of scikit-image's colour photographs (astronaut, coffee, chelsea,
rocket, ...; the class is the photograph), resized to an ImageNet-like size (long side ~500 px,
aspect 4:3, 3:4, 3:2 or 1:1, so mostly 500x375), randomly mirrored, about 2% converted to
grayscale (ImageNet has grayscale JPEGs too) and saved as a baseline JPEG with 4:2:0 chroma
subsampling at quality 75-95. Deterministic for a given ``seed``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import skimage.data as sd
from PIL import Image
from tqdm.auto import tqdm

#: scikit-image's bundled colour photographs (function names in ``skimage.data``).
PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
    "stereo_motorcycle",
)
#: (width, height) aspect choices and their probabilities: landscape 4:3 dominates ImageNet.
ASPECTS = ((4, 3), (3, 4), (3, 2), (1, 1))
ASPECT_P = (0.6, 0.15, 0.15, 0.1)
GRAY_P = 0.02


def default_cache_dir() -> Path:
    """``$FST_CACHE`` if set, else ``outputs/cache`` (relative to the working directory)."""
    base = os.environ.get("FST_CACHE")
    return Path(base).expanduser() if base else Path("outputs") / "cache"


def _photo(name: str) -> np.ndarray:
    img = getattr(sd, name)()
    if name == "stereo_motorcycle":
        img = img[0]  # (left, right, disparity)
    return np.ascontiguousarray(img[..., :3])


def _make_image(photo: np.ndarray, rng: np.random.Generator, long_side: int):
    aw, ah = ASPECTS[rng.choice(len(ASPECTS), p=ASPECT_P)]
    long_ = int(round(long_side * rng.uniform(0.8, 1.28))) if rng.random() < 0.15 else long_side
    w, h = (long_, long_ * ah // aw) if aw >= ah else (long_ * aw // ah, long_)
    ph, pw = photo.shape[:2]
    # Largest crop of the photo with the target aspect, scaled by 60-100% (linear), anywhere.
    cw = min(pw, ph * w / h)
    frac = rng.uniform(0.6, 1.0)
    cw, ch = cw * frac, cw * frac * h / w
    x0, y0 = rng.uniform(0, pw - cw), rng.uniform(0, ph - ch)
    img = Image.fromarray(photo).resize(
        (w, h), Image.Resampling.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch)
    )
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < GRAY_P:
        img = img.convert("L")
    return img, int(rng.integers(75, 96))


def make_photo_folder(
    root: str | Path,
    n_train: int = 3000,
    n_val: int = 300,
    long_side: int = 500,
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Write ``root/{train,val}/<photo>/<photo>_<i>.JPEG`` (``n_train``/``n_val`` images over the
    classes in ``PHOTOS``) unless ``root`` already holds this exact set (``photos.json``).
    The set is written into a temporary sibling first and renamed: a half-written set is never
    taken for a finished one. Returns ``root``."""
    if min(n_train, n_val) < len(PHOTOS):
        raise ValueError(
            f"n_train={n_train}, n_val={n_val}: each split needs at least one image per class "
            f"({len(PHOTOS)} classes)"
        )
    root = Path(root)
    spec = {"n_train": n_train, "n_val": n_val, "long_side": long_side, "seed": seed, "v": 1}
    marker = root / "photos.json"
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return root
    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    photos = {name: _photo(name) for name in PHOTOS}
    rng = np.random.default_rng(seed)
    jobs = [("train", i) for i in range(n_train)] + [("val", i) for i in range(n_val)]
    for split, i in tqdm(jobs, desc=f"writing {root}", disable=not progress, unit="img"):
        name = PHOTOS[i % len(PHOTOS)]
        img, quality = _make_image(photos[name], rng, long_side)
        d = tmp / split / name
        d.mkdir(parents=True, exist_ok=True)
        img.save(d / f"{name}_{i:06d}.JPEG", quality=quality, subsampling=2)
    (tmp / "photos.json").write_text(json.dumps(spec))
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(root)
    return root
