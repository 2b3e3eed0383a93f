"""fst on CUDA end to end: a 20-step ResNet-18 run with checkpoints and an exact ``resume=auto``
(through the public CLI), and DDP with one NCCL process.

The run: ``python train.py`` (ResNet-18, small stem, embedded digits at 32 px, batch 32, bf16,
channels-last, deterministic), 2 epochs x 10 steps. The interrupted run gets SIGTERM after
step 13 (mid epoch 2), writes ``last.pt`` and exits 75; ``resume=auto`` then finishes it, and
its final checkpoint must equal the uninterrupted run's bit for bit. ``sparse24`` runs with
``FST_SPARSE24_KERNELS=sparse``: a timed kernel choice could differ between two processes.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

import fst
from tests.conftest import ROOT
from tests.gpu.conftest import needs_cuda, rel_err

pytestmark = [pytest.mark.gpu, needs_cuda]

RUN = [
    "logger=none",
    "model=resnet18",
    "data=digits",
    "data.batch_size=32",
    "data.num_workers=0",
    "sparsity=fst",
    "trainer.device=cuda",
    "trainer.precision=bf16",
    "trainer.channels_last=true",
    "trainer.deterministic=true",
    "trainer.epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=5",
]


def _train(run_dir, *extra, timeout=400):
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        WANDB_MODE="offline",
        HYDRA_FULL_ERROR="1",
        PYTHONHASHSEED="0",
        CUBLAS_WORKSPACE_CONFIG=":4096:8",
        FST_SPARSE24_KERNELS="sparse",
    )
    cmd = [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}", *extra]
    return subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip


def _load(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_resnet18_20_steps_then_exact_resume(backend, tmp_path):
    if backend == "sparse24" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("sparse24 needs compute capability >= 8.0")
    ref_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    proc = _train(ref_dir, f"backend={backend}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    ref = _load(ref_dir)
    assert ref["global_step"] == 20

    proc = _train(run_dir, f"backend={backend}", "trainer.debug_signal_at_step=13")
    assert proc.returncode == 75, proc.stdout[-4000:]
    assert _load(run_dir)["global_step"] == 13
    proc = _train(run_dir, f"backend={backend}", "resume=auto")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "resumed from" in proc.stdout
    got = _load(run_dir)
    assert got["global_step"] == 20 and got["epoch"] == ref["epoch"]
    diffs = {
        k: float((got["model"][k].double() - v.double()).abs().max())
        for k, v in ref["model"].items()
        if v.is_floating_point()
    }
    bad = {k: d for k, d in diffs.items() if d != 0}
    assert not bad, f"resumed weights differ from the uninterrupted run: {sorted(bad.items())[:5]}"


@pytest.fixture
def nccl_group(tmp_path):
    import torch.distributed as dist

    if not dist.is_nccl_available():
        pytest.skip("NCCL is not available in this torch build")
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield dist
    dist.destroy_process_group()


@pytest.mark.parametrize("backend", ["native", "sparse24"])
def test_ddp_one_nccl_process_matches_plain_model(backend, nccl_group):
    if backend == "sparse24" and torch.cuda.get_device_capability()[0] < 8:
        pytest.skip("sparse24 needs compute capability >= 8.0")
    torch.cuda.set_device(0)
    models = []
    for wrap in (False, True):
        torch.manual_seed(0)
        m = torchvision.models.resnet18(num_classes=10)
        fst.sparsify(m, "fst", backend)
        m = m.cuda().to(memory_format=torch.channels_last)
        models.append(nn.parallel.DistributedDataParallel(m, device_ids=[0]) if wrap else m)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in models]
    torch.manual_seed(1)
    batches = [
        (torch.randn(8, 3, 64, 64, device="cuda"), torch.randint(0, 10, (8,), device="cuda"))
        for _ in range(3)
    ]
    for model, opt in zip(models, opts):
        for x, y in batches:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    plain, ddp = models[0].state_dict(), models[1].module.state_dict()
    for k, v in plain.items():
        if v.is_floating_point():
            assert rel_err(ddp[k], v) < 1e-3, k
