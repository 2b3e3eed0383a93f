"""How ImageFolder images become training tensors: ``LOADERS[data.loader]``.

* ``pil``: PIL decodes (``load_image``) and ``torchvision.transforms`` augment the PIL image,
  then ``ToTensor`` + ``Normalize``; all in the DataLoader workers.
* ``torchvision``: ``torchvision.io.decode_jpeg`` (libjpeg-turbo) decodes, PIL only for files
  that are not YCbCr/grayscale JPEGs (``fst.data.jpeg``), and ``transforms.v2`` functionals
  augment the ``uint8`` tensor where it was decoded: in the workers (``decode_device=cpu``), or
  on the GPU in the main process after a batched nvJPEG decode (``decode_device=cuda``).
* ``dali``: not provided; fails with a ``ConfigError`` that says why (NVIDIA DALI is neither
  built nor measured here) and what to use instead.

Train: ``RandomResizedCrop(image_size)`` (scale 0.08-1, ratio 3/4-4/3) + horizontal flip;
val: ``Resize(resize_size)`` (shorter side) + ``CenterCrop(image_size)``; both end as ``float32
[3, S, S]`` normalized with the ImageNet mean/std.

Every loader gives the same samples: the same files and labels (``ImageFolder``), the same
order (the engine's sampler) and the same crop boxes and flips, because the random parameters
are drawn by the same function, ``torchvision.transforms.RandomResizedCrop.get_params``, then
``torch.rand(1) < 0.5`` for the flip (what ``RandomHorizontalFlip`` draws), from the same RNG
stream: the global torch RNG of the process that loads the sample (the main process with
``num_workers=0``, else the DataLoader worker, seeded by the DataLoader). The decoded pixels are
identical (both use libjpeg-turbo); the resized pixels differ by PIL's vs torch's antialiased
bilinear kernels rounding, by at most two levels (2/255) in ``tests/data/test_loaders.py``.

With ``decode_device=cuda`` the workers only read the file bytes, parse the JPEG header (for the
size the crop is drawn from) and draw the parameters; ``EncodedBatch.to(device)`` (called by the
task when it moves the batch) decodes the batch with nvJPEG and crops, resizes, flips and
normalizes on the GPU. Non-JPEG, CMYK and truncated files are decoded (or refused) in the worker
as with ``decode_device=cpu``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.transforms.v2 import functional as F

from fst.registry import Registry
from fst.types import ConfigError

from . import jpeg
from .images import IMAGENET_MEAN, IMAGENET_STD, load_image

log = logging.getLogger(__name__)

#: ``LOADERS[data.loader](root, train=..., image_size=..., resize_size=..., decode_device=...)``
#: -> ``(dataset, collate_fn)``: an ``ImageFolder`` of one split and its collate (None: default).
LOADERS: Registry[Callable[..., tuple[Dataset, Callable | None]]] = Registry("image loader")
DECODE_DEVICES = ("cpu", "cuda", "auto")

DALI_UNAVAILABLE = (
    "data.loader=dali is not available: a DALI pipeline (GPU decode and augmentation) needs "
    "NVIDIA DALI and a GPU to build and to measure against the other loaders, and fst ships none "
    "because it has not been measured on one. Use data.loader=torchvision (with "
    "data.decode_device=cuda it decodes JPEG batches with nvJPEG on the GPU) or data.loader=pil"
)


def check_loader(loader: str = "torchvision", decode_device: str = "cpu") -> str:
    """Check ``data.loader`` and ``data.decode_device``; return the decode device (``cpu`` or
    ``cuda``; ``auto`` is ``cuda`` when CUDA is available). Raises ``ConfigError`` with the fix."""
    if loader not in LOADERS:
        raise ConfigError(f"data.loader={loader!r}; valid choices: {', '.join(sorted(LOADERS))}")
    if loader == "dali":
        raise ConfigError(DALI_UNAVAILABLE)
    if loader == "torchvision" and (why := jpeg.torchvision_decoder_missing()):
        raise ConfigError(f"data.loader=torchvision: {why}; use data.loader=pil")
    if decode_device not in DECODE_DEVICES:
        raise ConfigError(
            f"data.decode_device={decode_device!r}; valid choices: {', '.join(DECODE_DEVICES)}"
        )
    if decode_device == "auto":
        decode_device = "cuda" if loader == "torchvision" and torch.cuda.is_available() else "cpu"
    if decode_device == "cuda":
        if loader != "torchvision":
            raise ConfigError(
                f"data.loader={loader} decodes with PIL in the DataLoader workers; "
                "data.decode_device=cuda needs data.loader=torchvision"
            )
        if not torch.cuda.is_available():
            raise ConfigError(
                "data.decode_device=cuda but CUDA is not available on this machine; use "
                "data.decode_device=cpu (decode in the DataLoader workers) or auto"
            )
    return decode_device


# --------------------------------------------------------------------------------------------
# augmentations: random parameters drawn apart from the pixels they are applied to
# --------------------------------------------------------------------------------------------

#: ``(top, left, height, width, flip)`` of a train crop; ``None`` for val (no randomness).
CropParams = tuple[int, int, int, int, bool]


@dataclass(frozen=True)
class TrainAugment:
    """``RandomResizedCrop(size, scale, ratio)`` then ``RandomHorizontalFlip(0.5)``, split into
    ``draw`` (the RNG, from the image size only) and ``apply`` (the pixels, on any device)."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def draw(self, height: int, width: int) -> CropParams:
        """The crop box and flip, drawn from the global torch RNG exactly as
        ``T.RandomResizedCrop(size)`` + ``T.RandomHorizontalFlip()`` draw them for a PIL image
        of that size (same function, same calls, same order)."""
        shape_only = torch.empty((), dtype=torch.uint8).expand(1, height, width)
        top, left, h, w = T.RandomResizedCrop.get_params(
            shape_only, list(self.scale), list(self.ratio)
        )
        return top, left, h, w, bool(torch.rand(1) < 0.5)

    def apply(self, image: torch.Tensor, params: CropParams) -> torch.Tensor:
        """``uint8 [3, H, W]`` -> ``uint8 [3, size, size]``: crop, antialiased bilinear resize,
        flip."""
        top, left, h, w, flip = params
        out = F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)
        return F.horizontal_flip(out) if flip else out

    def pil_transform(self):
        return T.Compose(
            [
                T.RandomResizedCrop(self.size, self.scale, self.ratio),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )


@dataclass(frozen=True)
class ValAugment:
    """``Resize(resize_size)`` (shorter side) then ``CenterCrop(size)``: nothing random."""

    size: int
    resize_size: int

    def draw(self, height: int, width: int) -> None:
        return None

    def apply(self, image: torch.Tensor, params: None = None) -> torch.Tensor:
        out = F.resize(image, [self.resize_size], antialias=True)
        return F.center_crop(out, [self.size, self.size])

    def pil_transform(self):
        return T.Compose(
            [
                T.Resize(self.resize_size),
                T.CenterCrop(self.size),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )


Augment = TrainAugment | ValAugment


def normalize(images: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., 3, H, W]`` -> ``float32`` ``(x / 255 - mean) / std`` with the ImageNet
    mean/std (what ``ToTensor`` + ``Normalize`` compute, up to float rounding), as one
    multiply and one add per element on the images' device (in place on the new float copy:
    about 2.5x faster than ``addcmul`` or ``Normalize`` on one CPU core)."""
    scale, shift = _affine(images.device)
    return images.to(torch.float32, copy=True).mul_(scale).add_(shift)


_AFFINE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _affine(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale = 1 / (255 std)``, ``shift = -mean / std`` as ``[3, 1, 1]`` tensors on ``device``."""
    if device not in _AFFINE:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
        scale, shift = 1 / (255 * std), -mean / std
        _AFFINE[device] = (scale.float().to(device), shift.float().to(device))
    return _AFFINE[device]


class TensorTransform:
    """The ``ImageFolder`` transform of the ``torchvision`` loader on the CPU: ``uint8 [3, H,
    W]`` -> ``float32 [3, S, S]`` (draw, apply, normalize)."""

    def __init__(self, augment: Augment):
        self.augment = augment

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        params = self.augment.draw(image.shape[-2], image.shape[-1])
        return normalize(self.augment.apply(image, params))


# --------------------------------------------------------------------------------------------
# decode on the device: bytes and parameters in the workers, pixels on the GPU
# --------------------------------------------------------------------------------------------


@dataclass
class EncodedImage:
    """One sample on its way to the device. ``data``: the JPEG file's bytes (``uint8 [N]``,
    ``encoded=True``) or, for files nvJPEG is not given (non-JPEG, CMYK/YCCK, broken headers),
    the image already decoded in the worker (``uint8 [3, H, W]``). ``params``: the augmentation
    parameters, drawn in the worker (``None`` until then and for val)."""

    data: torch.Tensor
    encoded: bool
    height: int
    width: int
    path: str
    augment: Augment | None = None
    params: CropParams | None = None


def read_encoded(path: str | os.PathLike) -> EncodedImage:
    """The ``ImageFolder`` loader for ``decode_device=cuda``: the bytes of a YCbCr or grayscale
    JPEG that has an end-of-image marker, else the decoded image (``jpeg.read_rgb``, which
    raises ``UnreadableImageError`` for files PIL cannot read, as the other loaders do)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        data = b""
    header = jpeg.parse_jpeg_header(data)
    if header and header.components in (1, 3) and jpeg.has_eoi(data, header.scan_start):
        return EncodedImage(jpeg.bytes_tensor(data), True, header.height, header.width, str(path))
    image = jpeg.read_rgb(path)
    return EncodedImage(image, False, image.shape[-2], image.shape[-1], str(path))


class DrawParams:
    """The ``ImageFolder`` transform for ``decode_device=cuda``: draw the augmentation's random
    parameters now (in the worker, from its RNG stream, as the other loaders do)."""

    def __init__(self, augment: Augment):
        self.augment = augment

    def __call__(self, item: EncodedImage) -> EncodedImage:
        item.augment = self.augment
        item.params = self.augment.draw(item.height, item.width)
        return item


class EncodedBatch:
    """A batch of images that is decoded where it is moved: ``.to(device)`` returns ``float32
    [B, 3, S, S]`` normalized images on ``device``.

    The JPEG bytes of the batch travel from the worker as one ``uint8`` buffer (one shared
    memory block, pinned by the DataLoader's ``pin_memory``); images decoded in the worker
    travel as they are. On CUDA the JPEGs are decoded in one batched nvJPEG call, then each is
    cropped, resized and flipped there with its drawn parameters, and the batch normalized.
    A JPEG nvJPEG refuses is decoded on the CPU (``jpeg.read_rgb``); one PIL cannot read either
    raises ``UnreadableImageError`` here, whatever ``data.on_error`` says: the labels of the
    batch are fixed by now, so it cannot be swapped for the next readable file.
    """

    def __init__(self, items: list[EncodedImage]):
        self.augment = items[0].augment
        self.params = [it.params for it in items]
        self.paths = [it.path for it in items]
        self.jpeg_index = [k for k, it in enumerate(items) if it.encoded]
        chunks = [items[k].data for k in self.jpeg_index]
        self.buffer = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)
        ends = list(itertools.accumulate(c.numel() for c in chunks))
        self.bounds = list(zip([0, *ends[:-1]], ends))
        self.decoded = {k: it.data for k, it in enumerate(items) if not it.encoded}

    def __len__(self) -> int:
        return len(self.params)

    def pin_memory(self) -> EncodedBatch:
        self.buffer = self.buffer.pin_memory()
        self.decoded = {k: v.pin_memory() for k, v in self.decoded.items()}
        return self

    def to(self, device: torch.device | str, non_blocking: bool = False) -> torch.Tensor:
        device = torch.device(device)
        datas = [self.buffer[a:b] for a, b in self.bounds]
        paths = [self.paths[k] for k in self.jpeg_index]
        images: list[torch.Tensor | None] = [None] * len(self)
        for k, image in zip(self.jpeg_index, jpeg.decode_jpegs(datas, device, paths)):
            images[k] = image
        for k, image in self.decoded.items():
            images[k] = image.to(device, non_blocking=non_blocking)
        crops = [self.augment.apply(im, p) for im, p in zip(images, self.params)]
        return normalize(torch.stack(crops))


def collate_encoded(batch: list[tuple[EncodedImage, int]]) -> tuple[EncodedBatch, torch.Tensor]:
    """``DataLoader`` collate for ``decode_device=cuda``: ``(EncodedBatch, labels int64 [B])``."""
    items, labels = zip(*batch)
    return EncodedBatch(list(items)), torch.tensor(labels, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------------


def augment_for(train: bool, image_size: int, resize_size: int) -> Augment:
    return TrainAugment(image_size) if train else ValAugment(image_size, resize_size)


def image_folder(root: str | Path, **kwargs: Any) -> Dataset:
    """torchvision's ``ImageFolder``, minus two surprises: hidden folders (``.ipynb_checkpoints``,
    ``.snapshot``, ...) are neither classes nor sample folders, and a file reached twice through
    symbolic links (a link loop inside a class folder, followed until the OS gives up, would
    multiply that class) counts once."""

    class _Folder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            dirs = [e.name for e in os.scandir(directory) if e.is_dir()]
            hidden = sorted(d for d in dirs if d.startswith("."))
            if hidden:
                log.warning(
                    "%s: ignoring hidden folder(s) %s (not classes); rename without the leading "
                    "dot to make one a class",
                    directory,
                    ", ".join(hidden),
                )
            classes = sorted(d for d in dirs if not d.startswith("."))
            if not classes:
                raise FileNotFoundError(f"Couldn't find any class folder in {directory}.")
            return classes, {c: i for i, c in enumerate(classes)}

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                         allow_empty=False):  # fmt: skip
            samples = ImageFolder.make_dataset(
                directory, class_to_idx, extensions, is_valid_file, allow_empty
            )
            seen, out = set(), []
            for path, target in samples:
                rel = Path(path).relative_to(directory).parts
                real = os.path.realpath(path)
                if any(p.startswith(".") for p in rel[:-1]) or real in seen:
                    continue
                seen.add(real)
                out.append((path, target))
            if len(out) < len(samples):
                log.warning(
                    "%s: skipped %d file(s) in hidden folders or reached again through symbolic "
                    "links (a link loop?); each image counts once",
                    directory,
                    len(samples) - len(out),
                )
            return out

    return _Folder(str(root), **kwargs)


@LOADERS.register("pil")
def pil_folder(
    root: str | Path, *, train: bool, image_size: int, resize_size: int, decode_device: str = "cpu"
) -> tuple[Dataset, None]:
    """PIL decode and ``torchvision.transforms`` on PIL images in the workers."""
    tf = augment_for(train, image_size, resize_size).pil_transform()
    return image_folder(root, transform=tf, loader=load_image), None


@LOADERS.register("torchvision")
def torchvision_folder(
    root: str | Path, *, train: bool, image_size: int, resize_size: int, decode_device: str = "cpu"
) -> tuple[Dataset, Callable | None]:
    """libjpeg-turbo decode + ``transforms.v2`` in the workers (``decode_device=cpu``), or bytes
    in the workers and batched nvJPEG + augmentation on the GPU (``decode_device=cuda``)."""
    augment = augment_for(train, image_size, resize_size)
    if decode_device == "cuda":
        ds = image_folder(root, transform=DrawParams(augment), loader=read_encoded)
        return ds, collate_encoded
    return image_folder(root, transform=TensorTransform(augment), loader=jpeg.read_rgb), None


@LOADERS.register("dali")
def dali_folder(root: str | Path, **_) -> tuple[Dataset, None]:
    """Not provided (see ``DALI_UNAVAILABLE``)."""
    raise ConfigError(DALI_UNAVAILABLE)
