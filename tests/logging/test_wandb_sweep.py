"""configs/wandb_sweep.yaml drives train.py as the W&B agent would, offline (issue 26)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import CONFIGS, ROOT, subprocess_env

SHRINK = [
    "trainer.device=cpu",
    "trainer.precision=32",
    "trainer.progress_bar=false",
    "trainer.epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.save_checkpoints=false",
    "data.image_size=8",
    "data.batch_size=8",
    "data.val_batch_size=8",
    "model=timm",
    "model.arch=test_resnet",
]


def _agent_command(sweep: dict, args: dict) -> list[str]:
    """The command line ``wandb agent`` builds for one run (its own macro expansion)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in args.items()}})
    macros.update(env=[], interpreter=[sys.executable], program=[sweep["program"]])
    out = []
    for part in sweep["command"]:
        out += macros[part[2:-1]] if part.startswith("${") else [part]
    return out


def test_wandb_sweep_runs_train_py_with_hydra_overrides_offline(tmp_path):
    sweep = yaml.safe_load((CONFIGS / "wandb_sweep.yaml").read_text())
    params = sweep["parameters"]
    assert {"sparsity", "seed"} <= set(params) and sweep["program"] == "train.py"
    args = {k: (p["values"][-1] if "values" in p else p["value"]) for k, p in params.items()}
    args["logger.wandb.mode"] = "offline"  # the only change: no account, no network
    cmd = _agent_command(sweep, args)
    assert cmd[1:4] == ["train.py", "sparsity=fst", "seed=2"], cmd
    env = {**subprocess_env(), "WANDB_RUN_ID": "sweeprun1", "WANDB_MODE": "offline"}
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [*cmd, *SHRINK, f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The agent's run id, so the sweep sees its run.
    (record,) = (run_dir / "wandb").glob("offline-run-*-sweeprun1/run-sweeprun1.wandb")
    # What the README's dashboard recipe groups and filters by, as W&B recorded it.
    run = _config_item(record.read_bytes(), "run")
    assert (run["strategy"], run["dataset"], run["seed"]) == ("fst", "digits", 2)
    assert _config_item(record.read_bytes(), "logger")["wandb"]["group"] == "wandb_sweep"


def _config_item(data: bytes, key: str):
    """A run-config item from an offline ``run-*.wandb`` file: the protobuf ``ConfigItem``
    ``key`` (field 1) followed by its ``value_json`` (field 16, tag ``0x82 0x01``)."""
    i = data.index(bytes([len(key)]) + key.encode() + b"\x82\x01") + len(key) + 3
    length = shift = 0
    while True:  # varint
        b = data[i]
        i += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    return json.loads(data[i : i + length])
