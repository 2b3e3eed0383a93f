"""The fault table: what can go wrong, what fst says, and the fix it names.

Each ``Fault`` is run by ``tests/faults/test_faults.py``, which asserts the exit status, that
the output contains every ``message`` fragment (the cause) and every ``fix`` fragment, and that
the earlier result next to it (``harness.EARLIER``) kept every byte. ``check`` adds assertions
of its own (what was or was not written). ``python tests/faults/table.py`` prints the table the
docs/faults.md shows (a test keeps the two equal).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python tests/faults/table.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch

from tests.faults.harness import NAME, RUN, TINY, Env, Result, digest, wait_for_step

# Exit statuses (fst.engine.cli): 0 finished, 1 failed, 75 preempted, 130 interrupted (Ctrl-C).
OK, FAILED, PREEMPTED, INTERRUPTED = 0, 1, 75, 130


@dataclass(frozen=True)
class Fault:
    id: str
    area: str
    cause: str  # what went wrong, for the README table
    act: Callable[[Env], Result]
    status: int
    message: tuple[str, ...]  # fragments naming the cause
    fix: tuple[str, ...]  # fragments naming the fix
    check: Callable[[Env, Result], None] | None = None
    slow: bool = False  # a subprocess run (seconds, not a fraction of one)
    marks: tuple = field(default=())


def train(*overrides: str, **kw) -> Callable[[Env], Result]:
    return lambda env: env.train(*overrides, **kw)


# --------------------------------------------------------------------------------------------
# helpers used by several faults
# --------------------------------------------------------------------------------------------


def nothing_written(env: Env, result: Result) -> None:
    """A refused launch leaves nothing behind: no run directory, not even an empty one."""
    assert env.runs() == [], env.runs()
    assert env.new_paths() == [], env.new_paths()


def _imagefolder(env: Env, **kw) -> Path:
    from tests.conftest import make_imagefolder

    return make_imagefolder(env.tmp / "imagenet", **kw)


def _imagenet(*extra: str, damage: str | None = None, run_dir=None) -> Callable[[Env], Result]:
    """A run on a tiny ImageFolder tree; ``damage``: a file made unreadable first."""

    def act(env: Env) -> Result:
        root = _imagefolder(env, per_class=4, size=12)
        if damage is not None:
            (root / damage).write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        return env.train(
            "data=imagenet",
            f"data.root={root}",
            "data.image_size=8",
            "data.resize_size=8",
            "data.num_workers=0",
            "data.pin_memory=false",
            "data.batch_size=4",
            "data.val_batch_size=4",
            *[e.replace("<root>", str(root)) for e in extra],
            run_dir=run_dir,
        )

    return act


def _folders(root: Path, train: tuple, val: tuple, files: bool = True) -> None:
    """``root/{train,val}/<class>/`` with one 8 px PNG each (none with ``files=False``)."""
    from PIL import Image

    for split, classes in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            if files:
                Image.new("RGB", (8, 8)).save(root / split / c / "0.png")


def _overrides(*overrides: str) -> Callable[[Env], Result]:
    """What train.py does with the command line before Hydra composes it."""
    from fst.engine.config import check_overrides

    return lambda env: env.call(check_overrides, list(overrides))


def _layout(make: Callable[[Path], None]) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        root = env.tmp / "data"
        make(root)
        return env.train("data=imagenet", f"data.root={root}")

    return act


def _coco(edit: Callable[[dict], str | None]) -> Callable[[Env], Result]:
    """A one-image COCO tree whose annotation file ``edit`` damages (returns raw text or None)."""

    def act(env: Env) -> Result:
        from PIL import Image

        root = env.tmp / "coco"
        for split in ("train2017", "val2017"):
            (root / split).mkdir(parents=True)
            Image.new("RGB", (32, 24)).save(root / split / "1.jpg")
        (root / "annotations").mkdir()
        blob = {
            "images": [{"id": 1, "file_name": "1.jpg", "width": 32, "height": 24}],
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [
                {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0}
            ],
        }
        text = edit(blob)
        for split in ("train2017", "val2017"):
            path = root / "annotations" / f"instances_{split}.json"
            path.write_text(text if text is not None else json.dumps(blob))
        return env.train(
            "task=detection",
            "model=ssd300_vgg16",
            "data=coco",
            f"data.root={root}",
            "data.num_workers=0",
            "data.pin_memory=false",
            base=RUN,
        )

    return act


def _set_ann(key: str, value) -> Callable[[dict], None]:
    def edit(blob: dict) -> None:
        if value is _DELETE:
            del blob["annotations"][0][key]
        else:
            blob["annotations"][0][key] = value

    return edit


_DELETE = object()


def _resume_with(make: Callable[[Env, Path], Path], *overrides: str):
    """``resume=<a damaged or foreign copy of the earlier run's checkpoint>``."""

    def act(env: Env) -> Result:
        ckpt = make(env, env.checkpoint_copy())
        return env.train(f"resume={ckpt}", *overrides)

    return act


def _truncate(env: Env, p: Path) -> Path:
    p.write_bytes(p.read_bytes()[:5000])
    return p


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload(env: Env, p: Path) -> Path:
    state = torch.load(p, weights_only=True)
    state["optimizer"] = {"state": {}, "hook": _Payload(env.tmp / "pwned")}
    torch.save(state, p)
    return p


def _no_payload_ran(env: Env, result: Result) -> None:
    assert not (env.tmp / "pwned").exists()
    nothing_written(env, result)


def _renamed_keys(env: Env, p: Path) -> Path:
    state = torch.load(p, weights_only=True)
    state["model"] = {
        ("extra." + k if k.startswith("fc.") else k): v for k, v in state["model"].items()
    }
    torch.save(state, p)
    return p


def _plain_state_dict(env: Env, p: Path) -> Path:
    torch.save(torch.load(p, weights_only=True)["model"], p)
    return p


def _damage_earlier(*names: str, how: str = "truncate") -> Callable[[Env], None]:
    def damage(env: Env) -> None:
        for name in names:
            path = env.earlier / "checkpoints" / name
            if how == "truncate":
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
            else:  # non-finite weights, still a valid file
                state = torch.load(path, weights_only=True)
                first = next(k for k, v in state["model"].items() if v.is_floating_point())
                state["model"][first].fill_(float("nan"))
                torch.save(state, path)

    return damage


def _auto_resume(damage: Callable[[Env], None] | None, *overrides: str):
    """Continue the earlier run (``resume=auto``) after ``damage``: a run that may change it."""

    def act(env: Env) -> Result:
        if damage is not None:
            damage(env)
        env.before = _digest_except_checkpoints(env)  # the resumed run rewrites last.pt etc.
        return env.train("resume=auto", "trainer.epochs=2", *overrides)

    return act


def _digest_except_checkpoints(env: Env) -> dict[str, str]:
    """What a resume of the earlier run must keep: the metrics of the steps before the resume
    point (step 1 at the earliest here), byte for byte; it rewrites the rest by design."""
    lines = (env.earlier / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 1]
    return {"metrics.jsonl": "\n".join(kept), "prefix": "1"}


def _resumed_from(name: str) -> Callable[[Env, Result], None]:
    def check(env: Env, result: Result) -> None:
        assert f"resumed from {env.earlier / 'checkpoints' / name}" in result.text
        state = torch.load(env.earlier / "checkpoints" / "last.pt", weights_only=True)
        assert (state["epoch"], state["global_step"]) == (2, 4)  # continued to the end
        assert env.runs() == []  # in the run's own directory, no new one

    return check


def _lr_applied(env: Env, result: Result) -> None:
    """A changed optim.lr takes effect: the resumed steps log the new lr (constant schedule)."""
    recs = [json.loads(x) for x in (env.earlier / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["train/lr"] for r in recs if "train/lr" in r and r["step"] > 2]
    assert lrs and all(abs(lr - 0.005) < 1e-12 for lr in lrs), lrs
    cfg = (env.earlier / "config_resolved.yaml").read_text()
    assert "lr: 0.005" in cfg
    assert (env.earlier / "config_resolved.step2.yaml").is_file()  # settings of steps 1-2


def _disk_full_on_second_save(env: Env) -> Result:
    """The second write of last.pt meets a full disk (a real ENOSPC: its temporary file is a
    symlink to /dev/full)."""
    import fst.engine.trainer as trainer_mod

    real = trainer_mod.save_checkpoint
    calls = []

    def save(path, state, **kw):
        calls.append(path)
        if len(calls) == 2:
            os.symlink("/dev/full", path.with_name(f".{path.name}.tmp-{os.getpid()}"))
        return real(path, state, **kw)

    trainer_mod.save_checkpoint = save
    try:
        return env.train(
            "trainer.checkpoint_every_n_steps=1",
            "trainer.limit_train_batches=3",
            run_dir=env.tmp / "run",
        )
    finally:
        trainer_mod.save_checkpoint = real


def _disk_full_kept_previous(env: Env, result: Result) -> None:
    ckpts = env.tmp / "run" / "checkpoints"
    state = torch.load(ckpts / "last.pt", weights_only=True)
    assert state["global_step"] == 1  # the step-1 checkpoint survived, whole
    assert [p.name for p in ckpts.iterdir() if ".tmp" in p.name] == []


def _disk_full_metrics(env: Env) -> Result:
    from fst.logging import jsonl

    real = jsonl.JsonlWriter.__init__

    def init(self, path):
        real(self, path)
        os.symlink("/dev/full", self.path)

    jsonl.JsonlWriter.__init__ = init
    try:
        return env.train(run_dir=env.tmp / "run")
    finally:
        jsonl.JsonlWriter.__init__ = real


def _stale_tmp(env: Env) -> Result:
    """A writer killed mid-write left ``.last.pt.tmp-<pid>``; the next run of the directory
    removes it."""
    stale = env.earlier / "checkpoints" / ".last.pt.tmp-999999"
    stale.write_bytes(b"half a checkpoint")
    (env.earlier / "summary.json.tmp").write_text("{")
    env.before = _digest_except_checkpoints(env)
    result = env.train("resume=auto", "trainer.epochs=2")
    assert not stale.exists() and not (env.earlier / "summary.json.tmp").exists()
    return result


def _held(resume: bool) -> Callable[[Env], Result]:
    """Another live writer holds the directory (its lock); here the holder is this process
    through a second open file description, which flock treats as a separate owner."""

    def act(env: Env) -> Result:
        from fst.engine.rundir import claim

        holder = claim(env.earlier, resume=True)
        try:
            if resume:
                return env.train("resume=auto", "trainer.epochs=2")
            return env.train(run_dir=env.earlier)
        finally:
            holder.release()

    return act


def _second_dir_used(env: Env, result: Result) -> None:
    (run,) = env.runs()
    assert run.name == env.earlier.name + "_2", run


def _sigint_external(env: Env) -> Result:
    """Ctrl-C from outside a real process, during training."""
    run = env.out / NAME / "seed0" / "interrupted"
    proc = env.popen(
        "train.py",
        *TINY,
        f"output_root={env.out}",
        f"hydra.run.dir={run}",
        "trainer.limit_train_batches=50",
        "data.batch_size=4",
    )
    try:
        wait_for_step(run / "metrics.jsonl", 1, proc)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return Result(proc.returncode, out)


def _checkpointed(step_min: int) -> Callable[[Env, Result], None]:
    def check(env: Env, result: Result) -> None:
        (run,) = env.runs()
        state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
        assert state["global_step"] >= step_min and state["step_in_epoch"] >= 1
        assert not (run / "summary.json").exists()
        if result.status == PREEMPTED:  # the marker a job script checks under torchrun
            assert (run / "PREEMPTED").is_file()

    return check


def _sigkill_then_resume(env: Env) -> Result:
    """SIGKILL (no handler can run) mid-training; resume=auto continues from the newest
    checkpoint that survived."""
    run = env.out / NAME / "seed1" / "killed"
    common = ("seed=1", "trainer.checkpoint_every_n_steps=1", "data.batch_size=4")
    proc = env.popen(
        "train.py", *TINY, f"output_root={env.out}", f"hydra.run.dir={run}", *common,
        "trainer.limit_train_batches=50",
    )  # fmt: skip
    try:
        wait_for_step(run / "metrics.jsonl", 2, proc)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run / "checkpoints" / ".last.pt.tmp-1").write_bytes(b"torn")  # as if killed mid-write
    return env.train("resume=auto", *common, "trainer.limit_train_batches=50", run_dir=run)


def _resumed_after_kill(env: Env, result: Result) -> None:
    run = env.out / NAME / "seed1" / "killed"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 50 and "resumed from" in result.text


def _concurrent(env: Env) -> Result:
    """Three runs started at once into one directory (a shared hydra.run.dir)."""
    shared = env.tmp / "shared"
    procs = [
        env.popen(
            "train.py", *TINY, f"output_root={env.out}", f"hydra.run.dir={shared}", f"optim.lr={lr}"
        )  # fmt: skip
        for lr in (0.01, 0.02, 0.03)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    status = max(p.returncode for p in procs)
    return Result(status, "\n".join(outs))


def _concurrent_own_dirs(env: Env, result: Result) -> None:
    dirs = sorted(p.parent for p in env.tmp.glob("shared*/summary.json"))
    assert [d.name for d in dirs] == ["shared", "shared_2", "shared_3"], dirs
    lrs = set()
    for d in dirs:
        cfg = (d / "config_resolved.yaml").read_text()
        lrs.add(next(line for line in cfg.splitlines() if line.strip().startswith("lr:")))
        steps = [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines()]
        assert steps == sorted(steps)  # one writer per metrics.jsonl: no interleaving
    assert len(lrs) == 3  # each directory holds its own run's config


def _wandb_unreachable(env: Env) -> Result:
    return env.train_cli(
        "logger=wandb",
        "logger.wandb.mode=online",
        f"hydra.run.dir={env.tmp / 'run'}",
        env={
            "HOME": str(env.tmp / "home"),  # no ~/.netrc login
            "WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567",
            "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens on the discard port
            "WANDB_INIT_TIMEOUT": "5",
            "WANDB_MODE": None,
        },
    )


def _wandb_offline_record(env: Env, result: Result) -> None:
    run = env.tmp / "run"
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B record"
    assert "in use" not in result.text
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[:2] == [1, 2]
    key = b"0123456789abcdef0123456789abcdef01234567"
    assert not [p for p in run.rglob("*") if p.is_file() and key in p.read_bytes()]


def _wandb_missing(env: Env) -> Result:
    saved = sys.modules.get("wandb")
    sys.modules["wandb"] = None  # `import wandb` raises ImportError
    try:
        return env.train("logger=wandb", run_dir=env.tmp / "run")
    finally:
        if saved is not None:
            sys.modules["wandb"] = saved
        else:
            sys.modules.pop("wandb", None)


def _jsonl_complete(env: Env, result: Result) -> None:
    recs = (env.tmp / "run" / "metrics.jsonl").read_text()
    assert '"train/loss"' in recs and '"val/top1"' in recs


def _ddp_rank0_failure(env: Env) -> Result:
    """Rank 0 finds the data missing while rank 1 waits for it: both must stop, once."""
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    return env.cli(
        "train.py", *TINY, f"output_root={env.out}", "data=imagenet",
        f"data.root={env.tmp / 'missing'}", prefix=torchrun, timeout=300,
    )  # fmt: skip


def _ddp_peer_killed(env: Env) -> Result:
    """A real 2-process gloo group whose other process is SIGKILLed: the collective this
    process then waits in fails inside gloo, as a surviving DDP rank's gradient all-reduce does."""
    import datetime
    import socket
    import subprocess

    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    peer = subprocess.Popen([sys.executable, "-c", (
        "import time, torch.distributed as d; "
        f"d.init_process_group('gloo', init_method='{url}', rank=1, world_size=2); "
        "d.barrier(); time.sleep(120)"
    )])  # fmt: skip

    def step():
        dist.init_process_group(
            "gloo", init_method=url, rank=0, world_size=2, timeout=datetime.timedelta(seconds=60)
        )
        try:
            dist.barrier()
            peer.kill()  # SIGKILL: no handler runs, the socket just closes
            peer.wait(timeout=30)
            dist.all_reduce(torch.ones(1 << 16))
        finally:
            dist.destroy_process_group()

    old = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK")}
    os.environ.update(WORLD_SIZE="2", RANK="0")
    try:
        return env.call(step)
    finally:
        peer.kill()
        peer.wait(timeout=30)
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _once(fragment: str) -> Callable[[Env, Result], None]:
    def check(env: Env, result: Result) -> None:
        assert result.text.count(fragment) == 1, result.text
        nothing_written(env, result)

    return check


def _ddp_batch(env: Env) -> Result:
    os.environ["WORLD_SIZE"] = "2"
    try:
        return env.train("data.batch_size=7")
    finally:
        del os.environ["WORLD_SIZE"]


def _nan_named_checkpoint_finite(env: Env, result: Result) -> None:
    (run,) = env.runs()
    last = run / "checkpoints" / "last.pt"
    assert f"last good checkpoint: {last}" in result.text
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 2
    assert all(v.isfinite().all() for v in state["model"].values() if v.is_floating_point())


def _diverged_not_best(env: Env, result: Result) -> None:
    """lr=1e4: weights reach ~1e29, validation is NaN. No NaN metric is "best", the epoch is not
    checkpointed, and the error names no unvalidated checkpoint as good."""
    (run,) = env.runs()
    ckpts = run / "checkpoints"
    assert not (ckpts / "best.pt").exists()
    for p in ckpts.glob("*.pt"):
        assert torch.load(p, weights_only=True)["validated"] is False
    assert "last good checkpoint: None" in result.text


def _tampered_export(env: Env) -> Result:
    from fst.masks import is_nm

    export = env.tmp / "deploy.pt"
    first = env.eval(f"checkpoint={env.earlier}", f"export={export}")
    assert first.status == 0, first
    sd = torch.load(export, weights_only=True)
    w = sd["layer1.0.conv1.weight"]
    w.view(w.shape[0], -1)[0, :4] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # 3 of 4 kept
    assert not is_nm(w.reshape(w.shape[0], -1), dim=1)
    torch.save(sd, env.tmp / "tampered.pt")
    return env.eval(f"checkpoint={env.earlier}", f"weights={env.tmp / 'tampered.pt'}")


def _eval_ok(env: Env) -> Result:
    export = env.tmp / "deploy.pt"
    first = env.eval(f"checkpoint={env.earlier}", f"export={export}")
    assert first.status == 0 and "nm_ok: True" in first.text, first
    return env.eval(f"checkpoint={env.earlier}", f"weights={export}")


def _eval_saw_stored(env: Env, result: Result) -> None:
    assert "nm_ok: True" in result.text and "nm_layers_checked: 21" in result.text
    assert f"weights as stored in {env.tmp / 'deploy.pt'}" in result.text


def _resume_without_root(env: Env) -> Result:
    """``+experiment=fst_resnet18 resume=auto``: the run of that name and seed supplies
    ``data.root`` (and everything else the command leaves unset)."""
    root = _imagefolder(env, per_class=4, size=12)
    shrink = ("model.width=8", "data.image_size=8", "data.resize_size=8", "data.batch_size=4",
              "data.val_batch_size=4", "data.num_workers=0", "trainer.grad_clip_norm=1.0")  # fmt: skip
    base = tuple(o for o in RUN if not o.startswith("name="))  # the experiment's own name
    first = env.train("+experiment=fst_resnet18", f"data.root={root}", *shrink, base=base)
    assert first.status == 0, first
    return env.train("+experiment=fst_resnet18", "resume=auto", "trainer.epochs=2", *shrink,
                     base=base)  # fmt: skip


def _resumed_imagenet(env: Env, result: Result) -> None:
    (run,) = env.runs()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 * 2 and summary["name"] == "fst_resnet18"
    cfg = json.loads(
        json.dumps(torch.load(run / "checkpoints" / "last.pt", weights_only=True)["config"])
    )
    assert cfg["data"]["root"] == str(env.tmp / "imagenet")


def _resume_epochs(env: Env) -> Result:
    """The earlier run finished 1 epoch; make it 2, then ask for 1."""
    first = env.train("resume=auto", "trainer.epochs=2")
    assert first.status == 0, first
    env.before = _digest_except_checkpoints(env)
    return env.train("resume=auto", "trainer.epochs=1")


# --------------------------------------------------------------------------------------------
# issue 27: the command line checked before Hydra starts (fst.engine.launch), eval.py's writes,
# signals at start-up, resume records
# --------------------------------------------------------------------------------------------


def cmd(*overrides: str, env_vars: dict | None = None, config: str = "config", base=TINY):
    """What train.py (eval.py) does with its command line before Hydra creates a directory:
    ``fst.engine.launch.check_command``, in-process (the same function, no subprocess)."""

    def act(env: Env) -> Result:
        from fst.engine.launch import check_command

        first = [*base] if config == "config" else []
        saved = {k: os.environ.get(k) for k in (env_vars or {})}
        os.environ.update(env_vars or {})
        try:
            return env.call(check_command, config, [*first, f"output_root={env.out}", *overrides])
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    return act


def _full_disk(env: Env) -> Result:
    import shutil as sh

    import fst.engine.launch as launch

    real = sh.disk_usage
    launch.shutil.disk_usage = lambda p: sh._ntuple_diskusage(10**12, 10**12, 0)
    try:
        return cmd()(env)
    finally:
        launch.shutil.disk_usage = real


def _output_root_is(make: Callable[[Env], str]) -> Callable[[Env], Result]:
    return lambda env: cmd(f"output_root={make(env)}")(env)


def _a_file(env: Env) -> str:
    (env.tmp / "afile").write_text("not a directory")
    return str(env.tmp / "afile")


def _dangling(env: Env) -> str:
    os.symlink(env.tmp / "gone", env.tmp / "link")
    return str(env.tmp / "link")


def _text_weights(env: Env) -> Result:
    (env.tmp / "weights.pt").write_text("<html>404 not found</html>")
    return env.train(f"model.pretrained={env.tmp / 'weights.pt'}")


def _eval_refused(**paths: Callable[[Env], Path]) -> Callable[[Env], Result]:
    def act(env: Env) -> Result:
        return env.eval(f"checkpoint={env.earlier}", *[f"{k}={f(env)}" for k, f in paths.items()])

    return act


def _in_ckpts(name: str) -> Callable[[Env], Path]:
    return lambda env: env.earlier / "checkpoints" / name


def _eval_twice(env: Env) -> Result:
    """Two evaluations given the same directory (started in the same second)."""
    first = env.eval(f"checkpoint={env.earlier}")
    assert first.status == 0, first
    return env.eval(f"checkpoint={env.earlier}")


def _two_metrics(env: Env, result: Result) -> None:
    assert (env.tmp / "eval" / "eval_metrics.json").is_file()
    assert (env.tmp / "eval_2" / "eval_metrics.json").is_file()


def _nan_export(env: Env) -> Result:
    export = env.tmp / "deploy.pt"
    assert env.eval(f"checkpoint={env.earlier}", f"export={export}").status == 0
    sd = torch.load(export, weights_only=True)
    sd["fc.weight"][0, 0] = float("nan")
    torch.save(sd, export)
    return env.eval(f"checkpoint={env.earlier}", f"weights={export}")


def _eval_damaged_best(env: Env) -> Result:
    best = env.earlier / "checkpoints" / "best.pt"
    best.write_bytes(best.read_bytes()[:4000])
    env.before = digest(env.earlier)
    return env.eval(f"checkpoint={env.earlier}")


def _startup_signal(sig: str, where: str = "fst.engine.validate.check_data"):
    """A signal while the run starts (e.g. scanning a large ImageFolder), in-process: the
    handlers train.py installs first, the signal sent from inside the data check."""

    def act(env: Env) -> Result:
        import importlib

        from fst.engine.faults import install_startup_handlers

        mod_name, fn_name = where.rsplit(".", 1)
        mod = importlib.import_module(mod_name)
        real = getattr(mod, fn_name)
        saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP,
                                                  signal.SIGINT)}  # fmt: skip

        def slow_check(*a, **k):
            os.kill(os.getpid(), getattr(signal, sig))
            return real(*a, **k)

        install_startup_handlers()
        setattr(mod, fn_name, slow_check)
        try:
            return env.train()
        finally:
            setattr(mod, fn_name, real)
            for s, h in saved.items():
                signal.signal(s, h)

    return act


def _sigterm_at_import(env: Env) -> Result:
    """SIGTERM a moment after train.py starts (while Python imports torch)."""
    import time

    proc = env.popen("train.py", *TINY, f"output_root={env.out}")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return Result(proc.returncode, out)


def _resume_kept_record(env: Env) -> Result:
    """Data loss 4: resumed with lr A and killed before a checkpoint (it left config_resolved
    .step2.yaml and an A config), then resumed again with lr B."""
    import shutil as sh

    run = env.earlier
    sh.copy(run / "config_resolved.yaml", run / "config_resolved.step2.yaml")
    text = (run / "config_resolved.yaml").read_text().replace("lr: 0.02", "lr: 0.01")
    (run / "config_resolved.yaml").write_text(text)
    env.before = _digest_except_checkpoints(env)
    env.kept_record = (run / "config_resolved.step2.yaml").read_bytes()
    return env.train("resume=auto", "trainer.epochs=2", "optim.lr=0.005")


def _record_kept(env: Env, result: Result) -> None:
    assert (env.earlier / "config_resolved.step2.yaml").read_bytes() == env.kept_record
    assert "lr: 0.005" in (env.earlier / "config_resolved.yaml").read_text()


def _extend_preempted(env: Env) -> Result:
    """A finished run extended by an epoch and preempted in it."""
    env.before = _digest_except_checkpoints(env)
    env.old_summary = (env.earlier / "summary.json").read_bytes()
    return env.train("resume=auto", "trainer.epochs=2", "trainer.debug_signal_at_step=3")


def _summary_not_stale(env: Env, result: Result) -> None:
    assert not (env.earlier / "summary.json").exists()
    assert (env.earlier / "summary.step2.json").read_bytes() == env.old_summary


def _clock_behind(env: Env) -> Result:
    """A run of the same name+seed whose directory name is newer (its node's clock was ahead)
    but which last wrote long ago: resume=auto continues the run written most recently."""
    import shutil as sh

    other = env.earlier.with_name("2099-01-01_00-00-00")
    sh.copytree(env.earlier, other)
    for p in [other, *other.rglob("*")]:
        os.utime(p, (1, 1))
    env.before = _digest_except_checkpoints(env)
    return env.train("resume=auto", "trainer.epochs=2")


def _resumed_newest(env: Env, result: Result) -> None:
    assert f"resumed from {env.earlier / 'checkpoints'}" in result.text, result.text


def _other_data(env: Env) -> Result:
    """resume=auto with data.root pointing at another data set of the same classes."""
    first = _imagenet()(env)
    assert first.status == 0, first
    from tests.conftest import make_imagefolder

    other = make_imagefolder(env.tmp / "other", per_class=5, size=12)
    return _imagenet("resume=auto", "trainer.epochs=2", f"data.root={other}")(env)


def _orders_differ(env: Env) -> Result:
    """Data order: no two (seed, epoch) pairs share a permutation (seed 0 epoch 1 was seed 1
    epoch 0 before)."""
    from fst.engine.sampler import ResumableSampler

    seen = {}
    for seed in range(3):
        for epoch in range(3):
            s = ResumableSampler(1437, 8, seed=seed)
            s.set_epoch(epoch)
            seen[(seed, epoch)] = tuple(s.indices()[:64])
    distinct = len(set(seen.values())) == len(seen)
    return Result(OK if distinct else FAILED, f"{len(set(seen.values()))} distinct orders "
                  f"of {len(seen)} (seed, epoch) pairs; each epoch's order from SeedSequence")  # fmt: skip


def _hidden_folder(env: Env) -> Result:
    """A hidden folder holding images next to the class folders (e.g. .ipynb_checkpoints)."""
    from PIL import Image

    root = _imagefolder(env, per_class=4, size=12)
    for split in ("train", "val"):
        (root / split / ".ipynb_checkpoints").mkdir()
        Image.new("RGB", (12, 12)).save(root / split / ".ipynb_checkpoints" / "0.png")
    return _imagenet(f"data.root={root}")(env)


def _symlink_loop(env: Env) -> Result:
    """A symbolic link inside a class folder pointing back at it."""
    root = _imagefolder(env, per_class=4, size=12)
    os.symlink(".", root / "train" / "cat" / "loop")
    return _imagenet(f"data.root={root}")(env)


def _twelve_samples(env: Env, result: Result) -> None:
    assert "12 train / 12 val samples" in result.text, result.text


def _bomb(env: Env) -> Result:
    """An image over PIL's decompression-bomb limit (2 x MAX_IMAGE_PIXELS; the limit lowered to
    100 px here, so that a 20x20 image counts as one) with ``data.on_error=skip``."""
    from PIL import Image

    real = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 100
    root = _imagefolder(env, per_class=4, size=12)
    Image.new("RGB", (20, 20)).save(root / "train" / "cat" / "bomb.png")
    try:
        return _imagenet("data.on_error=skip", "data.loader=pil")(env)
    finally:
        Image.MAX_IMAGE_PIXELS = real


def _add_missing_image(blob: dict) -> None:
    blob["images"].append({"id": 2, "file_name": "2.jpg", "width": 32, "height": 24})
    blob["annotations"].append(
        {"id": 8, "image_id": 2, "category_id": 1, "bbox": [1, 2, 10, 5], "iscrowd": 0}
    )


def _nan_pretrained(env: Env) -> Result:
    from fst.models import MODELS

    sd = MODELS.get("resnet18")(num_classes=10, small_stem=True, width=8).state_dict()
    sd["conv1.weight"].fill_(float("nan"))
    torch.save(sd, env.tmp / "nan.pt")
    return env.train(f"model.pretrained={env.tmp / 'nan.pt'}")


def _last_is_dir(env: Env) -> Result:
    """``checkpoints/last.pt`` is a directory (e.g. made by a mistyped copy command)."""
    last = env.earlier / "checkpoints" / "last.pt"
    last.unlink()
    last.mkdir()
    (last / "x").write_text("in the way")
    env.before = _digest_except_checkpoints(env)
    return env.train("resume=auto", "trainer.epochs=2")


def _old_checkpoint(env: Env, p: Path) -> Path:
    """A checkpoint of an older fst: no 'scaler' and no 'progress' entry."""
    state = torch.load(p, weights_only=True)
    del state["scaler"], state["progress"]
    torch.save(state, p)
    return p


def _non_utf8_name(env: Env) -> Result:
    """An unreadable image whose file name is not valid UTF-8 (``data.on_error=skip``)."""
    root = _imagefolder(env, per_class=4, size=12)
    bad = os.fsencode(root / "val" / "cat") + b"/0caf\xe9.png"  # in the first val batch
    with open(bad, "wb") as f:
        f.write(b"not an image")
    return _imagenet("data.on_error=skip", "data.loader=pil", run_dir=env.tmp / "run")(env)


def _skip_in_train_log(env: Env, result: Result) -> None:
    log_text = (env.tmp / "run" / "train.log").read_text()
    assert "skipping unreadable image" in log_text and "0caf\\udce9.png" in log_text, log_text
    assert "Logging error" not in result.text


def _one_line(env: Env, result: Result) -> None:
    """The real command: one line on the terminal, and no directory left by Hydra."""
    lines = [line for line in result.text.splitlines() if line.strip()]
    assert len(lines) == 1, result.text
    nothing_written(env, result)


def _run_dir_deleted(env: Env) -> Result:
    """The run directory is deleted while the run writes it (before its second checkpoint)."""
    import shutil as sh

    import fst.engine.trainer as trainer_mod

    real, calls, run = trainer_mod.save_checkpoint, [], env.tmp / "run"

    def save(path, state, **kw):
        calls.append(path)
        if len(calls) == 2:
            sh.rmtree(run)
        return real(path, state, **kw)

    trainer_mod.save_checkpoint = save
    try:
        return env.train("trainer.checkpoint_every_n_steps=1", "trainer.limit_train_batches=3",
                         run_dir=run)  # fmt: skip
    finally:
        trainer_mod.save_checkpoint = real


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

FIX_KEYS = "valid keys for trainer"
# fmt: off
FAULTS: list[Fault] = [
    # ---------------------------------------------------------------- config
    Fault("config-misspelt-key", "config", "a misspelt key (`trainer.epohcs=3`)",
          _overrides("trainer.epohcs=3"), FAILED, ("unknown config key trainer.epohcs",),
          ("did you mean trainer.epochs?",), nothing_written),
    Fault("config-unknown-key", "config", "an unknown key added (`+trainer.epohcs=3`)",
          train("+trainer.epohcs=3"), FAILED, ("unknown config key trainer.epohcs",),
          (FIX_KEYS, "epochs"), nothing_written),
    Fault("config-wrong-type", "config", "a value of the wrong type (`trainer.epochs=three`)",
          train("trainer.epochs=three"), FAILED, ("trainer.epochs='three' is not a valid int",),
          ("e.g. trainer.epochs=120",), nothing_written),
    Fault("config-unknown-option", "config", "an unknown group option (`sparsity=fts`)",
          lambda env: env.train_cli("sparsity=fts"), FAILED,
          ("Could not find 'sparsity/fts'",), ("Available options in 'sparsity'", "fst2"),
          nothing_written, slow=True),
    Fault("config-unknown-strategy", "config", "an unknown strategy name",
          train("sparsity.strategy=fts"), FAILED, ("unknown strategy 'fts' at sparsity.strategy",),
          ("valid choices: asfp, asp, dense",), nothing_written),
    Fault("config-unknown-backend", "config", "an unknown backend", train("backend.name=cutlass"),
          FAILED, ("unknown backend 'cutlass'",), ("valid choices: native, reference",),
          nothing_written),
    Fault("config-unknown-model", "config", "an unknown model", train("model.name=resnet19"),
          FAILED, ("unknown model 'resnet19' at model.name",), ("valid choices:", "resnet18"),
          nothing_written),
    Fault("config-unknown-dataset", "config", "an unknown dataset", train("data.name=imagenet1k"),
          FAILED, ("unknown dataset 'imagenet1k' at data.name",), ("valid choices:", "digits"),
          nothing_written),
    Fault("config-batch-split", "config",
          "a global batch not divisible by processes x accumulation",
          train("data.batch_size=50", "trainer.accumulate_grad_batches=4"), FAILED,
          ("data.batch_size=50 (global) is not divisible by",), ("use data.batch_size=48 or 52",),
          nothing_written),
    Fault("config-fp16-on-cpu", "config", "float16 precision without a GPU",
          train("trainer.precision=16"), FAILED, ("trainer.precision=16", "needs a CUDA device"),
          ("use trainer.precision=32",), nothing_written),
    Fault("config-cuda-without-gpu", "config", "`trainer.device=cuda` on a machine without CUDA",
          train("trainer.device=cuda"), FAILED, ("CUDA is not available",),
          ("use trainer.device=cpu",), nothing_written,
          marks=("skip_if_cuda",)),
    Fault("config-epochs-zero", "config", "`trainer.epochs=0`", train("trainer.epochs=0"), FAILED,
          ("trainer.epochs=0: a run trains at least 1 epoch",), ("use eval.py checkpoint=PATH",),
          nothing_written),
    Fault("config-no-train-batches", "config", "`trainer.limit_train_batches=0`",
          train("trainer.limit_train_batches=0"), FAILED, ("trainer.limit_train_batches=0",),
          ("at least 1 optimizer step per epoch, or null",), nothing_written),
    Fault("config-negative-clip", "config", "a negative `trainer.grad_clip_norm` (gradient ascent)",
          train("trainer.grad_clip_norm=-1"), FAILED,
          ("trainer.grad_clip_norm=-1", "would flip or zero every update"),
          ("Use null for no clipping", "e.g. 1.0"), nothing_written),
    Fault("config-lr-zero", "config", "`optim.lr=0` (nothing would train)", train("optim.lr=0"),
          FAILED, ("optim.lr=0", "the weights never improve"), ("use a positive lr",),
          nothing_written),
    Fault("config-negative-decay", "config", "a negative SR-STE decay",
          train("sparsity.decay=-1"), FAILED, ("sparsity.decay=-1",), ("a number >= 0",),
          nothing_written),
    Fault("config-exclude-not-list", "config", "`sparsity.exclude=conv1` (a string, not a list)",
          train("sparsity.exclude=conv1"), FAILED, ("sparsity.exclude must be a list",),
          ("e.g. [conv1, fc]",), nothing_written),
    Fault("config-option-ignored", "config", "a strategy option the strategy ignores",
          train("sparsity=srste", "+sparsity.ir_coef=0.5"), FAILED,
          ("sparsity.ir_coef=0.5 has no effect with strategy 'srste'",),
          ("drop it, or choose a strategy that uses it: fst, fst_noir, fst_released",),
          nothing_written),
    Fault("config-option-misspelt", "config", "a misspelt strategy option",
          train("+sparsity.ir_coeff=0.5"), FAILED, ("unknown config key sparsity.ir_coeff",),
          ("valid keys for sparsity", "ir_coef"), nothing_written),
    Fault("config-wandb-mode", "config", "an unknown W&B mode",
          train("logger=wandb", "logger.wandb.mode=onlin"), FAILED,
          ("logger.wandb.mode='onlin'",), ("valid choices: offline, online, disabled",),
          nothing_written),
    Fault("config-resume-missing", "config", "`resume=` a path that does not exist",
          train("resume=/no/such/run/last.pt"), FAILED,
          ("resume=/no/such/run/last.pt: no such file or directory",),
          ("resume=auto", "or leave it null"), nothing_written),
    Fault("config-ddp-batch", "ddp", "a global batch that 2 processes cannot split",
          _ddp_batch, FAILED, ("data.batch_size=7 (global) is not divisible by 2 process(es)",),
          ("use data.batch_size=6 or 8",), nothing_written),
    Fault("config-pretrained-missing", "config", "`model.pretrained=` a file that does not exist",
          train("model.pretrained=/no/such/weights.pt"), FAILED,
          ("model.pretrained='/no/such/weights.pt' does not exist",),
          ("only read from a local file",), nothing_written),
    # ---------------------------------------------------------------- data
    Fault("data-batch-too-large", "data", "a global batch larger than the training set",
          train("data.batch_size=4096"), FAILED,
          ("the training set has 1437 samples, fewer than one global batch",),
          ("lower data.batch_size",), nothing_written),
    Fault("data-root-unset", "data", "`data=imagenet` without `data.root`",
          train("data=imagenet"), FAILED, ("data.root is not set",),
          ("pass data.root=/path/to/imagenet", "ROOT/train/<class_name>/<image>.JPEG",
           "data=digits"), nothing_written),
    Fault("data-root-missing", "data", "`data.root` that does not exist",
          train("data=imagenet", "data.root=/no/such/imagenet"), FAILED,
          ("data.root='/no/such/imagenet': no such directory",), ("Expected ImageFolder layout",),
          nothing_written),
    Fault("data-no-val", "data", "an ImageFolder tree without `val/`",
          _layout(lambda r: _folders(r, train=("a", "b"), val=())), FAILED,
          ("missing val/ folder",), ("ROOT/val/<class_name>/<image>.JPEG",), nothing_written),
    Fault("data-class-mismatch", "data", "train/ and val/ with different class folders",
          _layout(lambda r: _folders(r, train=("a", "b"), val=("a", "c"))), FAILED,
          ("train/ and val/ class folders differ (e.g. ['b', 'c'])",),
          ("same class folders as train/",), nothing_written),
    Fault("data-empty-class", "data", "a class folder without images",
          _layout(lambda r: _folders(r, train=("a", "b"), val=("a", "b"), files=False)), FAILED,
          ("train/a holds no images",), ("Expected ImageFolder layout",), nothing_written),
    Fault("data-one-class", "data", "one-class data (a classifier needs two)",
          _layout(lambda r: _folders(r, train=("a",), val=("a",))), FAILED,
          ("only one class folder ('a')", "a classifier needs at least 2 classes"),
          ("Expected ImageFolder layout",), nothing_written),
    Fault("data-num-classes", "data", "`data.num_classes` different from the class folders",
          _imagenet("data.num_classes=5"), FAILED, ("data.num_classes=5 but",),
          ("set data.num_classes=3 (or null to count them)",), nothing_written),
    Fault("data-unreadable-raise", "data", "an unreadable image (`data.on_error=raise`)",
          _imagenet("data.on_error=raise", damage="train/dog/1.png"), FAILED,
          ("cannot read image", "dog/1.png"), ("data.on_error=skip skips unreadable images",)),
    Fault("data-unreadable-skip", "data", "an unreadable image (`data.on_error=skip`)",
          _imagenet("data.on_error=skip", damage="train/dog/1.png"), OK,
          ("skipping unreadable image (1 so far", "dog/1.png"),
          ("unreadable_images_skipped",)),
    Fault("data-bad-on-error", "data", "an unknown `data.on_error`",
          _imagenet("data.on_error=ignore"), FAILED, ("data.on_error='ignore'",),
          ("valid choices: skip, raise",), nothing_written),
    Fault("data-coco-bad-json", "data", "a COCO annotation file that is not valid JSON",
          _coco(lambda blob: json.dumps(blob)[:-20]), FAILED,
          ("instances_train2017.json is not valid JSON", "line 1"),
          ("download or generate it again",), nothing_written),
    Fault("data-coco-unknown-category", "data", "a COCO annotation with an unknown category id",
          _coco(_set_ann("category_id", 99)), FAILED,
          ("annotation id 7 (image 1) has category_id 99", "ids: 1, 2"),
          ("add that category or fix or remove that annotation",), nothing_written),
    Fault("data-coco-missing-bbox", "data", "a COCO annotation without `bbox`",
          _coco(_set_ann("bbox", _DELETE)), FAILED, ("annotation id 7 has no 'bbox'",),
          ("bbox: [x, y, width, height]", "fix or remove that annotation"), nothing_written),
    Fault("data-coco-nan-box", "data", "a COCO box with NaN coordinates",
          _coco(_set_ann("bbox", [float("nan"), 2, 10, 5])), FAILED,
          ("annotation id 7 (image 1) has bbox [nan, 2, 10, 5]",),
          ("4 finite numbers", "fix or remove that annotation"), nothing_written),
    Fault("data-voc-missing", "data", "a VOC root without the VOCdevkit layout",
          lambda env: env.train("task=detection", "model=ssd300_vgg16", "data=voc",
                                f"data.root={env.tmp}", base=RUN), FAILED,
          ("VOC2007/ImageSets/Main/trainval.txt not found",),
          ("data.root must be the VOCdevkit folder",), nothing_written),
    # ---------------------------------------------------------------- checkpoints and resume
    Fault("ckpt-truncated", "checkpoint", "`resume=` a truncated checkpoint",
          _resume_with(_truncate), FAILED, ("copy_last.pt is truncated or corrupt",),
          ("Resume from an earlier checkpoint or start the run again",), nothing_written),
    Fault("ckpt-pickle-payload", "checkpoint", "a checkpoint with a pickled code payload",
          _resume_with(_pickle_payload), FAILED,
          ("refusing to load", "global posix.system", "arbitrary code"),
          ("re-save its tensors as a plain state_dict",), _no_payload_ran),
    Fault("ckpt-other-strategy", "resume", "resuming with another strategy",
          _resume_with(lambda env, p: p, "sparsity=dense"), FAILED,
          ("sparsity.strategy: checkpoint 'fst' vs this run 'dense'",),
          ("drop those overrides", "or start a new run (resume=null)"), nothing_written),
    Fault("ckpt-other-decay", "resume", "resuming with another SR-STE decay",
          _resume_with(lambda env, p: p, "sparsity.decay=4e-4"), FAILED,
          ("sparsity.decay: checkpoint 0.0002 vs this run 0.0004",), ("drop those overrides",),
          nothing_written),
    Fault("ckpt-other-exclude", "resume", "resuming with other dense layers (`exclude`)",
          _resume_with(lambda env, p: p, "sparsity.exclude=[fc]"), FAILED,
          ("sparsity.exclude: checkpoint [] vs this run ['fc']",), ("drop those overrides",),
          nothing_written),
    Fault("ckpt-other-option", "resume", "resuming with another strategy option",
          _resume_with(lambda env, p: p, "+sparsity.ir_coef=0.5"), FAILED,
          ("sparsity.ir_coef: checkpoint 1.0 vs this run 0.5",),
          ("drop those overrides",), nothing_written),
    Fault("ckpt-other-model", "resume", "resuming a different model",
          _resume_with(lambda env, p: p, "model.width=16"), FAILED,
          ("model.width: checkpoint 8 vs this run 16",), ("drop those overrides",),
          nothing_written),
    Fault("ckpt-other-seed", "resume", "resuming with another seed",
          _resume_with(lambda env, p: p, "seed=3"), FAILED, ("seed: checkpoint 0 vs this run 3",),
          ("drop those overrides",), nothing_written),
    Fault("ckpt-other-batch", "resume", "resuming with another global batch",
          _resume_with(lambda env, p: p, "data.batch_size=16"), FAILED,
          ("data.batch_size: checkpoint 8 vs this run 16",),
          ("Settings that may change on resume: optim.lr",), nothing_written),
    Fault("ckpt-renamed-keys", "checkpoint", "a checkpoint whose weights do not fit the model",
          _resume_with(_renamed_keys), FAILED,
          ("does not fit the model", "missing keys (2): fc.weight, fc.bias"),
          ("different model",), nothing_written),
    Fault("ckpt-plain-state-dict", "checkpoint", "`resume=` a plain state_dict",
          _resume_with(_plain_state_dict), FAILED, ("has no 'meta'",),
          ("use model.pretrained=<file>",), nothing_written),
    Fault("ckpt-empty-dir", "checkpoint", "`resume=` a directory without checkpoints",
          lambda env: (env.tmp / "empty").mkdir() or env.train(f"resume={env.tmp / 'empty'}"),
          FAILED, ("no loadable checkpoint in that directory",),
          ("pass a checkpoint file, or resume=null",), nothing_written),
    Fault("ckpt-fewer-epochs", "resume", "resuming with fewer epochs than were done",
          _resume_epochs, FAILED,
          ("has already finished 2 epochs",), ("resume with trainer.epochs=2 or more",)),
    Fault("resume-auto-no-run", "resume", "`resume=auto` with no run to continue, data unset",
          train("+experiment=fst_resnet18", "name=other", "resume=auto"), FAILED,
          ("resume=auto found no checkpoint of run 'other' seed 0", "data.root is not set"),
          ("pass data.root=/path/to/imagenet",), nothing_written),
    Fault("resume-data-root-from-checkpoint", "resume",
          "`resume=auto` without `data.root` (the README's resume command)",
          _resume_without_root, OK, ("data.root=", "taken from the checkpoint's config"),
          ("resumed from",), _resumed_imagenet),
    Fault("resume-last-corrupt", "resume", "`last.pt` truncated (e.g. disk full)",
          _auto_resume(_damage_earlier("last.pt")), OK,
          ("skipping checkpoint", "last.pt is truncated or corrupt"),
          ("resume=auto falls back to it",),
          _resumed_from("last.prev.pt")),
    Fault("resume-only-best", "resume", "`last.pt` and `last.prev.pt` both damaged",
          _auto_resume(_damage_earlier("last.pt", "last.prev.pt")), OK,
          ("last.prev.pt is truncated or corrupt",), ("resumed from", "checkpoints/best.pt"),
          _resumed_from("best.pt")),
    Fault("resume-nonfinite-last", "resume", "`last.pt` holding NaN weights",
          _auto_resume(_damage_earlier("last.pt", how="nan")), OK,
          ("non-finite weights in 1 tensor(s)",), ("resumed from", "last.prev.pt"),
          _resumed_from("last.prev.pt")),
    Fault("resume-lr-changed", "resume", "resuming with a lower learning rate (applied)",
          _auto_resume(None, "optim.lr=0.005", "sched=constant"), OK,
          ("applying changed settings", "optim.lr: 0.02 -> 0.005"),
          ("sched.name: 'cosine' -> 'constant'",),
          _lr_applied),
    Fault("resume-busy", "concurrency", "`resume=auto` of a run another process is writing",
          _held(resume=True), FAILED, ("is in use by process",),
          ("Wait for it to finish (or stop it)",)),
    Fault("rundir-busy", "concurrency", "a new run into a directory another process is writing",
          _held(resume=False), OK, ("is in use by process",), ("this run writes to",),
          _second_dir_used),
    Fault("rundir-reused", "concurrency", "a new run into a directory holding a finished run",
          lambda env: env.train(run_dir=env.earlier), OK,
          ("holds an earlier run (metrics.jsonl, summary.json",), ("this run writes to",),
          _second_dir_used),
    Fault("rundir-concurrent", "concurrency", "three runs started at once into one directory",
          _concurrent, OK, ("this run writes to",), ("shared_2", "shared_3"),
          _concurrent_own_dirs, slow=True),
    # ---------------------------------------------------------------- eval
    Fault("eval-tampered-export", "eval", "2:4 weights modified after export (eval.py)",
          _tampered_export, FAILED, ("NOT 2:4", "layer1.0.conv1 (along Ci*kh*kw)"),
          ("re-export them", "export=FILE")),
    Fault("eval-run-dir", "eval", "`eval.py checkpoint=<run dir>` (handled: its best.pt)",
          _eval_ok, OK, ("checkpoint:", "best.pt"), ("nm_checked: weights as stored in",),
          _eval_saw_stored),
    Fault("eval-not-training-ckpt", "eval", "`eval.py` on a plain state_dict",
          lambda env: env.eval(f"checkpoint={_plain_state_dict(env, env.checkpoint_copy())}"),
          FAILED, ("is not a checkpoint written by train.py",), ("pass it as weights=",)),
    Fault("eval-missing", "eval", "`eval.py` on a path that does not exist",
          lambda env: env.eval(f"checkpoint={env.tmp / 'nope.pt'}"), FAILED,
          ("no such checkpoint file or run directory",), ("or the run directory",)),
    # ---------------------------------------------------------------- divergence
    Fault("nan-train-loss", "divergence", "a NaN training loss",
          train("trainer.debug_nan_at_step=3", "trainer.limit_train_batches=4",
                "trainer.checkpoint_every_n_steps=1"), FAILED,
          ("non-finite values at step 3", "loss is nan", "backward first met it in layer 'fc'"),
          ("Lower the learning rate", "trainer.grad_clip_norm"), _nan_named_checkpoint_finite),
    Fault("nan-val-loss", "divergence", "divergence that shows in validation (`optim.lr=1e4`)",
          train("optim.lr=1e4", "sched=constant", "trainer.checkpoint_every_n_steps=1",
                "trainer.limit_train_batches=4"), FAILED,
          ("non-finite validation metrics after epoch 1", "val/loss=nan", "nothing of this epoch"),
          ("Lower the learning rate",), _diverged_not_best),
    Fault("nan-skipped", "divergence", "a NaN batch with `trainer.skip_nonfinite=true`",
          train("trainer.debug_nan_at_step=2", "trainer.skip_nonfinite=true"), OK,
          ("skipping batch (1 skipped so far)",), ("trainer.skip_nonfinite=true",)),
    Fault("nan-too-many-skips", "divergence", "more NaN batches than `max_nonfinite_skips`",
          train("trainer.debug_nan_at_step=2", "trainer.skip_nonfinite=true",
                "trainer.max_nonfinite_skips=0"), FAILED,
          ("1 batches with non-finite values (more than max_skips=0)",),
          ("Lower the learning rate",)),
    # ---------------------------------------------------------------- signals
    Fault("signal-sigterm", "signal", "SIGTERM mid-epoch (preemption)",
          train("trainer.debug_signal_at_step=1"), PREEMPTED,
          ("received SIGTERM", "checkpoint written, exiting with status 75"), ("resume=auto",),
          _checkpointed(1)),
    Fault("signal-sigusr1", "signal", "SLURM's warning signal SIGUSR1",
          train("trainer.debug_signal_at_step=1", "trainer.debug_signal=SIGUSR1"), PREEMPTED,
          ("received SIGUSR1",), ("resume=auto",), _checkpointed(1)),
    Fault("signal-sigint", "signal", "Ctrl-C (SIGINT) mid-epoch",
          train("trainer.debug_signal_at_step=1", "trainer.debug_signal=SIGINT"), INTERRUPTED,
          ("received SIGINT", "exiting with status 130"), ("resume=auto",), _checkpointed(1)),
    Fault("signal-sigint-process", "signal", "Ctrl-C sent to a real training process",
          _sigint_external, INTERRUPTED, ("received SIGINT", "checkpoint written"),
          ("resume=auto",), _checkpointed(1), slow=True),
    Fault("signal-sigkill", "signal", "SIGKILL mid-training, then `resume=auto`",
          _sigkill_then_resume, OK, ("removed", ".last.pt.tmp-1", "killed"), ("resumed from",),
          _resumed_after_kill, slow=True),
    # ---------------------------------------------------------------- disk
    Fault("disk-full-checkpoint", "disk", "the disk fills up while `last.pt` is written",
          _disk_full_on_second_save, FAILED,
          ("cannot write checkpoint", "last.pt: the disk is full (errno 28"),
          ("previous last.pt is intact", "Free space under", "resume=auto"),
          _disk_full_kept_previous),
    Fault("disk-full-metrics", "disk", "the disk is full when `metrics.jsonl` is appended",
          _disk_full_metrics, FAILED, ("cannot write", "metrics.jsonl: No space left on device"),
          ("Free space under", "resume=auto")),
    Fault("disk-stale-tmp", "disk", "temporary files left by a killed writer",
          _stale_tmp, OK, ("removed", ".last.pt.tmp-999999", "a writer that was killed"),
          ("resumed from",)),
    # ---------------------------------------------------------------- W&B
    Fault("wandb-unreachable", "wandb", "W&B online but the service unreachable",
          _wandb_unreachable, OK, ("W&B online start failed",), ("falling back to offline",),
          _wandb_offline_record, slow=True),
    Fault("wandb-missing", "wandb", "`logger=wandb` without the wandb package",
          _wandb_missing, OK, ("W&B unavailable",), ("logging to metrics.jsonl only",),
          _jsonl_complete),
    # ---------------------------------------------------------------- DDP
    Fault("ddp-rank0-data-missing", "ddp", "2 DDP processes, data missing (rank 0 checks)",
          _ddp_rank0_failure, FAILED, ("error: data.root=",),
          ("Expected ImageFolder layout",), _once("error: data.root="), slow=True),
    Fault("ddp-peer-killed", "ddp", "another DDP process SIGKILLed mid-step (gloo all-reduce)",
          _ddp_peer_killed, FAILED, ("another process of this distributed run stopped",),
          ("resume=auto",), nothing_written),
    # ---------------------------------------------------------------- issue 27
    Fault("config-key-data", "config", 'a misspelt key in `data` (`data.imagesize=16`)',
          cmd("data.imagesize=16"), FAILED, ('unknown config key data.imagesize',),
          ('did you mean data.image_size?',), nothing_written),
    Fault("config-key-model", "config", 'a misspelt key in `model` (`model.widht=16`)',
          cmd("model.widht=16"), FAILED, ('unknown config key model.widht',),
          ('did you mean model.width?',), nothing_written),
    Fault("config-key-optim", "config", 'a misspelt key in `optim` (`optim.lrr=0.1`)',
          cmd("optim.lrr=0.1"), FAILED, ('unknown config key optim.lrr',),
          ('did you mean optim.lr?',), nothing_written),
    Fault("config-key-sched", "config", 'a misspelt key in `sched` (`sched.min_lrr=0`)',
          cmd("sched.min_lrr=0"), FAILED, ('unknown config key sched.min_lrr',),
          ('did you mean sched.min_lr?',), nothing_written),
    Fault("config-key-loss", "config", 'a misspelt key in `loss` (`loss.label_smooth=0.1`)',
          cmd("loss.label_smooth=0.1"), FAILED, ('unknown config key loss.label_smooth',),
          ('did you mean loss.label_smoothing?',), nothing_written),
    Fault("config-key-sparsity", "config", 'a misspelt key in `sparsity` (`sparsity.decya=0`)',
          cmd("sparsity.decya=0"), FAILED, ('unknown config key sparsity.decya',),
          ('did you mean sparsity.decay?',), nothing_written),
    Fault("config-key-logger", "config", 'a misspelt key in `logger` (`logger.diagnostics_every=5`)',
          cmd("logger.diagnostics_every=5"), FAILED, ('unknown config key logger.diagnostics_every',),
          ('did you mean logger.diagnostics_every_n_steps?',), nothing_written),
    Fault("config-key-backend", "config", 'a misspelt key in `backend` (`backend.nam=native`)',
          cmd("backend.nam=native"), FAILED, ('unknown config key backend.nam',),
          ('did you mean backend.name?',), nothing_written),
    Fault("config-key-top", "config", 'a misspelt key in `sed` (`sed=3`)',
          cmd("sed=3"), FAILED, ('unknown config key sed',),
          ('did you mean seed?',), nothing_written),
    Fault("config-key-multirun", "config", 'a misspelt key in a multirun (`-m seed=0,1 data.imagesize=3`)',
          cmd("-m", "seed=0,1", "data.imagesize=3"), FAILED, ('unknown config key data.imagesize',),
          ('did you mean data.image_size?',), nothing_written),
    Fault("config-key-eval", "eval", 'a misspelt eval.py key (`chekpoint=`)',
          cmd("chekpoint=x.pt", config="eval"), FAILED, ('unknown config key chekpoint',),
          ('did you mean checkpoint?',), nothing_written),
    Fault("config-type-image-size", "config", 'a value of the wrong type (`data.image_size=sixteen`)',
          cmd("data.image_size=sixteen"), FAILED, ("data.image_size='sixteen' is not a valid int",),
          ('e.g. data.image_size=32',), nothing_written),
    Fault("config-type-lr", "config", 'a value of the wrong type (`optim.lr=abc`)',
          cmd("optim.lr=abc"), FAILED, ("optim.lr='abc' is not a valid float",),
          ('e.g. optim.lr=0.1',), nothing_written),
    Fault("config-type-momentum", "config", 'a value of the wrong type (`optim.momentum=fast`)',
          cmd("optim.momentum=fast"), FAILED, ("optim.momentum='fast' is not a valid float",),
          ('e.g. optim.momentum=0.9',), nothing_written),
    Fault("config-type-seed", "config", 'a value of the wrong type (`seed=abc`)',
          cmd("seed=abc"), FAILED, ("seed='abc' is not a whole number",),
          ('e.g. seed=0',), nothing_written),
    Fault("config-type-seed-float", "config", 'a value of the wrong type (`seed=1.5`)',
          cmd("seed=1.5"), FAILED, ('seed=1.5 is not a whole number',),
          ('e.g. seed=0',), nothing_written),
    Fault("config-type-width", "config", 'a value of the wrong type (`model.width=wide`)',
          cmd("model.width=wide"), FAILED, ("model.width='wide' is not a valid int",),
          ('e.g. model.width=64',), nothing_written),
    Fault("config-type-shift", "config", 'a value of the wrong type (`data.augment_shift=1.5`)',
          cmd("data.augment_shift=1.5"), FAILED, ('data.augment_shift=1.5 is not a valid int',),
          ('e.g. data.augment_shift=2',), nothing_written),
    Fault("config-range-seed-huge", "config", 'an out-of-range value (`seed=123456789012345678901`)',
          cmd("seed=123456789012345678901"), FAILED, ('seed=123456789012345678901 is out of range',),
          ('e.g. seed=0',), nothing_written),
    Fault("config-range-seed-negative", "config", 'an out-of-range value (`seed=-1`)',
          cmd("seed=-1"), FAILED, ('seed=-1 is out of range',),
          ('e.g. seed=0',), nothing_written),
    Fault("config-range-num-workers", "config", 'an out-of-range value (`data.num_workers=-1`)',
          cmd("data.num_workers=-1"), FAILED, ('data.num_workers=-1 is out of range',),
          ('0 (load in the main process) or more',), nothing_written),
    Fault("config-range-val-batch", "config", 'an out-of-range value (`data.val_batch_size=-1`)',
          cmd("data.val_batch_size=-1"), FAILED, ('data.val_batch_size=-1 is out of range',),
          ('or null for data.batch_size',), nothing_written),
    Fault("config-range-image-size-zero", "config", 'an out-of-range value (`data.image_size=0`)',
          cmd("data.image_size=0"), FAILED, ('data.image_size=0 is out of range',),
          ('a side length in pixels',), nothing_written),
    Fault("config-range-batch-zero", "config", 'an out-of-range value (`data.batch_size=0`)',
          cmd("data.batch_size=0"), FAILED, ('data.batch_size=0 is out of range',),
          ('a global batch of at least 1',), nothing_written),
    Fault("config-range-batch-negative", "config", 'an out-of-range value (`data.batch_size=-8`)',
          cmd("data.batch_size=-8"), FAILED, ('data.batch_size=-8 is out of range',),
          ('a global batch of at least 1',), nothing_written),
    Fault("config-range-weight-decay", "config", 'an out-of-range value (`optim.weight_decay=-0.1`)',
          cmd("optim.weight_decay=-0.1"), FAILED, ('optim.weight_decay=-0.1 is out of range',),
          ('0 (off) or a positive decay',), nothing_written),
    Fault("config-range-min-lr", "config", 'an out-of-range value (`sched.min_lr=-0.05`)',
          cmd("sched.min_lr=-0.05"), FAILED, ('sched.min_lr=-0.05 is out of range',),
          ('a negative lr is gradient ascent',), nothing_written),
    Fault("config-range-warmup-factor", "config", 'an out-of-range value (`sched.warmup_start_factor=-1`)',
          cmd("sched.warmup_start_factor=-1"), FAILED, ('sched.warmup_start_factor=-1 is out of range',),
          ('a fraction of optim.lr, 0 to 1',), nothing_written),
    Fault("config-range-warmup-epochs", "config", 'an out-of-range value (`sched.warmup_epochs=-1`)',
          cmd("sched.warmup_epochs=-1"), FAILED, ('sched.warmup_epochs=-1 is out of range',),
          ('0 (no warm-up)',), nothing_written),
    Fault("config-range-label-smoothing", "config", 'an out-of-range value (`loss.label_smoothing=1.5`)',
          cmd("loss.label_smoothing=1.5"), FAILED, ('loss.label_smoothing=1.5 is out of range',),
          ('0 (off) to below 1',), nothing_written),
    Fault("config-range-momentum-range", "config", 'an out-of-range value (`optim.momentum=1.5`)',
          cmd("optim.momentum=1.5"), FAILED, ('optim.momentum=1.5 is out of range',),
          ('0 to below 1',), nothing_written),
    Fault("config-range-augment", "config", 'an out-of-range value (`data.augment_shift=-2`)',
          cmd("data.augment_shift=-2"), FAILED, ('data.augment_shift=-2 is out of range',),
          ('no setting of fst takes a negative value',), nothing_written),
    Fault("config-range-val-fraction", "config", 'an out-of-range value (`data.val_fraction=1.5`)',
          cmd("data.val_fraction=1.5"), FAILED, ('data.val_fraction=1.5 is out of range',),
          ('a share between 0 and 1',), nothing_written),
    Fault("config-range-width-zero", "config", 'an out-of-range value (`model.width=0`)',
          cmd("model.width=0"), FAILED, ('model.width=0 is out of range',),
          ('channels of the first stage',), nothing_written),
    Fault("config-range-num-classes", "config", 'an out-of-range value (`data.num_classes=1`)',
          cmd("data.num_classes=1"), FAILED, ('data.num_classes=1 is out of range',),
          ('at least 2 classes',), nothing_written),
    Fault("config-range-threads", "config", 'an out-of-range value (`trainer.num_threads=-2`)',
          cmd("trainer.num_threads=-2"), FAILED, ('trainer.num_threads=-2 is out of range',),
          ('0 or null: automatic',), nothing_written),
    Fault("config-range-max-skips", "config", 'an out-of-range value (`trainer.max_nonfinite_skips=-1`)',
          cmd("trainer.max_nonfinite_skips=-1"), FAILED, ('trainer.max_nonfinite_skips=-1 is out of range',),
          ('pass trainer.max_nonfinite_skips=<a value in that range>',), nothing_written),
    Fault("config-range-clip-inf", "config", 'an out-of-range value (`trainer.grad_clip_norm=inf`)',
          cmd("trainer.grad_clip_norm=inf"), FAILED, ('trainer.grad_clip_norm=inf is out of range',),
          ('no setting of fst takes a negative value',), nothing_written),
    Fault("config-range-lr-nan", "config", 'an out-of-range value (`optim.lr=nan`)',
          cmd("optim.lr=nan"), FAILED, ('optim.lr=nan',),
          ('use a positive lr',), nothing_written),
    Fault("config-range-betas", "config", 'AdamW betas out of range (`optim.betas=[0.9,1.5]`)',
          cmd("optim=adamw", "optim.betas=[0.9,1.5]"), FAILED, ('optim.betas=[0.9, 1.5] is out of range',),
          ('two numbers 0 to below 1',), nothing_written),
    Fault("config-range-gamma", "config", 'a step schedule with `sched.gamma=0`',
          cmd("sched=step", "sched.gamma=0"), FAILED, ('sched.gamma=0 is out of range',),
          ('a factor 0 < gamma <= 1',), nothing_written),
    Fault("config-range-milestones", "config", 'fractional milestones (`sched.milestones=[1.5]`)',
          cmd("sched=step", "sched.milestones=[1.5]"), FAILED, ('sched.milestones=[1.5] is out of range',),
          ('epoch numbers >= 0',), nothing_written),
    Fault("config-range-rotate", "config", 'a negative augmentation parameter (`data.rotate_deg=-3`)',
          cmd("data=digits_hard", "data.rotate_deg=-3"), FAILED, ('data.rotate_deg=-3 is out of range',),
          ('no setting of fst takes a negative value',), nothing_written),
    Fault("config-range-drop-path", "config", '`model.drop_path_rate=1.5` (ViT)',
          cmd("model=vit", "model.drop_path_rate=1.5", base=RUN), FAILED, ('model.drop_path_rate=1.5 is out of range',),
          ('a probability 0 to below 1',), nothing_written),
    Fault("config-range-in-run", "config", 'an out-of-range value in a run (`loss.label_smoothing=1.5`)',
          train("loss.label_smoothing=1.5"), FAILED, ('loss.label_smoothing=1.5 is out of range',),
          ('0 (off) to below 1',), nothing_written),
    Fault("config-range-decay-run", "config", 'a negative weight decay in a run',
          train("optim.weight_decay=-0.1"), FAILED, ('optim.weight_decay=-0.1 is out of range',),
          ('0 (off) or a positive decay',), nothing_written),
    Fault("env-fst-threads-negative", "config", '`FST_NUM_THREADS=-1` in the environment',
          cmd(env_vars={"FST_NUM_THREADS": "-1"}), FAILED, ("FST_NUM_THREADS='-1' must be >= 0",),
          ('fix or unset it',), nothing_written),
    Fault("env-fst-threads-abc", "config", '`FST_NUM_THREADS=abc` in the environment',
          cmd(env_vars={"FST_NUM_THREADS": "abc"}), FAILED, ("FST_NUM_THREADS='abc' is not a thread count",),
          ('fix or unset it',), nothing_written),
    Fault("env-omp-threads-abc", "config", '`OMP_NUM_THREADS=abc` in the environment',
          cmd(env_vars={"OMP_NUM_THREADS": "abc"}), FAILED, ("OMP_NUM_THREADS='abc' is not a thread count",),
          ('fix or unset it',), nothing_written),
    Fault("env-stray-world-size", "config", '`WORLD_SIZE=2` in the environment',
          cmd(env_vars={"WORLD_SIZE": "2"}), FAILED, ('WORLD_SIZE=2 is set but this process was not started by torchrun',),
          ('unset WORLD_SIZE',), nothing_written),
    Fault("config-grammar-unicode", "config", 'a non-ASCII value unquoted (`name=é`)',
          cmd("name=é"), FAILED, ("cannot parse the override 'name=é'",),
          ('quote the value',), nothing_written),
    Fault("config-grammar-tilde", "config", '`~` unquoted (`output_root=~/runs`)',
          cmd("output_root=~/runs"), FAILED, ("cannot parse the override 'output_root=~/runs'",),
          ('quote the value',), nothing_written),
    Fault("path-output-root-tilde", "config", "`output_root='~/runs'` (not expanded)",
          cmd("output_root='~/runs'"), FAILED, ("'~' is not expanded in output_root",),
          ('write output_root=$HOME/runs',), nothing_written),
    Fault("path-name-dotdot", "config", '`name=../../x` (outside `output_root`)',
          cmd("name=../../x"), FAILED, ("name='../../x' would write outside output_root",),
          ("a run name is a relative path without '..'",), nothing_written),
    Fault("path-name-absolute", "config", 'an absolute `name=/tmp/x`',
          cmd("name=/tmp/x"), FAILED, ("name='/tmp/x' would write outside output_root",),
          ('e.g. name=my_run',), nothing_written),
    Fault("path-name-too-long", "config", 'a 300-character `name`',
          cmd("name=" + "a" * 300), FAILED, ('has a component of 300 bytes',),
          ('use a shorter name=',), nothing_written),
    Fault("path-output-root-file", "config", '`output_root` is a file',
          _output_root_is(_a_file), FAILED, ('is a file, not a directory',),
          ('choose another output_root=',), nothing_written),
    Fault("path-output-root-dangling", "config", '`output_root` is a broken symbolic link',
          _output_root_is(_dangling), FAILED, ('is a broken symbolic link',),
          ('create the target or choose another output_root=',), nothing_written),
    Fault("path-output-root-unwritable", "config", '`output_root` where no directory can be made (`/proc/x`)',
          cmd("output_root=/proc/fst_runs"), FAILED, ('cannot create a directory in /proc',),
          ('choose a writable output_root=',), nothing_written),
    Fault("path-disk-full", "disk", 'the disk under `output_root` is full at launch',
          _full_disk, FAILED, ('the disk holding',),
          ('free space there or choose another output_root=',), nothing_written),
    Fault("config-interpolation", "config", 'an interpolation to a missing key (`name=${nope}`)',
          cmd("name=${nope}"), FAILED, ('invalid config:',),
          ("Interpolation key 'nope' not found",), nothing_written),
    Fault("config-unknown-option-model", "config", 'an unknown model option (`model=resnet19`)',
          cmd("model=resnet19"), FAILED, ("Could not find 'model/resnet19'",),
          ("Available options in 'model'", 'resnet18'), nothing_written),
    Fault("config-unknown-option-data", "config", 'an unknown data option (`data=imagenet1k`)',
          cmd("data=imagenet1k"), FAILED, ("Could not find 'data/imagenet1k'",),
          ("Available options in 'data'", 'imagenet'), nothing_written),
    Fault("config-exclude-no-match", "config", '`sparsity.exclude` matching no layer',
          train("sparsity.exclude=[nope]"), FAILED, ('match no Conv2d/Linear of the model',),
          ('fix the patterns',), nothing_written),
    Fault("config-pretrained-text", "config", '`model.pretrained=` a text file',
          _text_weights, FAILED, ('is not a file written by torch.save',),
          ('torch.save(model.state_dict(), PATH)',), nothing_written),
    Fault("eval-export-over-best", "eval", '`export=RUN/checkpoints/best.pt` (would replace the checkpoint)',
          _eval_refused(export=_in_ckpts("best.pt")), FAILED, ("inside a run's checkpoints/ folder",),
          ("eval.py never writes over a training run's files",), None),
    Fault("eval-export-into-ckpts", "eval", "`export=` a new file in a run's `checkpoints/`",
          _eval_refused(export=_in_ckpts("deploy.pt")), FAILED, ("inside a run's checkpoints/ folder",),
          ('Write elsewhere',), None),
    Fault("eval-output-over-summary", "eval", '`output=RUN/summary.json`',
          _eval_refused(output=lambda env: env.earlier / "summary.json"), FAILED, ("it is the run's own summary.json",),
          ('Write elsewhere',), None),
    Fault("eval-output-over-metrics", "eval", '`output=RUN/metrics.jsonl`',
          _eval_refused(output=lambda env: env.earlier / "metrics.jsonl"), FAILED, ("it is the run's own metrics.jsonl",),
          ('Write elsewhere',), None),
    Fault("eval-export-over-train-ckpt", "eval", '`export=` a copy of a training checkpoint',
          _eval_refused(export=lambda env: env.checkpoint_copy()), FAILED, ('it is a training checkpoint',),
          ('Write elsewhere',), None),
    Fault("eval-same-second", "eval", 'two evaluations started in the same second',
          _eval_twice, OK, ('val/top1',),
          ('output:',), _two_metrics),
    Fault("eval-nan-weights", "eval", '`weights=` an export holding a NaN',
          _nan_export, FAILED, ('holds non-finite values (NaN/Inf) in 1 tensor(s)',),
          ('export the weights again',), None),
    Fault("eval-damaged-best", "eval", 'a damaged `best.pt` (falls back to `last.pt`)',
          _eval_damaged_best, OK, ('skipping checkpoint',),
          ('checkpoint:', 'last.pt'), None),
    Fault("eval-train-ckpt-as-weights", "eval", 'a training checkpoint given as `weights=`',
          lambda env: env.eval(f"checkpoint={env.earlier}", f"weights={env.earlier / 'checkpoints' / 'last.pt'}"), FAILED, ('is a training checkpoint (dense W by design',),
          ('evaluate it with checkpoint=',), None),
    Fault("eval-cuda-without-gpu", "eval", '`eval.py device=cuda` without a GPU',
          lambda env: env.eval(f"checkpoint={env.earlier}", "device=cuda"), FAILED, ('CUDA is not available',),
          ('use trainer.device=cpu',), None, marks=("skip_if_cuda",)),
    Fault("eval-sparse24-without-gpu", "eval", '`eval.py backend=sparse24` without a GPU',
          lambda env: env.eval(f"checkpoint={env.earlier}", "backend=sparse24", "device=cpu"), FAILED, ('runs only on CUDA GPUs',),
          ('use backend=native',), None, marks=("skip_if_cuda",)),
    Fault("signal-sighup", "signal", 'SIGHUP mid-epoch (the ssh session closed)',
          train("trainer.debug_signal_at_step=1", "trainer.debug_signal=SIGHUP"), PREEMPTED, ('received SIGHUP', 'checkpoint written, exiting with status 75'),
          ('resume=auto',), _checkpointed(1)),
    Fault("signal-startup-sigterm", "signal", 'SIGTERM during start-up (e.g. scanning a large ImageFolder)',
          _startup_signal("SIGTERM"), PREEMPTED, ('received SIGTERM before training started',),
          ('run the same command again',), nothing_written),
    Fault("signal-startup-sigusr1", "signal", 'SIGUSR1 during start-up (e.g. scanning a large ImageFolder)',
          _startup_signal("SIGUSR1"), PREEMPTED, ('received SIGUSR1 before training started',),
          ('run the same command again',), nothing_written),
    Fault("signal-startup-sighup", "signal", 'SIGHUP during start-up (e.g. scanning a large ImageFolder)',
          _startup_signal("SIGHUP"), PREEMPTED, ('received SIGHUP before training started',),
          ('run the same command again',), nothing_written),
    Fault("signal-startup-sigint", "signal", 'Ctrl-C during start-up',
          _startup_signal("SIGINT"), INTERRUPTED, ('received SIGINT before training started',),
          ('run the same command again',), nothing_written),
    Fault("signal-sigterm-at-import", "signal", 'SIGTERM while train.py imports (first second)',
          _sigterm_at_import, PREEMPTED, ('while starting; exiting with 75',),
          ('exiting with 75',), nothing_written, slow=True),
    Fault("resume-record-kept", "resume", 'resumed twice from one step with different lr (`config_resolved.step<N>.yaml`)',
          _resume_kept_record, OK, ('applying changed settings',),
          ('resumed from',), _record_kept),
    Fault("resume-extend-preempted", "resume", 'a finished run extended (`trainer.epochs=2`) and preempted',
          _extend_preempted, PREEMPTED, ('received SIGTERM',),
          ('resume=auto',), _summary_not_stale),
    Fault("resume-auto-clock-behind", "resume", '`resume=auto` with a newer-named but older run (clock behind)',
          _clock_behind, OK, ('resumed from',),
          ('resumed from',), _resumed_newest),
    Fault("resume-other-data", "resume", '`resume=auto` with `data.root` at other data, same classes',
          _other_data, FAILED, ("holds other train data than the checkpoint's run",),
          ('point data.root at the data the run was trained on',), None),
    Fault("data-order-seed-epoch", "data", 'seed 0 epoch 1 ordered as seed 1 epoch 0 (correlated seeds)',
          _orders_differ, OK, ('9 distinct orders of 9',),
          ('SeedSequence',), None),
    Fault("data-hidden-folder", "data", "a hidden folder with images beside the class folders",
          _hidden_folder, OK, ("ignoring hidden folder(s) .ipynb_checkpoints",),
          ("rename without the leading dot to make one a class",), _twelve_samples),
    Fault("data-symlink-loop", "data", "a symbolic link loop inside a class folder",
          _symlink_loop, OK, ("reached again through symbolic links",),
          ("each image counts once",), _twelve_samples),
    Fault("data-decompression-bomb", "data", "a decompression-bomb-sized image (`on_error=skip`)",
          _bomb, OK, ("skipping unreadable image", "bomb.png"),
          ("unreadable_images_skipped",)),
    Fault("data-coco-missing-image", "data", "a COCO annotation naming an image missing on disk",
          _coco(_add_missing_image), FAILED,
          ("names 1 image(s) missing from", "2.jpg, image id 2"),
          ("restore those files, or remove their entries",), nothing_written),
    Fault("config-pretrained-nan", "config", "`model.pretrained=` weights holding NaN",
          _nan_pretrained, FAILED, ("holds non-finite values (NaN/Inf) in 1 tensor(s)",),
          ("these weights are broken",), nothing_written),
    Fault("ckpt-last-is-dir", "checkpoint", "`checkpoints/last.pt` is a directory",
          _last_is_dir, FAILED, ("last.pt: it is not a file", "a directory of that name is in the way"),
          ("move or remove that directory",)),
    Fault("ckpt-old-missing-keys", "checkpoint", "an old checkpoint missing newer entries",
          _resume_with(_old_checkpoint), FAILED, ("lacks 'progress', 'scaler'",),
          ("resume=null model.pretrained=",), nothing_written),
    Fault("data-non-utf8-name", "data", "an unreadable image whose name is not valid UTF-8",
          _non_utf8_name, OK, ("skipping unreadable image",),
          ("unreadable_images_skipped",), _skip_in_train_log),
    Fault("config-cli-misspelt-data-key", "config", "a misspelt data key, real command (train.py `data.imagesize=16`)",
          lambda env: env.train_cli("data.imagesize=16"), FAILED,
          ("unknown config key data.imagesize",), ("did you mean data.image_size?",), _one_line,
          slow=True),
    Fault("config-cli-out-of-range", "config", "an out-of-range value, real command (train.py `sched.min_lr=-0.05`)",
          lambda env: env.train_cli("sched.min_lr=-0.05"), FAILED,
          ("sched.min_lr=-0.05 is out of range",), ("a negative lr is gradient ascent",),
          _one_line, slow=True),
    Fault("eval-cli-export-over-best", "eval", "eval.py, real command, `export=RUN/checkpoints/best.pt`",
          lambda env: env.cli("eval.py", f"checkpoint={env.earlier}", f"output_root={env.out}",
                              f"export={env.earlier / 'checkpoints' / 'best.pt'}"), FAILED,
          ("inside a run's checkpoints/ folder",), ("eval.py never writes over",), _one_line,
          slow=True),
    Fault("disk-run-dir-deleted", "disk", "the run directory deleted while the run writes it",
          _run_dir_deleted, FAILED, ("no longer exists (the run directory was deleted or moved",),
          ("start the run again",)),
]
# fmt: on


AREAS = ("config", "data", "checkpoint", "resume", "signal", "disk", "concurrency", "wandb",
         "ddp", "divergence", "eval")  # fmt: skip


def markdown_table() -> str:
    """The README's table: one row per fault (cause -> message -> fix)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = [
        "| area | cause | exit | fst says (excerpt) | fix it names |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in FAULTS:
        rows.append(
            f"| {f.area} | {cell(f.cause)} | {f.status} | `{cell(f.message[0])}` | "
            f"`{cell(f.fix[0])}` |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
