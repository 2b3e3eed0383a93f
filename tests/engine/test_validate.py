"""Bad configs and bad data fail before training, each with a message that says what to change."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fst.engine.validate import (
    ConfigError,
    SafeImageDataset,
    UnreadableImageError,
    backend_needs_cuda,
    check_run_config,
    load_image,
)

NO_CUDA = not torch.cuda.is_available()


def _cfg(**overrides):
    base = {
        "task": "classification",
        "resume": None,
        "sparsity": {"strategy": "fst", "decay": 2e-4, "exclude": []},
        "backend": {"name": "native"},
        "trainer": {"device": "cpu", "precision": "bf16", "accumulate_grad_batches": 1},
        "data": {"name": "digits", "batch_size": 64, "num_workers": 0},
    }
    cfg = OmegaConf.create(base)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def _imagefolder(root: Path, train=("a", "b"), val=("a", "b"), images=1) -> Path:
    for split, classes in (("train", train), ("val", val)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(images):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
    return root


def test_good_config_passes(tmp_path):
    check_run_config(_cfg())
    check_run_config(_cfg(**{"data.name": "imagenet", "data.root": str(_imagefolder(tmp_path))}))
    check_run_config(
        _cfg(**{"data.batch_size": 64, "trainer.accumulate_grad_batches": 4}), world_size=2
    )


# (overrides, world_size, expected message fragments); data roots: "<tmp>" is replaced by a fresh
# directory holding the named layout.
BAD_CONFIGS = [
    pytest.param(
        {"backend.name": "sparse24"},
        1,
        ["backend=sparse24 runs only on CUDA", "use backend=native"],
        id="cuda-only-backend-on-cpu",
    ),
    pytest.param(
        {"trainer.device": "cuda"},
        1,
        ["CUDA is not available", "trainer.device=cpu"],
        id="cuda-device-without-cuda",
        marks=pytest.mark.skipif(not NO_CUDA, reason="machine has CUDA"),
    ),
    pytest.param(
        {"trainer.device": "tpu"}, 1, ["trainer.device='tpu'", "cpu, cuda"], id="bad-device"
    ),
    pytest.param(
        {"data.batch_size": 64, "trainer.accumulate_grad_batches": 3},
        1,
        [
            "data.batch_size=64",
            "1 process(es) x trainer.accumulate_grad_batches=3 = 3",
            "data.batch_size=63 or 66",
        ],
        id="batch-not-divisible-by-accumulation",
    ),
    pytest.param(
        {"data.batch_size": 100},
        8,
        ["data.batch_size=100", "8 process(es)", "use data.batch_size=96 or 104"],
        id="batch-not-divisible-by-processes",
    ),
    pytest.param(
        {"trainer.accumulate_grad_batches": 0},
        1,
        ["accumulate_grad_batches=0", ">= 1"],
        id="accumulate-zero",
    ),
    pytest.param(
        {"data.on_error": "ignore"}, 1, ["data.on_error='ignore'", "skip, raise"], id="bad-on-error"
    ),
    pytest.param(
        {"trainer.debug_nan_at_step": -1},
        1,
        ["trainer.debug_nan_at_step=-1", ">= 0"],
        id="bad-debug-step",
    ),
    pytest.param(
        {"resume": "/no/such/run"},
        1,
        ["resume=/no/such/run: no such file or directory", "resume=auto"],
        id="resume-path-missing",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "???"},
        1,
        ["data.root='None': not set", "ROOT/train/<class_name>/<image>.JPEG", "data=digits"],
        id="imagenet-root-unset",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/nonexistent"},
        1,
        ["nonexistent': no such directory", "Expected ImageFolder layout"],
        id="imagenet-root-missing",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/no-val"},
        1,
        ["no-val': missing val/ folder", "ROOT/val/<class_name>/<image>.JPEG"],
        id="imagenet-val-missing",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/flat-val"},
        1,
        ["flat-val': val/ has no class folders", "Expected ImageFolder layout"],
        id="imagenet-val-flat",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/mismatch"},
        1,
        ["train/ and val/ class folders differ (e.g. ['b', 'c'])"],
        id="imagenet-class-mismatch",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/empty-class"},
        1,
        ["empty-class': val/b holds no images"],
        id="imagenet-empty-class",
    ),
    pytest.param(
        {"data.name": "imagenet", "data.root": "<tmp>/ok", "data.num_classes": 1000},
        1,
        ["data.num_classes=1000 but", "has 2 class folders", "data.num_classes=2"],
        id="imagenet-num-classes",
    ),
    pytest.param(
        {"data.name": "mydata", "data.ann_file": "<tmp>/annotations/instances_train.json"},
        1,
        ["data.ann_file=", "instances_train.json does not exist"],
        id="annotation-file-missing",
    ),
]


def _layouts(tmp: Path) -> None:
    _imagefolder(tmp / "ok")
    _imagefolder(tmp / "mismatch", train=("a", "b"), val=("a", "c"))
    for name in ("no-val", "flat-val"):
        (tmp / name / "train" / "a").mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp / name / "train" / "a" / "x.png")
    (tmp / "flat-val" / "val").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp / "flat-val" / "val" / "x.png")
    _imagefolder(tmp / "empty-class")
    for f in (tmp / "empty-class" / "val" / "b").iterdir():
        f.unlink()


@pytest.mark.parametrize("overrides, world_size, fragments", BAD_CONFIGS)
def test_bad_config_is_refused_with_fix(tmp_path, overrides, world_size, fragments):
    _layouts(tmp_path)
    overrides = {
        k: v.replace("<tmp>", str(tmp_path)) if isinstance(v, str) else v
        for k, v in overrides.items()
    }
    with pytest.raises(ConfigError) as e:
        check_run_config(_cfg(**overrides), world_size=world_size)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_dense_strategy_does_not_need_the_backend():
    check_run_config(_cfg(**{"backend.name": "sparse24", "sparsity.strategy": "dense"}))


def test_backend_registry_decides_cuda_need():
    assert not backend_needs_cuda("native") and not backend_needs_cuda("reference")
    assert backend_needs_cuda("sparse24")  # unknown names are taken as CUDA-only


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


def test_world_size_from_launcher_env(monkeypatch):
    from fst.engine.validate import world_size_from_env

    for var in ("WORLD_SIZE", "SUBMITIT_EXECUTOR", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    assert world_size_from_env() == 1
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert world_size_from_env() == 1  # a plain srun step is not a fst multi-process run
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    assert world_size_from_env() == 4
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert world_size_from_env() == 2
    with pytest.raises(ConfigError, match="2 process"):
        check_run_config(_cfg(**{"data.batch_size": 63}))
