"""Checks that a run can work here, made before any model, data or compute is set up.

``fst.engine.config.validate_config`` checks the config's *shape* (unknown keys, wrong types,
unknown registry names, values that would silently train something else). ``check_run_config``
checks that the values fit together and fit this machine: the device exists, the backend runs
on it, the precision is supported there, the global batch splits evenly over processes and
accumulation steps. ``check_data`` runs the dataset's own file check (the one check protocol:
a ``DATASETS`` entry may carry ``check(**data_kwargs)``, e.g. the ImageFolder layout of
``imagenet``; datasets without one get every path-like key checked for existence). Each
failure is a ``ConfigError`` that says what to change.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from fst.data import DATASETS
from fst.data.images import check_on_error
from fst.engine.config import TrainerConfig
from fst.ops import BACKENDS
from fst.types import ConfigError

__all__ = [
    "backend_needs_cuda",
    "check_data",
    "check_run_config",
    "resolve_device",
    "world_size_from_env",
]


#: ``TrainerConfig``'s defaults, for configs given as a partial mapping.
_TRAINER_DEFAULTS = {f"trainer.{f.name}": f.default for f in fields(TrainerConfig)}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    default = _TRAINER_DEFAULTS.get(key, default)
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
    ``world_size * trainer.accumulate_grad_batches``; ``data.on_error`` value; a ``resume`` path
    that exists; the debug/fault options are non-negative integers. The data files are checked
    by ``check_data``.
    """
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    world_size = world_size_from_env() if world_size is None else world_size
    device = check_device(cfg)
    _check_precision_and_batch(cfg, device, world_size)


def check_device(cfg: DictConfig) -> torch.device:
    """``trainer.device`` exists here and ``backend`` runs on it (train.py and eval.py)."""
    device_name = str(_get(cfg, "trainer.device"))
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
    return device


def _check_precision_and_batch(cfg: DictConfig, device: torch.device, world_size: int) -> None:
    precision = str(_get(cfg, "trainer.precision"))
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
    accum = int(_get(cfg, "trainer.accumulate_grad_batches"))
    if accum < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches={accum}; it must be >= 1")
    if batch is not None and int(batch) < 1:
        raise ConfigError(f"data.batch_size={batch}: a global batch is at least 1; e.g. 32")
    if batch is not None:
        batch = int(batch)
        parts = world_size * accum
        if batch % parts:
            lower = max(parts, batch // parts * parts)
            raise ConfigError(
                f"data.batch_size={batch} (global) is not divisible by {world_size} process(es) x "
                f"trainer.accumulate_grad_batches={accum} = {parts}; use data.batch_size="
                f"{lower} or {lower + parts}, or change the accumulation steps"
            )

    on_error = _get(cfg, "data.on_error")
    if on_error is not None:
        check_on_error(on_error)

    for key in ("trainer.debug_signal_at_step", "trainer.debug_nan_at_step"):
        value = _get(cfg, key)
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"{key}={value!r}; it must be a step number >= 0 or null")

    pretrained = _get(cfg, "model.pretrained")
    if pretrained and Path(str(pretrained)).expanduser().is_file():
        _check_torch_file(Path(str(pretrained)).expanduser(), "model.pretrained")

    resume = _get(cfg, "resume")
    if resume not in (None, "auto") and not Path(str(resume)).exists():
        raise ConfigError(
            f"resume={resume}: no such file or directory; pass a checkpoint file, a run "
            "directory, resume=auto (latest run of this name and seed) or leave it null"
        )


def _check_torch_file(path: Path, key: str) -> None:
    """``path`` is a file written by ``torch.save`` (a zip archive, or the legacy pickle)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path) or head[:1] == b"\x80":
        return
    raise ConfigError(
        f"{key}={path} is not a file written by torch.save (a text file? a download that "
        "failed?); pass a state_dict saved with torch.save(model.state_dict(), PATH)"
    )


def backend_needs_cuda(name: str) -> bool:
    """Whether backend ``name`` runs only on CUDA (the registered backend's ``needs_cuda``)."""
    if name not in BACKENDS:
        raise ConfigError(
            f"unknown backend {name!r} at backend.name; valid choices: {', '.join(sorted(BACKENDS))}"
        )
    return bool(getattr(BACKENDS.get(name), "needs_cuda", False))


def check_data(data: DictConfig | Mapping) -> None:
    """Check the data group's files before anything is built (raises ``ConfigError``).

    ``DATASETS[data.name].check(**data)`` when the dataset defines it; otherwise every
    ``root`` / ``*_dir`` / ``*_file`` / ``*_path`` / ``*_root`` key that is set must name an
    existing path. A key still ``???`` is reported as not set.
    """
    if not isinstance(data, DictConfig):
        data = OmegaConf.create(dict(data))
    name = data.get("name")
    kwargs = {str(k): None if OmegaConf.is_missing(data, k) else data[k] for k in data}
    check = getattr(DATASETS.get(name), "check", None) if name in DATASETS else None
    if check is not None:
        try:
            check(**kwargs)
        except (FileNotFoundError, NotADirectoryError) as e:
            raise ConfigError(f"data={name}: {e}") from None
        return
    for key, value in kwargs.items():
        if not (key == "root" or key.endswith(("_dir", "_file", "_path", "_root"))):
            continue
        if OmegaConf.is_missing(data, key):
            raise ConfigError(f"data.{key} is not set for dataset {name!r}; pass data.{key}=...")
        if isinstance(value, str) and value and not Path(value).expanduser().exists():
            raise ConfigError(
                f"data.{key}={value} does not exist (dataset {name!r}); pass the right path "
                f"with data.{key}=..."
            )
