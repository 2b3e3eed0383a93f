"""Bad configs and bad data paths fail before training, each with a message naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from fst.engine.validate import backend_needs_cuda, check_data, check_run_config
from fst.types import ConfigError

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


@pytest.fixture
def cuda_only_backend(monkeypatch):
    from fst.ops import BACKENDS

    class CudaOnly:
        needs_cuda = True

    monkeypatch.setitem(BACKENDS._items, "sparse24", CudaOnly())


def test_good_config_passes(tmp_path):
    check_run_config(_cfg())
    cfg = _cfg(**{"data.name": "imagenet", "data.root": str(_imagefolder(tmp_path))})
    check_run_config(cfg)
    check_data(cfg.data)
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
]

BAD_DATA = [
    pytest.param(
        {"data.name": "imagenet", "data.root": "???"},
        1,
        ["data.root is not set", "ROOT/train/<class_name>/<image>.JPEG", "data=digits"],
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
def test_bad_config_is_refused_with_fix(overrides, world_size, fragments, cuda_only_backend):
    with pytest.raises(ConfigError) as e:
        check_run_config(_cfg(**overrides), world_size=world_size)
    for fragment in fragments:
        assert fragment in str(e.value)


@pytest.mark.parametrize("overrides, world_size, fragments", BAD_DATA)
def test_bad_data_is_refused_with_fix(tmp_path, overrides, world_size, fragments):
    _layouts(tmp_path)
    overrides = {
        k: v.replace("<tmp>", str(tmp_path)) if isinstance(v, str) else v
        for k, v in overrides.items()
    }
    with pytest.raises(ConfigError) as e:
        check_data(_cfg(**overrides).data)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_dense_strategy_does_not_need_the_backend(cuda_only_backend):
    check_run_config(_cfg(**{"backend.name": "sparse24", "sparsity.strategy": "dense"}))


def test_backend_registry_decides_cuda_need(cuda_only_backend):
    assert not backend_needs_cuda("native") and not backend_needs_cuda("reference")
    assert backend_needs_cuda("sparse24")  # its registry entry says needs_cuda
    with pytest.raises(ConfigError, match="unknown backend 'cutlass'.*valid choices: native"):
        backend_needs_cuda("cutlass")


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
