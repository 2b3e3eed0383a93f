"""Errors and data types shared across fst's packages. Imports nothing from fst.

A leaf module: ``fst.data``, ``fst.tasks`` and ``fst.engine`` all import from here, never from
each other for these names, so no package needs another one just to raise an error or return
its data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


class FstError(Exception):
    """A failure the user can fix. Its message names the cause and the fix.

    ``train.py`` and ``eval.py`` print such an error as one message, without a traceback, and
    exit with status 1 (see ``fst.engine.cli``); any other exception is a bug and keeps its
    traceback.
    """


class ConfigError(FstError, ValueError):
    """A run config names an unknown key, value or impossible setting."""


class MissingFileError(FstError, FileNotFoundError):
    """A file or folder the config points to does not exist."""


@dataclass
class DataBundle:
    """What a task's ``build_data`` returns; the engine wraps the datasets in loaders.

    ``train``/``val`` are map-style datasets (``__len__`` + ``__getitem__``) so that the engine's
    seeded per-epoch permutation can be fast-forwarded on resume. ``collate_fn`` is used for both
    loaders (``None``: PyTorch's default collate). ``num_classes`` is informational (logged).
    """

    train: Any
    val: Any
    collate_fn: Callable | None = None
    num_classes: int | None = None


@dataclass
class DataLoaderConfig:
    """Data-group keys the engine reads itself; every other key of the group is a keyword
    argument of the dataset builder (``fst.data.DATASETS[data.name]``)."""

    name: str = "digits"
    batch_size: int = 64  # global: all processes x accumulation steps
    val_batch_size: int | None = None  # per evaluation batch; null: batch_size
    num_workers: int = 0
    pin_memory: bool = False
    small_stem: bool = False  # read by model configs (${data.small_stem})


DATA_LOADER_KEYS = tuple(f.name for f in fields(DataLoaderConfig))
# Model-group keys that are no keyword arguments of the model builder: the registry key and the
# model's part of the default run name (``label``, e.g. ``timm-convnext_tiny``; optional).
MODEL_KEYS = ("name", "label")
