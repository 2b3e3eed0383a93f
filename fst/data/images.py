"""Reading image files: decoding to RGB, and the ``data.on_error`` policy for unreadable files.

``load_image`` opens a file as an 8-bit RGB ``PIL.Image``; a file that cannot be opened or
decoded raises ``UnreadableImageError`` naming it. 16-bit images (PNG ``I;16``, 32-bit ``I``)
are scaled to 8 bits (``value >> 8``) instead of being clipped at 255, as PIL's plain
``convert("RGB")`` would do. ``SafeImageDataset`` wraps a map-style dataset and, with
``on_error="skip"``, replaces a sample whose image is unreadable by the next readable one (batch
shapes stay fixed), logs the file and counts it in ``.skipped`` (shared across DataLoader worker
processes); with ``on_error="raise"`` the error propagates.
"""

from __future__ import annotations

import logging
import multiprocessing
import os

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fst.types import ConfigError, FstError

log = logging.getLogger(__name__)

#: File suffixes counted as images (lower case), e.g. by the ImageFolder layout check.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ON_ERROR_CHOICES = ("skip", "raise")
#: ImageNet's per-channel mean and std of RGB in [0, 1]: every ImageFolder loader normalizes with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class UnreadableImageError(FstError, OSError):
    """An image file cannot be opened or decoded. ``.path`` names it."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str):
        self.path = str(path)
        super().__init__(
            f"cannot read image {self.path}: {cause}. data.on_error=skip skips unreadable "
            "images (counted and logged); data.on_error=raise stops at the first one"
        )


def _to_rgb(img):
    """8-bit RGB of ``img``. 16-bit integer images keep their top 8 bits (``value >> 8``);
    PIL's ``convert("RGB")`` would clip every value above 255 to white."""
    if img.mode.startswith("I;16") or img.mode == "I":
        a = np.asarray(img, dtype=np.int64)
        top = int(a.max(initial=0))
        if top > 65535 or int(a.min(initial=0)) < 0:
            raise ValueError(
                f"{img.mode} image with values in [{a.min()}, {top}], outside 16 bits; convert "
                "it to an 8- or 16-bit PNG/TIFF first"
            )
        # Mode I holding 8-bit values (some TIFF writers) is used as is.
        shift = 8 if img.mode.startswith("I;16") or top > 255 else 0
        return Image.fromarray((a >> shift).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        raise ValueError(
            "32-bit float image: its value range is unknown; convert it to an 8- or 16-bit "
            "integer image first"
        )
    return img.convert("RGB")


def load_image(path: str | os.PathLike):
    """Open ``path`` as an 8-bit RGB ``PIL.Image`` (decoded now, not lazily); errors become
    ``UnreadableImageError``. A drop-in ``loader=`` for ``torchvision.datasets.ImageFolder``."""
    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return _to_rgb(img)  # converting forces the full decode inside the try
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,  # larger than PIL's MAX_IMAGE_PIXELS limit allows
    ) as e:
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigError(
            f"data.on_error={on_error!r}; valid choices: {', '.join(ON_ERROR_CHOICES)}"
        )
    return on_error


class SafeImageDataset(torch.utils.data.Dataset):
    """Apply the ``data.on_error`` policy to a map-style image dataset.

    ``on_error="skip"``: a sample whose image raises ``UnreadableImageError`` (use
    ``load_image`` as the dataset's loader) is logged and replaced by the next readable one
    (index + 1, wrapping), so every batch keeps its size; ``.skipped`` counts the unreadable
    reads in all DataLoader workers together (a file read in several epochs counts each time).
    After ``max_consecutive`` unreadable samples in a row it raises: the data is broken, not a
    few files. ``on_error="raise"``: the error propagates, naming the file.

    Attributes of the wrapped dataset (``classes``, ``targets``, ...) are reachable through it.
    """

    def __init__(self, dataset, on_error: str = "skip", max_consecutive: int = 50):
        self.dataset = dataset
        self.on_error = check_on_error(on_error)
        self.max_consecutive = max_consecutive
        # Shared memory: workers are separate processes, the count must reach the main one.
        self._skipped = multiprocessing.get_context().Value("q", 0)

    @property
    def skipped(self) -> int:
        return int(self._skipped.value)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int):
        if self.on_error == "raise":
            return self.dataset[index]
        n = len(self.dataset)
        for attempt in range(min(self.max_consecutive, n)):
            i = (index + attempt) % n
            try:
                return self.dataset[i]
            except UnreadableImageError as e:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                    total = self._skipped.value
                log.warning(
                    "skipping unreadable image (%d so far; summary.json counts them in "
                    "unreadable_images_skipped): %s",
                    total,
                    e.path,
                )
        raise UnreadableImageError(
            getattr(self.dataset, "root", "dataset"),
            f"{min(self.max_consecutive, n)} unreadable images in a row from index {index}; "
            "check the data directory",
        )


def unreadable_skipped(*datasets) -> int:
    """Images skipped as unreadable (``data.on_error=skip``) in ``datasets`` so far."""
    return sum(int(getattr(ds, "skipped", 0)) for ds in datasets)
