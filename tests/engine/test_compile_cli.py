"""``trainer.compile`` through the public CLI: training, checkpoints, resume, eval.py, DDP.

Every run is the shrunk ViT of ``test_ddp.py`` with one block (LayerNorm only, no dropout: DDP
and a single process follow the same trajectory), compiled with inductor
(``trainer.compile=default``).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SHRINK, TINY_DIGITS, TINY_VIT, subprocess_env

COMMON = [
    *SHRINK,
    *TINY_DIGITS,
    *TINY_VIT,
    "++model.kwargs.depth=1",  # one block: dynamo and inductor time grows with the layers
    "sparsity=fst",
    "sparsity.decay=0.01",
    "data.batch_size=8",
    "trainer.limit_train_batches=3",
]


def run(args: list[str], prefix=None) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [*(prefix or [sys.executable]), *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def last(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_weights_close(a, b):
    assert list(a) == list(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.slow
def test_compiled_train_resume_eval_and_ddp(tmp_path):
    compiled = ["trainer.compile=default"]
    run(["train.py", *COMMON, f"hydra.run.dir={tmp_path / 'eager'}"])
    run(["train.py", *COMMON, *compiled, f"hydra.run.dir={tmp_path / 'compiled'}"])
    eager, comp = last(tmp_path / "eager"), last(tmp_path / "compiled")
    # compiled in place: the checkpoint has the eager parameter names and the same trajectory
    assert comp["config"]["trainer"]["compile"] == "default" and comp["global_step"] == 3
    assert not any("_orig_mod" in k for k in comp["model"])
    assert_weights_close(eager["model"], comp["model"])

    # resume the compiled run's checkpoint, compiled, for a second epoch
    run(
        ["train.py", *COMMON, *compiled, "trainer.epochs=2",
         f"resume={tmp_path / 'compiled'}", f"hydra.run.dir={tmp_path / 'resumed'}"]
    )  # fmt: skip
    resumed = last(tmp_path / "resumed")
    assert resumed["global_step"] == 6 and list(resumed["model"]) == list(comp["model"])

    # eval.py compiles as the run was trained; same weights, same val batch -> same metric
    out = tmp_path / "eval.json"
    run(
        ["eval.py", f"checkpoint={tmp_path / 'compiled' / 'checkpoints' / 'last.pt'}",
         "device=cpu", "limit_val_batches=1", "val_batch_size=4", f"output={out}",
         f"hydra.run.dir={tmp_path / 'eval'}"]
    )  # fmt: skip
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    metrics = json.loads(out.read_text())
    assert metrics["val/top1"] == pytest.approx(summary["val/top1"])

    # DDP over a compiled model: 2 processes follow the single compiled process
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run(["train.py", *COMMON, *compiled, f"hydra.run.dir={tmp_path / 'ddp'}"], prefix=torchrun)
    ddp = last(tmp_path / "ddp")
    assert ddp["world_size"] == 2 and ddp["global_step"] == 3
    assert_weights_close(comp["model"], ddp["model"])


def test_invalid_compile_value_is_refused_naming_the_values():
    from fst.engine.config import ConfigError, validate_config
    from tests.conftest import compose

    validate_config(compose([*COMMON, "trainer.compile=max-autotune"]))
    with pytest.raises(ConfigError, match=r"trainer.compile='fast'; valid values: false \(eager\)"):
        validate_config(compose([*COMMON, "trainer.compile=fast"]))
    with pytest.raises(ConfigError, match=r"trainer.compile=True"):
        validate_config(compose([*COMMON, "trainer.compile=true"]))
