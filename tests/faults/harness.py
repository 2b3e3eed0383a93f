"""The harness of the fault suite: a tiny run setup, an earlier result to protect, and runners.

Every fault runs next to an *earlier result*: a finished run of the same name and seed
(``output_root/fault/seed0/2000-01-01_00-00-00``, copied fresh for each fault), the run a bad
command is most likely to clobber (``resume=auto`` finds it; a new run could collide with it).
After the fault, every one of its files must still hold the same bytes.

Runs happen in-process (``fst.engine.cli.exit_status``, the same function ``train.py`` uses to
turn failures into an exit status and one message) unless a process boundary matters (signals
from outside, concurrent processes, DDP, Hydra's own composition errors); those run
``train.py``/``eval.py`` as subprocesses.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.conftest import ROOT, compose, subprocess_env

NAME = "fault"
EARLIER = Path(NAME) / "seed0" / "2000-01-01_00-00-00"
# ResNet-18 at width 8 on 16 px digits, 2 steps of 8 images, 1 validation batch: ~1 s a run.
# RUN holds what every fault shares (detection faults swap model and data groups).
RUN = (
    "logger=none",
    "trainer.device=cpu",
    "trainer.precision=32",
    "trainer.progress_bar=false",
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    f"name={NAME}",
)
TINY = (*RUN, "model.width=8", "data.image_size=16", "data.batch_size=8", "data.val_batch_size=8")


@dataclass
class Result:
    status: int
    text: str  # everything the user saw: stderr/stdout and the log

    def __str__(self) -> str:
        return f"exit status {self.status}\n{self.text[-4000:]}"


def digest(run_dir: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every file of a run (the lock file's owner note excluded)."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


class Env:
    """One fault's sandbox: ``out`` (the output root) holding ``earlier`` (a finished run)."""

    def __init__(self, tmp: Path, template: Path, capsys, caplog):
        self.tmp, self.capsys, self.caplog = tmp, capsys, caplog
        self.out = tmp / "outputs"
        self.earlier = self.out / EARLIER
        shutil.copytree(template, self.earlier)
        self.before = digest(self.earlier)

    # ------------------------------------------------------------------ runs
    def cfg(self, *overrides: str, config_name: str = "config", base=TINY):
        if config_name == "eval":
            return compose([*overrides, f"output_root={self.out}"], config_name="eval")
        return compose([*base, f"output_root={self.out}", *overrides])

    def call(self, fn, *args, **kwargs) -> Result:
        """In-process: ``fn(*args)`` through ``exit_status``, capturing what the user sees."""
        from fst.engine.cli import exit_status

        torch.set_num_threads(1)
        self.capsys.readouterr()
        self.caplog.clear()
        with self.caplog.at_level(logging.INFO):
            status, _ = exit_status(fn, *args, **kwargs)
        captured = self.capsys.readouterr()
        return Result(status, captured.err + captured.out + self.caplog.text)

    def train(self, *overrides: str, run_dir: Path | None = None, base=TINY) -> Result:
        from fst.engine.training import train

        try:
            cfg = self.cfg(*overrides, base=base)
        except Exception as e:  # Hydra refuses the override itself (exit status 1 in train.py)
            return Result(1, f"{type(e).__name__}: {e}")
        return self.call(train, cfg, run_dir=run_dir)

    def eval(self, *overrides: str) -> Result:
        from fst.engine.evaluation import run_eval

        cfg = self.cfg(*overrides, config_name="eval")
        return self.call(run_eval, cfg, out_dir=self.tmp / "eval")

    def popen(self, *args: str, prefix=(sys.executable,), env=None) -> subprocess.Popen:
        full = dict(subprocess_env())
        for k, v in (env or {}).items():  # None: remove the variable
            full.pop(k, None) if v is None else full.__setitem__(k, v)
        return subprocess.Popen(
            [*prefix, *args],
            cwd=ROOT,
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def cli(self, *args: str, prefix=(sys.executable,), env=None, timeout: float = 300) -> Result:
        proc = self.popen(*args, prefix=prefix, env=env)
        out, _ = proc.communicate(timeout=timeout)
        return Result(proc.returncode, out)

    def train_cli(self, *overrides: str, **kw) -> Result:
        return self.cli("train.py", *TINY, f"output_root={self.out}", *overrides, **kw)

    # ------------------------------------------------------------------ inspection
    def runs(self) -> list[Path]:
        """Run directories under the output root other than the earlier one."""
        found = {p.parent for p in self.out.rglob("summary.json")}
        found |= {p.parent.parent for p in self.out.rglob("checkpoints/last.pt")}
        found |= {p.parent for p in self.out.rglob("metrics.jsonl")}
        return sorted(p for p in found if p != self.earlier)

    def new_paths(self) -> list[Path]:
        """Everything under the output root that is neither the earlier run nor on its path."""
        keep = {self.earlier, *self.earlier.parents}
        return sorted(
            p for p in self.out.rglob("*") if p not in keep and self.earlier not in p.parents
        )

    def checkpoint_copy(self, name: str = "last.pt") -> Path:
        dst = self.tmp / f"copy_{name}"
        shutil.copy(self.earlier / "checkpoints" / name, dst)
        return dst


def wait_for_step(metrics: Path, step: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Block until ``metrics.jsonl`` logs optimizer step ``step`` (a signal then hits training)."""
    import json

    deadline = time.time() + timeout
    while True:
        if metrics.exists():
            for line in metrics.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) >= step and "train/loss" in line:
                        return
                except ValueError:
                    pass
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}:\n{proc.communicate()[0]}")
        assert time.time() < deadline, "training did not reach the step"
        time.sleep(0.05)


def build_template(root: Path) -> Path:
    """Train the earlier result once per session (every fault gets a copy)."""
    from fst.engine.training import train

    torch.set_num_threads(1)
    run_dir = root / EARLIER
    # keep_checkpoints=all: the .prev copies the resume fallback faults damage and fall back to.
    cfg = compose(
        [
            *TINY,
            f"output_root={root}",
            "trainer.checkpoint_every_n_steps=1",
            "trainer.keep_checkpoints=all",
        ]
    )
    train(cfg, run_dir=run_dir)
    assert (run_dir / "checkpoints" / "last.prev.pt").is_file()
    os.utime(run_dir / "checkpoints" / "best.pt", (1, 1))  # oldest: the last fallback
    return run_dir
