"""Checks that a run can work, made before any model, data or compute is set up; bad images.

``fst.engine.config.validate_config`` checks the config's *shape* (unknown keys, wrong types,
unknown registry names). ``check_run_config`` checks that the values fit together and fit this
machine: the device exists, the backend runs on it, the precision is supported there, the global
batch splits evenly over processes and accumulation steps, and the data directory has the
expected layout. Each failure is a ``ConfigError`` that says what to change.

Unreadable images (``data.on_error``): ``load_image`` raises ``UnreadableImageError`` naming the
file; ``SafeImageDataset`` wraps a map-style dataset and, with ``on_error="skip"``, replaces such
a sample by the next readable one (batch shapes stay fixed), logs the file and counts it in
``.skipped`` (shared across DataLoader worker processes); with ``on_error="raise"`` it fails.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fst.engine.config import ConfigError
from fst.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "ConfigError",
    "DATA_LAYOUTS",
    "ON_ERROR_CHOICES",
    "SafeImageDataset",
    "UnreadableImageError",
    "check_data_layout",
    "check_run_config",
    "load_image",
    "resolve_device",
]

#: Backends that run anywhere; any other backend name is taken as CUDA-only unless its
#: registry entry says ``needs_cuda = False``.
PORTABLE_BACKENDS = ("reference", "native")
ON_ERROR_CHOICES = ("skip", "raise")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default, throw_on_missing=False)
    return default if value is None else value


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; else ``torch.device(device)``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ConfigError(
            f"trainer.device={device!r} is not a device ({e}); use auto, cpu, cuda or cuda:N"
        ) from None


def world_size_from_env() -> int:
    """Number of processes the launcher started: torchrun's WORLD_SIZE, else a submitit SLURM
    job's SLURM_NTASKS (``fst.engine.dist.export_slurm_env`` turns it into WORLD_SIZE), else 1."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    if os.environ.get("SUBMITIT_EXECUTOR"):
        return int(os.environ.get("SLURM_NTASKS", "1"))
    return 1


def check_run_config(cfg: DictConfig | Mapping, world_size: int | None = None) -> None:
    """Raise ``ConfigError`` (with the fix) for settings that cannot work together or here.

    Checks, in order: device available; backend runs on that device (sparse layers only);
    precision 16 only on CUDA, bf16 only on CUDA devices that support it (on CPU bf16 runs in
    fp32, see ``configs/trainer/default.yaml``); ``data.batch_size`` divisible by
    ``world_size * trainer.accumulate_grad_batches``; ``data.on_error`` value; data directory
    layout (``DATA_LAYOUTS``); a ``resume`` path that exists; the debug/fault options are
    non-negative integers.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    world_size = world_size_from_env() if world_size is None else world_size

    device_name = str(_get(cfg, "trainer.device", "auto"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.device={device_name} but CUDA is not available on this machine "
                f"(torch {torch.__version__}, cuda build {torch.version.cuda}); use "
                "trainer.device=cpu (or auto), or run on a GPU node"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"trainer.device={device_name} but only {torch.cuda.device_count()} CUDA "
                f"device(s) are visible; use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"trainer.device={device_name!r}: use auto, cpu, cuda or cuda:N")

    strategy = _get(cfg, "sparsity.strategy")
    backend = _get(cfg, "backend.name")
    if backend is not None and strategy != "dense" and device.type != "cuda":
        if backend_needs_cuda(str(backend)):
            raise ConfigError(
                f"backend={backend} runs only on CUDA GPUs but this run is on {device.type}; "
                "use backend=native (or backend=reference) on CPU"
            )

    precision = str(_get(cfg, "trainer.precision", "32"))
    if precision == "16" and device.type != "cuda":
        raise ConfigError(
            f"trainer.precision=16 (float16 autocast with a grad scaler) needs a CUDA device, "
            f"this run is on {device.type}; use trainer.precision=32 (bf16 also runs, in fp32, "
            "on CPU)"
        )
    if precision == "bf16" and device.type == "cuda" and torch.cuda.is_available():
        if not torch.cuda.is_bf16_supported():
            raise ConfigError(
                f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no "
                "bfloat16 support; use trainer.precision=32"
            )

    batch = _get(cfg, "data.batch_size")
    accum = int(_get(cfg, "trainer.accumulate_grad_batches", 1))
    if accum < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accum}; it must be >= 1")
    if batch is not None:
        batch = int(batch)
        parts = world_size * accum
        if batch < 1 or batch % parts:
            lower = max(parts, batch // parts * parts)
            raise ConfigError(
                f"data.batch_size={batch} (global) is not divisible by {world_size} process(es) x "
                f"trainer.accumulate_grad_batches={accum} = {parts}; use data.batch_size="
                f"{lower} or {lower + parts}, or change the accumulation steps"
            )

    on_error = _get(cfg, "data.on_error")
    if on_error is not None and on_error not in ON_ERROR_CHOICES:
        raise ConfigError(
            f"data.on_error={on_error!r}; valid choices: {', '.join(ON_ERROR_CHOICES)}"
        )

    for key in ("trainer.debug_signal_at_step", "trainer.debug_nan_at_step"):
        value = _get(cfg, key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"{key}={value!r}; it must be a step number >= 0 or null")

    data = cfg.get("data")
    if isinstance(data, DictConfig):
        check_data_layout(data)

    resume = _get(cfg, "resume")
    if resume not in (None, "auto") and not Path(str(resume)).exists():
        raise ConfigError(
            f"resume={resume}: no such file or directory; pass a checkpoint file, a run "
            "directory, resume=auto (latest run of this name and seed) or leave it null"
        )


def backend_needs_cuda(name: str) -> bool:
    """Whether backend ``name`` runs only on CUDA (its ``needs_cuda``; unknown: not portable)."""
    try:
        from fst.ops import BACKENDS

        if name in BACKENDS:
            return bool(getattr(BACKENDS.get(name), "needs_cuda", name not in PORTABLE_BACKENDS))
    except ImportError:
        pass
    return name not in PORTABLE_BACKENDS


# --------------------------------------------------------------------------------------------
# data layouts
# --------------------------------------------------------------------------------------------

#: ``DATA_LAYOUTS[dataset name](data_cfg)`` raises ``ConfigError`` when the files are not there.
DATA_LAYOUTS: Registry[Callable[[DictConfig], None]] = Registry("data layout")


def _root(data: DictConfig, key: str = "root") -> str | None:
    try:
        value = data[key]
    except Exception:  # MissingMandatoryValue ('???') or absent key
        value = None
    return None if value in (None, "", "???") else str(value)


@DATA_LAYOUTS.register("imagenet")
def _imagefolder_layout(data: DictConfig) -> None:
    """ImageFolder layout (``root/{train,val}/<class>/<image>``), checked by the dataset's own
    ``check_imagefolder_root``, and ``data.num_classes`` against the class folders."""
    from fst.data.classification import check_imagefolder_root

    root = _root(data)
    try:
        classes = check_imagefolder_root(root)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    n = data.get("num_classes")
    if n is not None and int(n) != len(classes):
        raise ConfigError(
            f"data.num_classes={n} but {root}/train has {len(classes)} class folders; "
            f"set data.num_classes={len(classes)} (or null to count them)"
        )


def check_data_layout(data: DictConfig) -> None:
    """Check the data group's files: ``DATA_LAYOUTS[data.name]`` when registered, else every
    ``root``/``*_dir``/``*_file``/``*_path`` key that is set must name an existing path."""
    name = data.get("name")
    if name in DATA_LAYOUTS:
        DATA_LAYOUTS.get(name)(data)
        return
    for key in data.keys():
        key = str(key)
        if not (key == "root" or key.endswith(("_dir", "_file", "_path", "_root"))):
            continue
        if OmegaConf.is_missing(data, key):
            raise ConfigError(f"data.{key} is not set for dataset {name!r}; pass data.{key}=...")
        value = data.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().exists():
            raise ConfigError(f"data.{key}={value} does not exist (dataset {name!r})")


# --------------------------------------------------------------------------------------------
# unreadable images
# --------------------------------------------------------------------------------------------


class UnreadableImageError(OSError):
    """An image file cannot be opened or decoded. ``.path`` names it."""

    def __init__(self, path: str | os.PathLike, cause: BaseException | str):
        self.path = str(path)
        super().__init__(
            f"cannot read image {self.path}: {cause}. data.on_error=skip skips unreadable "
            "images (counted and logged); data.on_error=raise stops at the first one"
        )


def load_image(path: str | os.PathLike):
    """Open ``path`` as an RGB ``PIL.Image`` (decoded now, not lazily); errors become
    ``UnreadableImageError``. A drop-in ``loader=`` for ``torchvision.datasets.ImageFolder``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")  # convert() forces the full decode inside the try
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise UnreadableImageError(path, f"{type(e).__name__}: {e}") from e


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
        if on_error not in ON_ERROR_CHOICES:
            raise ConfigError(
                f"data.on_error={on_error!r}; valid choices: {', '.join(ON_ERROR_CHOICES)}"
            )
        self.dataset = dataset
        self.on_error = on_error
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
                log.warning("skipping unreadable image (%d so far): %s", total, e.path)
        raise UnreadableImageError(
            getattr(self.dataset, "root", "dataset"),
            f"{min(self.max_consecutive, n)} unreadable images in a row from index {index}; "
            "check the data directory",
        )
