"""Exact resume: a run stopped by SIGTERM (mid-epoch, from inside or outside) and continued
with ``resume=auto`` ends bit-identical to an uninterrupted one, also after falling back from a
damaged ``last.pt``; a resume with changed settings applies them (lr, schedule, epochs).

The training runs are tiny (timm ``test_resnet`` on the embedded digits at 8 px, batch 8, 2
epochs x 3 steps, FST strategy, CPU, deterministic, one thread). Runs that must be signalled
are real ``train.py`` subprocesses. (The fault table, ``tests/faults/table.py``, covers what
goes wrong; this file covers what a resume must reproduce.)
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fst.engine.checkpoint import load_checkpoint
from fst.engine.faults import PREEMPTED_EXIT_CODE

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH, EPOCHS = 3, 2
TINY = [
    "logger=none",
    "model=timm",
    "model.arch=test_resnet",
    "data.image_size=8",
    "data.batch_size=8",
    "data.val_batch_size=64",
    f"trainer.epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
    "trainer.limit_val_batches=1",
    "trainer.progress_bar=false",
    "trainer.deterministic=true",
    "trainer.device=cpu",
    "trainer.log_every_n_steps=1",
    "logger.diagnostics_every_n_steps=1",  # flip rates depend on the previous masks
]
# Everything a resume must reproduce; config (resume=...) and wall times legitimately differ.
STATE_KEYS = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "epoch",
    "step_in_epoch",
    "global_step",
    "sampler",
    "rng",
    "nonfinite",
    "last_val",
    "mask_tracker",
    "sparsifier",
)
VOLATILE_METRICS = ("time", "train/img_per_s", "sparsity/mask_ms")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HYDRA_FULL_ERROR="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("WANDB_API_KEY", None)
    return env


def _train_cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *TINY, f"hydra.run.dir={run_dir}", *extra]


def _run(run_dir: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        _train_cmd(run_dir, *extra),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def _assert_same_state(a: dict, b: dict) -> None:
    for key in STATE_KEYS:
        assert (key in a) == (key in b), key
        if key in a:
            _assert_equal(a[key], b[key], key)
    pa = {k: v for k, v in a["progress"].items() if k != "train_time_s"}
    pb = {k: v for k, v in b["progress"].items() if k != "train_time_s"}
    assert pa == pb


def _assert_equal(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y), where
    elif isinstance(x, dict):
        assert isinstance(y, dict) and sorted(x, key=str) == sorted(y, key=str), where
        for k in x:
            _assert_equal(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list | tuple):
        assert isinstance(y, list | tuple) and len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_equal(u, v, f"{where}[{i}]")
    else:
        assert x == y, f"{where}: {x!r} != {y!r}"


def _records(path: Path) -> list[dict]:
    """Complete lines of a metrics.jsonl being written (a torn last line is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def _metrics(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE_METRICS} for r in records]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must reproduce bit for bit."""
    run_dir = tmp_path_factory.mktemp("reference")
    proc = _run(run_dir)
    assert proc.returncode == 0, proc.stdout[-3000:]
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["global_step"] == EPOCHS * STEPS_PER_EPOCH
    return run_dir


def _assert_reproduces(reference: Path, run_dir: Path) -> None:
    ref = load_checkpoint(reference / "checkpoints" / "last.pt")
    got = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    _assert_same_state(ref, got)
    assert _metrics(run_dir) == _metrics(reference)
    ref_summary = json.loads((reference / "summary.json").read_text())
    got_summary = json.loads((run_dir / "summary.json").read_text())
    for k in ("final", "steps", "best_epoch", "nonfinite_skipped"):
        assert got_summary[k] == ref_summary[k], k


def test_sigterm_mid_epoch_then_resume_is_bit_identical(reference, tmp_path):
    run_dir = tmp_path / "run"
    # The trainer sends itself SIGTERM after optimizer step 2 of 3 in epoch 1.
    proc = _run(run_dir, "trainer.debug_signal_at_step=2")
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stdout[-3000:]
    assert "received SIGTERM" in proc.stdout
    assert f"exiting with status {PREEMPTED_EXIT_CODE}" in proc.stdout
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 2, 2)
    assert not (run_dir / "summary.json").exists()

    proc = _run(run_dir, "resume=auto")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "resumed from" in proc.stdout and "at epoch 1, step 2 of 3" in proc.stdout
    _assert_reproduces(reference, run_dir)


def test_external_sigterm_and_corrupt_last_checkpoint_fall_back(reference, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(run_dir, "trainer.checkpoint_every_n_steps=1", "trainer.keep_checkpoints=all"),
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 300
    try:
        # Signal from outside once step 2 is logged, so that last.prev.pt exists.
        while not any(r["step"] >= 2 for r in _records(metrics)):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.time() < deadline, "training did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == PREEMPTED_EXIT_CODE, out[-3000:]
    ckpts = run_dir / "checkpoints"
    stopped_at = load_checkpoint(ckpts / "last.pt")["global_step"]
    assert 2 <= stopped_at < EPOCHS * STEPS_PER_EPOCH

    # The newest checkpoint gets damaged (a crash of the disk, a copy cut short): resume=auto
    # warns, falls back to last.prev.pt and still ends bit-identical.
    data = (ckpts / "last.pt").read_bytes()
    (ckpts / "last.pt").write_bytes(data[: len(data) // 3])
    assert load_checkpoint(ckpts / "last.prev.pt")["global_step"] == stopped_at - 1
    proc2 = _run(run_dir, "resume=auto")
    assert proc2.returncode == 0, proc2.stdout[-3000:]
    assert (
        "skipping checkpoint" in proc2.stdout and "last.pt is truncated or corrupt" in proc2.stdout
    )
    assert "last.prev.pt" in proc2.stdout
    _assert_reproduces(reference, run_dir)


def _compose(*overrides: str):
    from tests.conftest import compose

    return compose([*TINY, "trainer.deterministic=false", *overrides])


def test_changed_lr_schedule_and_epochs_take_effect_after_resume(tmp_path):
    """The README's advice after a divergence, "lower the lr, then resume=auto": the resumed
    steps run with the new lr on the *rebuilt* schedule (new base lr, new length), continued at
    the checkpoint's step, and the optimizer's own hyperparameters follow the config."""
    from fst.engine.training import train
    from fst.logging.jsonl import read_jsonl

    torch.set_num_threads(1)
    run = tmp_path / "run"
    with pytest.raises(SystemExit):
        train(_compose("trainer.debug_signal_at_step=2", "optim.lr=0.1"), run_dir=run)
    summary = train(
        _compose("resume=auto", "optim.lr=0.01", "optim.weight_decay=0.001", "trainer.epochs=3"),
        run_dir=run,
    )
    total = 3 * STEPS_PER_EPOCH
    assert summary["steps"] == total and summary["epochs"] == 3
    lrs = {r["step"]: r["train/lr"] for r in read_jsonl(run / "metrics.jsonl") if "train/lr" in r}
    warm = int(round(0.5 * STEPS_PER_EPOCH))

    def cosine(base: float, step: int, steps: int) -> float:
        if step < warm:
            return base * (0.1 + 0.9 * step / warm)
        return base * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / (steps - warm))))

    # Logged after optimizer step s: the lr the schedule set for step s (s steps done).
    assert lrs[1] == pytest.approx(cosine(0.1, 1, EPOCHS * STEPS_PER_EPOCH), rel=1e-12)
    for s in range(3, total + 1):
        assert lrs[s] == pytest.approx(cosine(0.01, s, total), rel=1e-12), s
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    groups = state["optimizer"]["param_groups"]
    assert {g["weight_decay"] for g in groups} == {0.001}
    assert {g["initial_lr"] for g in groups} == {0.01}
    assert state["scheduler"]["base_lrs"] == [0.01] * len(groups)
    assert state["config"]["optim"]["lr"] == 0.01


# Table 3's other baselines, each with its schedule shrunk so that its state changes within
# the 2 x 3 steps (masks recomputed, grown, pruned; ReSprop's reused gradient every step).
BASELINES = {
    "meprop": [],
    "resprop": [],
    "dpf": ["sparsity.update_every=2", "sparsity.ramp_end=0.5"],
    "rigl": ["sparsity.update_every=2", "sparsity.end=1.0"],
    "asfp": [],
    "asp": ["sparsity.dense_epochs=0.5"],
}


def _held_state(state: dict) -> dict:
    return state["sparsifier"].get("state", {}) if state.get("sparsifier") else {}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", sorted(BASELINES))
def test_baseline_state_survives_sigterm_and_resume_auto(strategy, tmp_path):
    """SIGTERM after step 4 of 6, then ``resume=auto``: the sparsifier's masks / gradients,
    the weights and every metric end bit-identical to an uninterrupted run."""
    extra = [f"sparsity={strategy}", *BASELINES[strategy]]
    ref, run = tmp_path / "reference", tmp_path / "run"
    procs = [  # the uninterrupted and the interrupted run side by side (2 cores in CI)
        subprocess.Popen(
            _train_cmd(d, *extra, *more),
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for d, more in ((ref, ()), (run, ("trainer.debug_signal_at_step=4",)))
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode == 0, outs[0][-3000:]
    assert procs[1].returncode == PREEMPTED_EXIT_CODE, outs[1][-3000:]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["global_step"] == 4
    held = _held_state(state)
    if strategy == "meprop":
        assert not state.get("sparsifier")  # stateless
    elif strategy == "resprop":
        assert all("prev" in s for s in held.values())
    elif strategy == "asp":
        assert any(s["mask"] is not None for s in held.values())  # pruned after step 2
    else:  # dpf, rigl, asfp: some mask prunes something by step 4
        assert any(not bool(s["mask"].all()) for s in held.values())

    proc = _run(run, *extra, "resume=auto")
    assert proc.returncode == 0, proc.stdout[-3000:]
    _assert_reproduces(ref, run)


def test_skipped_nonfinite_step_does_not_step_the_sparsifier(tmp_path):
    """The sparsifier advances only after optimizer steps that were taken."""
    from fst.engine.training import train

    torch.set_num_threads(1)
    summary = train(
        _compose(
            "sparsity=dpf",
            "sparsity.update_every=2",
            "trainer.debug_nan_at_step=3",
            "trainer.skip_nonfinite=true",
        ),
        run_dir=tmp_path,
    )
    assert (summary["steps"], summary["nonfinite_skipped"]) == (EPOCHS * STEPS_PER_EPOCH, 1)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["sparsifier"]["step_count"] == EPOCHS * STEPS_PER_EPOCH - 1
