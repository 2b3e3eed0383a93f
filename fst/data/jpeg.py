"""Image file bytes -> ``uint8 [3, H, W]`` RGB tensors: libjpeg-turbo, nvJPEG, PIL for the rest.

Every decoder here returns the layout ``torchvision.io`` uses: ``uint8 [3, H, W]``, RGB, values
0..255 (channel-first; the CPU decoder's result is a channel-last buffer seen through a
channel-first view, which is what the fast uint8 resize kernels want).

Which decoder reads a file (the same verdict as ``fst.engine.validate.load_image``, i.e. PIL):

* YCbCr and grayscale JPEGs (bytes start ``FF D8 FF``, 3 or 1 components): ``torchvision.io.
  decode_jpeg`` (libjpeg-turbo on CPU, batched nvJPEG on CUDA) with grayscale replicated to RGB
  as PIL's ``convert("RGB")`` does; the CPU pixels are bit-identical to PIL's (both are
  libjpeg-turbo; ``tests/data/test_loaders.py``).
* anything else (CMYK/YCCK JPEGs, whose Adobe inversion conventions PIL handles, PNG incl.
  16-bit, palette and alpha, BMP, TIFF, WebP, ...) and any JPEG the torchvision decoder refuses:
  PIL through ``load_image``, so a file PIL reads gives PIL's pixels and a file PIL cannot read
  raises ``UnreadableImageError`` naming it, exactly as the ``pil`` loader does. (``torchvision.io.decode_image`` is *not* the fallback on purpose: it scales
  16-bit PNGs where PIL's ``convert("RGB")`` clips them, and the samples would differ.)

torchvision 0.29 deprecates its image decoders in favour of TorchCodec; the warning it raises
on every call is silenced here (the decoders still work and are pinned in ``.ci/run``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.transforms.v2.functional import pil_to_tensor

from fst.data.images import load_image

# libjpeg-turbo / nvJPEG: removed in a torchvision after 0.29 (TorchCodec replaces them).
_DECODER_IMPORT_ERROR = ""
try:
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.io.image import _has_image_ops
except ImportError as _e:
    decode_jpeg = _has_image_ops = ImageReadMode = None
    _DECODER_IMPORT_ERROR = str(_e)

JPEG_MAGIC = b"\xff\xd8\xff"
#: Start-of-frame markers (baseline, extended, progressive, lossless; Huffman or arithmetic).
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: no length field
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


@dataclass(frozen=True)
class JpegHeader:
    """What a JPEG's headers say: ``height x width`` pixels, ``components`` channels (1
    grayscale, 3 YCbCr/RGB, 4 CMYK/YCCK), ``progressive`` (SOF2/6/10/14), and ``scan_start``,
    the byte offset of the first start-of-scan marker (where the image data begins)."""

    height: int
    width: int
    components: int
    progressive: bool
    scan_start: int


def parse_jpeg_header(data: bytes | memoryview) -> JpegHeader | None:
    """The headers of JPEG ``data`` (bytes or a ``uint8`` buffer), or ``None`` when ``data`` is
    not a JPEG, its markers are broken before the first scan, it has no frame header before
    the first scan, or the height is left to a DNL marker (height 0). Reads only the marker
    segments before the image data: microseconds."""
    data = memoryview(data).cast("B")
    n = len(data)
    if n < 4 or bytes(data[:3]) != JPEG_MAGIC:
        return None
    frame = None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker == 0xDA:  # start of scan: the headers end here
            return None if frame is None else JpegHeader(*frame, scan_start=i)
        length = (data[i + 2] << 8) | data[i + 3]
        if length < 2:
            return None
        if marker in _SOF and frame is None:
            if i + 10 > n:
                return None
            h = (data[i + 5] << 8) | data[i + 6]
            w = (data[i + 7] << 8) | data[i + 8]
            if h == 0 or w == 0:
                return None
            frame = (h, w, data[i + 9], marker in (0xC2, 0xC6, 0xCA, 0xCE))
        i += 2 + length
    return None


def has_eoi(data: bytes | memoryview, start: int = 2) -> bool:
    """Whether JPEG ``data`` holds an end-of-image marker after byte ``start`` (pass the
    header's ``scan_start``: an EXIF thumbnail before it has an end marker of its own).
    Truncated files (the common broken download) have none, and PIL refuses them ("image file
    is truncated"). In entropy-coded data a 0xFF byte is always stuffed (``FF 00``), so
    ``FF D9`` after the first scan is the real marker."""
    data = data if isinstance(data, bytes) else bytes(data)
    return data.rfind(b"\xff\xd9") >= start  # from the end: the marker is normally the last bytes


def torchvision_decoder_missing() -> str | None:
    """Why ``torchvision.io.decode_jpeg`` cannot be used here, or ``None`` when it can."""
    if decode_jpeg is None:
        return f"torchvision has no torchvision.io.decode_jpeg ({_DECODER_IMPORT_ERROR})"
    if not _has_image_ops():
        return "torchvision's image extension (libjpeg-turbo) failed to load"
    return None


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
        return fn(*args, **kwargs)


def bytes_tensor(data: bytes) -> torch.Tensor:
    """``data`` as a ``uint8 [N]`` tensor sharing its memory (``decode_jpeg``'s input)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_jpeg_cpu(data: torch.Tensor) -> torch.Tensor:
    """libjpeg-turbo decode of JPEG bytes ``data: uint8 [N]`` -> ``uint8 [3, H, W]`` RGB.
    Raises ``RuntimeError`` for data libjpeg-turbo cannot decode."""
    return _quiet(decode_jpeg, data, mode=ImageReadMode.RGB)


def pil_rgb(path: str | os.PathLike) -> torch.Tensor:
    """PIL's decode of ``path`` (``load_image``: RGB, errors -> ``UnreadableImageError``) as
    ``uint8 [3, H, W]``."""
    return pil_to_tensor(load_image(path))


def read_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode the image file ``path`` to ``uint8 [3, H, W]`` RGB: libjpeg-turbo for YCbCr and
    grayscale JPEGs, PIL for everything else and for JPEGs libjpeg-turbo refuses (then PIL's verdict stands:
    ``UnreadableImageError`` naming the file when PIL cannot read it either). A drop-in
    ``loader=`` for ``torchvision.datasets.ImageFolder``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return pil_rgb(path)  # raises UnreadableImageError naming the file and the cause
    header = parse_jpeg_header(data)
    if header is not None and header.components in (1, 3):
        try:
            return decode_jpeg_cpu(bytes_tensor(data))
        except RuntimeError:
            pass
    return pil_rgb(path)


def decode_jpegs(
    datas: Sequence[torch.Tensor], device: torch.device | str, paths: Sequence[str]
) -> list[torch.Tensor]:
    """Decode a batch of JPEGs (``uint8 [N_i]`` CPU tensors) on ``device`` -> ``uint8 [3, H_i,
    W_i]`` RGB tensors there. On CUDA the whole list goes to nvJPEG in one batched call; an
    image nvJPEG refuses is decoded alone with ``read_rgb`` on the CPU (``paths[i]`` names it,
    and an ``UnreadableImageError`` propagates when PIL cannot read it either) and moved over."""
    device = torch.device(device)
    if not datas:
        return []
    if device.type == "cuda":
        try:
            return list(_quiet(decode_jpeg, list(datas), mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            pass  # one bad image fails the batch: find it below
        out = []
        for data, path in zip(datas, paths):
            try:
                out.append(_quiet(decode_jpeg, data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(read_rgb(path).to(device))
        return out
    out = []
    for data, path in zip(datas, paths):
        try:
            out.append(decode_jpeg_cpu(data))
        except RuntimeError:
            out.append(read_rgb(path))
        if device.type != "cpu":
            out[-1] = out[-1].to(device)
    return out
