"""Shared fixtures: the real Hydra config composed and shrunk, a tiny ImageFolder tree.

Shrunk runs use 8 px digits (their native size) or 16 px ImageFolder images, batches of 4-8,
one or two optimizer steps, CPU, no W&B unless a test asks for it offline in a temp dir.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Overrides that shrink any classification run to a few seconds on one CPU core.
SHRINK = [
    "logger=none",
    "trainer.device=cpu",
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.progress_bar=false",
    "trainer.precision=32",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.num_workers=0",
]
# Digits at 16 px (2x their native size): the cheapest real data.
TINY_DIGITS = ["data=digits", "data.image_size=16", "data.augment_shift=0"]
# timm's test models (~0.3M parameters): masks of every layer cost milliseconds.
TINY_RESNET = ["model=timm", "model.arch=test_resnet"]  # has BatchNorm
TINY_VIT = ["model=timm", "model.arch=test_vit", "++model.kwargs={img_size: 16, patch_size: 8}"]


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config"):
    """Compose ``configs/<config_name>.yaml`` like ``train.py`` does (``+experiment=`` allowed).

    Returns a fresh copy each call (composition is cached: it is the slow part of these tests).
    """
    return copy.deepcopy(_compose(tuple(overrides), config_name))


@functools.lru_cache(maxsize=256)
def _compose(overrides: tuple[str, ...], config_name: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from fst.engine.config import normalize_overrides

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name, overrides=normalize_overrides(overrides))


@pytest.fixture
def compose_cfg():
    return compose


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch):
    # Never reach W&B servers from tests, whatever the user's environment says.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def make_imagefolder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 4, size: int = 20):
    """``root/{train,val}/<class>/<i>.png``: small random RGB images (a class-dependent tint)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                img[..., c % 3] = 255
                Image.fromarray(img).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_imagefolder(tmp_path_factory) -> Path:
    """A 3-class ImageFolder tree with 4 train and 4 val images per class (20 px PNGs)."""
    return make_imagefolder(tmp_path_factory.mktemp("imagefolder"))


def subprocess_env() -> dict[str, str]:
    """Environment for ``python train.py`` subprocesses: repo importable, offline W&B, 1 thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1")
    env.pop("WANDB_API_KEY", None)
    return env
