"""DDP: 2 CPU processes (gloo, torchrun) follow the same trajectory as 1 process.

With the same global batch (data.batch_size=8: 2 x 4 vs 1 x 8) the ResumableSampler gives both
runs the same global batches, DDP averages the two half-batch gradients, and the model has no
batch-coupled layer (a ViT: LayerNorm, no BatchNorm, no dropout), so the weights after the same
steps must agree up to float summation order.
"""

from __future__ import annotations

import subprocess
import sys

import torch

from tests.conftest import ROOT, SHRINK, TINY_DIGITS, TINY_VIT, subprocess_env

COMMON = [
    *SHRINK,
    *TINY_DIGITS,
    *TINY_VIT,
    "sparsity=fst",
    "data.batch_size=8",
    "trainer.limit_train_batches=3",
    "trainer.log_every_n_steps=1",
]


def _train(prefix: list[str], *where: str) -> str:
    proc = subprocess.run(
        [*prefix, "train.py", *COMMON, "name=ddp", *where],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_two_process_ddp_matches_single_process(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    # Each rank's Hydra makes its own directory (timestamped, so usually but not always the
    # same; here made to differ by rank); only rank 0's may remain, and only rank 0 reports
    # (issue 13 item 10): one run dir, each epoch/final line once.
    root = tmp_path / "ddp_root"
    out = _train(torchrun, f"output_root={root}", f"hydra.run.dir={root}/launch_${{oc.env:RANK,0}}")
    assert sorted(p.name for p in root.iterdir()) == ["launch_0"]
    run_dir = root / "launch_0"
    assert (run_dir / "summary.json").is_file()
    assert out.count("epoch 1/1: val/top1=") == 1, out[-3000:]
    assert out.count("final val/top1:") == 1, out[-3000:]
    (tmp_path / "ddp").symlink_to(run_dir)
    _train([sys.executable], f"hydra.run.dir={tmp_path / 'single'}")

    ddp = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["global_step"] == single["global_step"] == 3
    assert len(ddp["rng"]) == 2  # every rank's RNG state is saved for an exact resume
    assert ddp["model"].keys() == single["model"].keys()
    for k in single["model"]:
        torch.testing.assert_close(ddp["model"][k], single["model"][k], rtol=1e-4, atol=1e-5, msg=k)
    # ... and training did move them (not a comparison of two identical initial models).
    momenta = [s["momentum_buffer"] for s in ddp["optimizer"]["state"].values()]
    assert momenta and any(m.abs().sum() > 0 for m in momenta)
    import json

    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch_size"] == 8
