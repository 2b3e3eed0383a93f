"""End to end: preemption and exact resume, checkpoint fallback and refusal, NaN policy, bad input.

The training runs are tiny (timm ``test_resnet`` on the embedded digits at 8 px, batch 8, 2
epochs x 3 steps, FST strategy, CPU, deterministic, one thread) so each takes seconds. Runs that
must be killed are real ``train.py`` subprocesses; the others call ``fst.engine.training.train``
in-process on a composed config.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fst.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fst.engine.config import ConfigError
from fst.engine.faults import PREEMPTED_EXIT_CODE, NonFiniteError

ROOT = Path(__file__).resolve().parents[1]
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
        _train_cmd(run_dir, "trainer.checkpoint_every_n_steps=1"),
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
    return state["sparsifier"].get("state", {}) if state["sparsifier"] else {}


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
        assert state["sparsifier"] == {}  # stateless
    elif strategy == "resprop":
        assert all("prev" in s for s in held.values())
    elif strategy == "asp":
        assert any(s["mask"] is not None for s in held.values())  # pruned after step 2
    else:  # dpf, rigl, asfp: some mask prunes something by step 4
        assert any(not bool(s["mask"].all()) for s in held.values())

    proc = _run(run, *extra, "resume=auto")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "resumed from" in proc.stdout and "at epoch 2, step 1 of 3" in proc.stdout
    _assert_reproduces(ref, run)


# --------------------------------------------------------------------------------------------
# in-process runs (no signal needed)
# --------------------------------------------------------------------------------------------


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[*TINY, "trainer.deterministic=false", *overrides])


def _train(run_dir: Path, *overrides: str) -> dict:
    from fst.engine.training import train

    torch.set_num_threads(1)
    return train(_compose(*overrides), run_dir=run_dir)


def test_nan_loss_stops_naming_step_layer_and_checkpoint(tmp_path):
    with pytest.raises(NonFiniteError) as e:
        _train(tmp_path, "trainer.debug_nan_at_step=3", "trainer.checkpoint_every_n_steps=1")
    msg = str(e.value)
    last = tmp_path / "checkpoints" / "last.pt"
    assert "non-finite values at step 3" in msg and "loss is nan" in msg
    assert "backward first met it in layer 'fc'" in msg  # the output layer of test_resnet
    assert f"last good checkpoint: {last}" in msg
    state = load_checkpoint(last)  # the NaN step never reached a checkpoint
    assert state["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_nan_loss_skipped_and_counted_with_skip_option(tmp_path):
    summary = _train(tmp_path, "trainer.debug_nan_at_step=3", "trainer.skip_nonfinite=true")
    assert summary["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert summary["nonfinite_skipped"] == 1
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["nonfinite"]["skipped_steps"] == [3]
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_skipped_nonfinite_step_does_not_step_the_sparsifier(tmp_path):
    """Issue 12's hook: the sparsifier advances only after optimizer steps that were taken."""
    summary = _train(
        tmp_path, "sparsity=dpf", "sparsity.update_every=2", "trainer.debug_nan_at_step=3",
        "trainer.skip_nonfinite=true",
    )  # fmt: skip
    assert (summary["steps"], summary["nonfinite_skipped"]) == (EPOCHS * STEPS_PER_EPOCH, 1)
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["sparsifier"]["step_count"] == EPOCHS * STEPS_PER_EPOCH - 1


@pytest.fixture(scope="module")
def good_checkpoint(reference) -> Path:
    return reference / "checkpoints" / "last.pt"


def _truncated(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[:5000])
    return dst


def _payload(src: Path, dst: Path) -> Path:
    state = load_checkpoint(src)
    state["optimizer"] = {"state": {}, "hook": _Payload(dst.parent / "pwned")}
    torch.save(state, dst)
    return dst


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _no_meta_other_layers(src: Path, dst: Path) -> Path:
    state = load_checkpoint(src)
    del state["meta"]
    state["model"] = {
        ("extra." + k if k.startswith("fc.") else k): v for k, v in state["model"].items()
    }
    save_checkpoint(dst, state)
    return dst


@pytest.mark.parametrize(
    "make, overrides, fragments",
    [
        pytest.param(
            _truncated,
            [],
            ["bad.pt is truncated or corrupt", "Resume from an earlier"],
            id="truncated",
        ),
        pytest.param(
            _payload,
            [],
            ["refusing to load", "bad.pt", "global posix.system", "arbitrary code"],
            id="payload",
        ),
        pytest.param(
            lambda src, dst: src,
            ["sparsity=dense"],
            [
                "written by a different configuration",
                "strategy: checkpoint 'fst' vs this run 'dense'",
            ],
            id="other-strategy",
        ),
        pytest.param(
            lambda src, dst: src,
            ["model.arch=test_efficientnet"],
            ["does not fit the model", "missing keys", "unexpected keys"],
            id="other-model",
        ),
        pytest.param(
            _no_meta_other_layers,
            [],
            [
                "does not fit the model",
                "missing keys (2): fc.weight, fc.bias",
                "unexpected keys (2)",
            ],
            id="renamed-keys",
        ),
    ],
)
def test_bad_checkpoints_are_refused_before_training(
    good_checkpoint, tmp_path, make, overrides, fragments
):
    ckpt = make(good_checkpoint, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        _train(tmp_path / "run", f"resume={ckpt}", *overrides)
    for fragment in fragments:
        assert fragment in str(e.value)
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing was trained


# --------------------------------------------------------------------------------------------
# bad configs and data paths: composed from the real config files
# --------------------------------------------------------------------------------------------

BAD_INPUTS = [
    (["trainer.epohcs=3"], "Could not override 'trainer.epohcs'"),  # Hydra: not in struct
    (["+trainer.epohcs=3"], "unknown config key trainer.epohcs"),
    (["trainer.epochs=three"], "'three' of type 'str' could not be converted to Integer"),
    (["sparsity=fts"], "Could not find 'sparsity/fts'\n\nAvailable options in 'sparsity'"),
    (
        ["sparsity.strategy=fts"],
        "unknown strategy 'fts' at sparsity.strategy; valid choices: asfp, asp, dense,",
    ),
    (["backend.name=cutlass"], "unknown backend 'cutlass' at backend.name; valid choices: native,"),
    (["model.name=resnet19"], "unknown model 'resnet19' at model.name; valid choices:"),
    (["data.name=imagenet1k"], "unknown dataset 'imagenet1k' at data.name; valid choices:"),
    (["data.batch_size=50", "trainer.accumulate_grad_batches=4"], "use data.batch_size=48 or 52"),
    (["trainer.precision=16"], "needs a CUDA device"),
    (["data=imagenet"], "not set. Expected ImageFolder layout"),
    (["data=imagenet", "data.root=/no/such/imagenet"], "no such directory. Expected ImageFolder"),
    (["resume=/no/such/run/last.pt"], "no such file or directory"),
]


@pytest.mark.parametrize(
    "overrides, fragment", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS]
)
def test_bad_input_fails_before_training(tmp_path, overrides, fragment):
    from fst.engine.config import validate_config
    from fst.engine.validate import check_run_config

    try:
        cfg = _compose(*overrides)
    except Exception as e:  # Hydra rejects keys that are not in the config files
        assert fragment in str(e)
        return
    with pytest.raises(ConfigError) as e:
        validate_config(cfg)
        check_run_config(cfg)
    assert fragment in str(e.value)


def test_cuda_only_backend_on_cpu_is_refused(monkeypatch):
    from fst.engine.config import validate_config
    from fst.engine.validate import check_run_config
    from fst.ops import BACKENDS

    class CudaOnly:
        needs_cuda = True

    monkeypatch.setitem(BACKENDS._items, "sparse24", CudaOnly())
    cfg = _compose("backend.name=sparse24")
    validate_config(cfg)
    with pytest.raises(ConfigError, match="backend=sparse24 runs only on CUDA.*use backend=native"):
        check_run_config(cfg)


def test_train_py_reports_bad_input_without_training(tmp_path):
    proc = _run(tmp_path / "run", "data=imagenet", f"data.root={tmp_path / 'missing'}", timeout=120)
    assert proc.returncode == 1
    assert "no such directory. Expected ImageFolder layout" in proc.stdout
    assert "ROOT/train/<class_name>/<image>.JPEG" in proc.stdout
    assert not (tmp_path / "run" / "checkpoints").exists()


def _image_folder(root: Path) -> Path:
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for c in ("a", "b"):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (60 * i, 100 if c == "a" else 0, 0)).save(d / f"{i}.png")
    (root / "train" / "b" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return root


IMAGE_FOLDER = [
    "data=imagenet",
    "data.image_size=8",
    "data.resize_size=8",
    "data.batch_size=4",
    "data.val_batch_size=4",
    "data.num_workers=0",
    "data.pin_memory=false",
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
]


def test_unreadable_image_skipped_counted_and_logged(tmp_path, caplog):
    root = _image_folder(tmp_path / "data")
    with caplog.at_level("WARNING"):
        summary = _train(tmp_path / "run", *IMAGE_FOLDER, f"data.root={root}", "data.on_error=skip")
    assert summary["steps"] == 2
    assert summary["unreadable_images_skipped"] == 1
    assert f"skipping unreadable image (1 so far): {root / 'train' / 'b' / '1.png'}" in caplog.text


def test_unreadable_image_stops_the_run_with_on_error_raise(tmp_path):
    from fst.engine.validate import UnreadableImageError

    root = _image_folder(tmp_path / "data")
    with pytest.raises(UnreadableImageError) as e:
        _train(tmp_path / "run", *IMAGE_FOLDER, f"data.root={root}", "data.on_error=raise")
    assert f"cannot read image {root / 'train' / 'b' / '1.png'}" in str(e.value)
    assert "data.on_error=skip" in str(e.value)


# --------------------------------------------------------------------------------------------
# W&B unreachable: training goes on, metrics.jsonl is complete, the API key is written nowhere
# --------------------------------------------------------------------------------------------

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def wandb_unreachable(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("wandb")
    env = _env()
    env.update(
        HOME=str(tmp / "home"),  # no ~/.netrc login
        WANDB_API_KEY=FAKE_KEY,
        WANDB_BASE_URL="http://127.0.0.1:9",  # nothing listens on the discard port
        WANDB_INIT_TIMEOUT="10",
    )
    env.pop("WANDB_MODE", None)
    run_dir = tmp / "run"
    proc = subprocess.run(
        _train_cmd(run_dir, "logger=wandb", "logger.wandb.mode=online", "trainer.epochs=1"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return run_dir, proc


def test_wandb_failure_never_stops_training_nor_leaks_the_key(wandb_unreachable):
    run_dir, proc = wandb_unreachable
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "W&B" in proc.stdout and "WARNING" in proc.stdout
    records = _metrics(run_dir)
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS_PER_EPOCH + 1))
    assert any("val/top1" in r for r in records)
    leaked = [
        str(p) for p in run_dir.rglob("*") if p.is_file() and FAKE_KEY.encode() in p.read_bytes()
    ]
    assert leaked == [] and FAKE_KEY not in proc.stdout


def test_wandb_falls_back_to_offline(wandb_unreachable):
    run_dir, _ = wandb_unreachable
    assert list((run_dir / "wandb").glob("offline-run-*"))
