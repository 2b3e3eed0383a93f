"""``train.py`` and ``eval.py`` as a user runs them (subprocesses), W&B offline included."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from tests.conftest import ROOT, SHRINK, subprocess_env


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_paper_experiment_on_imagefolder_then_eval_and_export(tiny_imagefolder, tmp_path):
    """`train.py +experiment=fst_resnet18 data.root=DIR` (shrunk) with offline W&B, then eval.py."""
    run_dir = tmp_path / "run"
    shrink = [o for o in SHRINK if not o.startswith("logger=")]
    proc = run(
        [
            "train.py",
            "+experiment=fst_resnet18",
            f"data.root={tiny_imagefolder}",
            *shrink,
            "data.image_size=16",
            "data.resize_size=18",
            "trainer.log_every_n_steps=1",
            "logger.diagnostics_every_n_steps=1",
            f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
    )
    assert "final val/top1:" in proc.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["name"] == "fst_resnet18" and summary["experiment"] == "fst_resnet18"
    assert summary["steps"] == 2 and summary["strategy"] == "fst"

    # W&B wrote an offline run inside the run dir, holding the logged metrics.
    runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    blob = runs[0].read_bytes()
    for key in ("train/loss", "train/lr", "train/img_per_s", "val/top1", "val/top5", "val/loss",
                "sparsity/valid_fwd_mean", "sparsity/mask_ms"):  # fmt: skip
        assert key.encode() in blob, key
    assert json.dumps(summary["val/top1"]).encode() in blob  # the logged value, not just the key

    ckpt = run_dir / "checkpoints" / "last.pt"
    export = tmp_path / "deploy.pt"
    out = tmp_path / "eval.json"
    proc = run(
        [
            "eval.py",
            f"checkpoint={ckpt}",
            f"export={export}",
            f"output={out}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ]  # fmt: skip
    )
    metrics = json.loads(out.read_text())
    assert metrics["val/top1"] == summary["val/top1"]  # same checkpoint, same val data
    assert metrics["nm_ok"] is True and metrics["nm_layers_checked"] == 21
    assert "nm_ok: True" in proc.stdout

    # The export is a plain torchvision state_dict whose conv/fc weights are 2:4 along Ci*kh*kw.
    import torchvision

    from fst.masks import is_nm

    sd = torch.load(export, weights_only=True)
    plain = torchvision.models.resnet18(num_classes=3)
    plain.load_state_dict(sd)
    for name, m in plain.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert is_nm(m.weight.reshape(m.weight.shape[0], -1), dim=1), name


def test_eval_rejects_a_non_training_checkpoint(tmp_path):
    import pytest

    from fst.engine.evaluation import evaluate_checkpoint
    from tests.conftest import compose

    bad = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a checkpoint written by train.py"):
        evaluate_checkpoint(compose([f"checkpoint={bad}"], config_name="eval"), out_dir=tmp_path)


def test_console_output_of_a_run_with_redirected_output(tmp_path):
    """Issue 14 item 12: the result line once, the layer table in the run dir (one line on the
    console), progress without carriage returns when stdout/stderr are not a terminal."""
    from tests.conftest import TINY_DIGITS, TINY_RESNET

    shrink = [o for o in SHRINK if o != "trainer.progress_bar=false"]  # the default: a bar
    args = ["train.py", *shrink, *TINY_DIGITS, *TINY_RESNET, "trainer.limit_train_batches=3"]
    proc = run([*args, f"hydra.run.dir={tmp_path / 'a'}"])
    out = proc.stdout + proc.stderr
    assert out.count("final val/top1:") == 1 and out.count("val/top1") == 2  # + the epoch line
    assert "\r" not in out  # no tqdm redraws in a log file
    table = (tmp_path / "a" / "summary.txt").read_text()
    assert "layer1.0.conv1" in table and "16/16 layers sparse" in table
    assert "layer1.0.conv1" not in out  # the table is not printed ...
    summary_line = f"fst.summary: 16/16 layers sparse (fst/native); full table in {tmp_path / 'a'}"
    assert summary_line in out  # ... one line says where it is

    proc = run([*args, "trainer.print_summary=true", f"hydra.run.dir={tmp_path / 'b'}"])
    assert "layer1.0.conv1" in proc.stdout  # asked for: printed as well
