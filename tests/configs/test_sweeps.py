"""The README's ImageNet sweeps run as written: ``python train.py -m +sweep=table1
data.root=/data/imagenet`` (also ``table3``, ``table5`` and the SLURM example).

Hydra composes a multirun once with the command line alone, before any experiment file selects
the data group; ``data.root=`` then met the default ``data=digits`` ("Key 'root' is not in
struct"). The sweep files select ``data=imagenet`` themselves. One sweep is launched for real
(every job, shrunk, on a tiny ImageFolder tree), the others are composed as the launch does.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import CONFIGS, ROOT, subprocess_env

SHRINK = [
    "logger=none",
    "trainer.device=cpu",
    "trainer.precision=32",
    "trainer.progress_bar=false",
    "trainer.epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.save_checkpoints=false",
    "trainer.grad_clip_norm=1.0",  # BatchNorm over 2 images of 1x1 maps: see test_training
    "data.image_size=8",
    "data.resize_size=9",
    "data.batch_size=2",
    "data.val_batch_size=2",
    "data.num_workers=0",
    "data.pin_memory=false",
    "hydra.sweeper.params.seed=0",
]
SLURM = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=gpu",
    "hydra.launcher.gpus_per_node=8",
    "hydra.launcher.tasks_per_node=8",
    "hydra.launcher.timeout_min=4320",
]


def _multirun_compose(overrides: list[str]):
    """What ``train.py -m`` composes first (the launch itself, before any job)."""
    from hydra import compose, initialize_config_dir

    from fst.engine.config import normalize_overrides

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=normalize_overrides(overrides), return_hydra_config=True)


@pytest.mark.parametrize("sweep", ["table1", "table3", "table5"])
@pytest.mark.parametrize("launcher", [[], SLURM], ids=["basic", "slurm"])
def test_sweep_composes_with_data_root(sweep, launcher):
    cfg = _multirun_compose([*launcher, f"+sweep={sweep}", "data.root=/data/imagenet"])
    assert cfg.data.root == "/data/imagenet" and cfg.data.name == "imagenet"
    if launcher:
        assert cfg.hydra.launcher.partition == "gpu"


def test_table1_sweep_launches_every_job(tiny_imagefolder, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "+sweep=table1",
            f"data.root={tiny_imagefolder}",
            *SHRINK,
            f"hydra.sweep.dir={sweep_dir}",
            f"output_root={tmp_path}",
        ],  # fmt: skip
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep_dir.rglob("summary.json")]
    names = sorted(s["name"] for s in summaries)
    assert names == [f"table1_resnet18_{s}" for s in sorted(["dense", "wg", "wx", "gg", "gx"])]
    assert all(s["dataset"] == "imagenet" and s["steps"] == 1 for s in summaries)
    assert all(s["experiment"] == s["name"] for s in summaries)
