"""Run directories: a run owns its directory; nothing of another run is ever overwritten.

``claim(path)`` takes an exclusive lock on ``<path>/.lock`` (``fcntl.flock``, non-blocking; the
OS releases it when the process ends, however it ends) and holds it for the whole run; a run that
ends normally (finished, failed with an error, preempted, Ctrl-C) removes the file again (a
killed one leaves it, unlocked and harmless):

* a **new run** whose directory is locked by a live run, or already holds a run's results
  (``metrics.jsonl``, ``summary.json``, ``checkpoints/``, ``config_resolved.yaml``), gets the
  next free sibling ``<path>_2``, ``<path>_3``, ... and says so (several runs started in the same
  second with the same name, or a reused ``hydra.run.dir``);
* a **resumed run** continues in its own directory; if a live process holds that directory the
  resume fails naming the process (two writers would interleave one run's files).

While it holds the lock a run removes the temporary files a killed writer left there
(``fst.engine.checkpoint.remove_stale_tmp``). ``RunDir.discard`` removes a directory this launch
created when the run fails before training started, so failed launches leave no empty run dirs.
Only rank 0 of a multi-process run claims; the other ranks write nothing.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from fst.engine.checkpoint import CHECKPOINT_DIRNAME, remove_stale_tmp
from fst.types import FstError

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
#: Files whose presence means a directory holds (part of) a run.
RESULT_NAMES = (
    "metrics.jsonl",
    "summary.json",
    "config_resolved.yaml",
    CHECKPOINT_DIRNAME,
    "eval_metrics.json",  # an eval.py directory
)
#: What a launch writes before its first training step (removed again by ``discard``).
SETUP_NAMES = (LOCK_NAME, ".hydra", "train.log", "config_resolved.yaml")


class RunDirBusy(FstError):
    """The run directory to continue is being written by another live process."""


def holds_run(path: Path) -> list[str]:
    """The result files of a run found in ``path`` (empty: no run there)."""
    return [n for n in RESULT_NAMES if (path / n).exists()]


def lock_owner(path: Path) -> str:
    """Who holds ``path``'s lock, as recorded in the lock file (best effort)."""
    try:
        text = (path / LOCK_NAME).read_text().strip()
    except OSError:
        text = ""
    return text or "another process"


@dataclass
class RunDir:
    """A claimed run directory. ``created``: this launch made it (or found it empty)."""

    path: Path
    created: bool
    _fd: int | None = None
    #: ``discard`` also removes empty parents up to here (the output root).
    stop_at: Path | None = None

    def release(self) -> None:
        """Remove the lock file and give up the lock: a finished (or stopped) run leaves no
        ``.lock``. The file is unlinked while still locked; a claimer that opened it meanwhile
        sees that its descriptor no longer names ``<path>/.lock`` and retries (``_try_lock``)."""
        if self._fd is not None:
            try:
                with contextlib.suppress(OSError):
                    if _same_file(self._fd, self.path / LOCK_NAME):
                        (self.path / LOCK_NAME).unlink()
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
            self._fd = None

    def discard(self) -> bool:
        """Release, and remove the directory if this launch created it and it holds nothing
        but what setup wrote (the run failed before training). Returns True if removed."""
        self.release()
        if not self.created or not self.path.is_dir():
            return False
        extra = [p.name for p in self.path.iterdir() if p.name not in SETUP_NAMES]
        if extra:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        remove_if_empty(self.path.parent, stop_at=self.stop_at)
        return True

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def remove_if_empty(path: Path | None, stop_at: str | os.PathLike | None = None) -> bool:
    """``rmdir`` ``path`` if it exists and is empty (a directory Hydra made for a launch that
    ended up writing elsewhere or failed), then its parents while they are empty and below
    ``stop_at`` (the output root). Returns True if ``path`` was removed."""
    if path is None:
        return False
    path = Path(path).resolve()
    try:
        path.rmdir()
    except OSError:
        return False
    stop = Path(stop_at).resolve() if stop_at is not None else None
    parent = path.parent
    while stop is not None and stop in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether the open ``fd`` is the file now at ``path`` (not one unlinked meanwhile)."""
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _try_lock(path: Path) -> int | None:
    """A locked descriptor of ``path/.lock``, or None when a live process holds it."""
    while True:
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        if _same_file(fd, path / LOCK_NAME):
            return fd
        os.close(fd)  # the holder removed the file between our open and flock: take the new one


def _write_owner(fd: int) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    info = f"process {os.getpid()} on {socket.gethostname()} (since {stamp})\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)


def _candidates(path: Path, limit: int = 1000):
    yield path
    for i in range(2, limit):
        yield path.with_name(f"{path.name}_{i}")


def claim(path: str | os.PathLike, *, resume: bool = False) -> RunDir:
    """Lock ``path`` (or, for a new run, the next free sibling) for this process.

    ``resume=True``: the directory holds the run being continued; a live holder is an error.
    ``resume=False``: a new run; a directory that is locked or already holds results is skipped
    (with a warning naming the directory used instead).
    """
    path = Path(path)
    why = ""
    for cand in _candidates(path):
        existed = cand.is_dir() and any(cand.iterdir())
        try:
            try:
                cand.mkdir(parents=True, exist_ok=True)
                fd = _try_lock(cand)
            except FileNotFoundError:  # a failed launch removed an empty parent meanwhile
                cand.mkdir(parents=True, exist_ok=True)
                fd = _try_lock(cand)
        except OSError as e:
            raise FstError(
                f"cannot create or lock the run directory {cand}: {e.strerror or e}; choose a "
                "writable location with output_root=... (or hydra.run.dir=...)"
            ) from None
        if fd is None:
            reason = f"in use by {lock_owner(cand)}"
            if resume:
                raise RunDirBusy(
                    f"run directory {cand} is {reason}: two processes would write the same run. "
                    "Wait for it to finish (or stop it), or start a new run without resume="
                )
        else:
            results = holds_run(cand)
            if resume or not results:
                _write_owner(fd)
                if cand != path:
                    log.warning("run directory %s is %s; this run writes to %s", path, why, cand)
                remove_stale_tmp(cand)
                return RunDir(cand, created=not existed, _fd=fd)
            os.close(fd)
            reason = f"holds an earlier run ({', '.join(results)})"
        if cand == path:
            why = reason
    raise FstError(f"no free run directory next to {path}; clean up {path.parent}")
