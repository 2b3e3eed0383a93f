"""CPU threads: how many torch should use, and running small work on one thread.

torch's default thread count is the machine's core count. In a container limited by a cgroup
CPU quota (``docker --cpus=2`` on a 64-core host, Kubernetes CPU limits, SLURM cgroups) or a
process pinned to fewer cores (``taskset``, ``numactl``, SLURM ``--cpus-per-task``) that
oversubscribes the cores this process may use, and every parallel op then waits at an OpenMP
barrier for threads that have no core to run on.

:func:`num_threads` picks the count, first match wins:

1. an explicit value (``trainer.num_threads`` / ``num_threads`` in eval.py, ``--threads`` in
   the scripts; ``null``/0/"auto" mean: not given);
2. the environment variable ``FST_NUM_THREADS``;
3. ``OMP_NUM_THREADS`` (torch already applied it; respected so that torchrun's default of 1
   per process, and a user's own setting, keep working);
4. :func:`available_cpus` (the cores this process may use: CPU affinity and the cgroup CPU
   quota), less the cores that other processes keep busy (:func:`busy_cpus`, sampled from
   ``/proc/stat`` for 0.2 s at start-up), divided among the processes of this node
   (``LOCAL_WORLD_SIZE``, set by torchrun).

Why step 4 leaves out busy cores: a thread on a core that another process already saturates
runs about half the time, and every parallel op waits at a barrier for it. On the 2-core
development machine, with a ``while True: pass`` process on one core, a dense ResNet-18
training step (batch 32, 224 px) took 6.5-6.7 s on two threads against 5.5-6.4 s on one, and
fst's ratio to dense was 0.91-0.93 against 0.80-0.93 (median 0.88; results/bench_step_cpu.md). The count is taken once, at start-up (a run does not follow later load);
give it explicitly (1.-3.) to use every core whatever the load.

:func:`configure_threads` applies it (train.py, eval.py and the scripts call it at start-up).

:func:`work_threads` runs a block on as few threads as its size merits. fst's mask work (S(W),
S(W^T) of a weight) is a handful of element-wise ops over tensors of at most a few million
entries: split across all threads, each op pays one barrier, and while another process holds
one of the cores a barrier costs milliseconds instead of microseconds (``bench_step.py`` saw the
mask share of a ResNet-18 step swing between 2% and 79%). On one thread the same work costs
what it costs, whatever the load.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)

ENV = "FST_NUM_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
BUSY_SAMPLE_S = 0.2


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cgroup_dirs(controller: str | None) -> list[Path]:
    """Candidate cgroup directories of this process: its own path, then the mount root.

    ``controller`` None: cgroup v2 (line ``0::/path``); else the v1 hierarchy listing it.
    Inside a container the process's cgroup is usually mounted at the root itself.
    """
    dirs = []
    for line in (_read(PROC_CGROUP) or "").splitlines():
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controller is None and hid == "0" and controllers == "":
            dirs.append(CGROUP_ROOT / path.lstrip("/"))
        elif controller is not None and controller in controllers.split(","):
            dirs.append(CGROUP_ROOT / controllers / path.lstrip("/"))
    if controller is None:
        dirs.append(CGROUP_ROOT)
    else:
        dirs += [CGROUP_ROOT / controller, CGROUP_ROOT / "cpu,cpuacct"]
    return dirs


def cgroup_cpu_limit() -> float | None:
    """CPUs allowed by the cgroup CPU quota (e.g. 1.5), or None when there is no quota.

    cgroup v2: ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``); cgroup v1:
    ``cpu.cfs_quota_us`` (-1: none) over ``cpu.cfs_period_us``.
    """
    for d in _cgroup_dirs(None):
        text = _read(d / "cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota == "max":
                return None
            try:
                return int(quota) / int(period or 100_000)
            except ValueError:
                return None
    for d in _cgroup_dirs("cpu"):
        quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
        if quota is not None and period:
            try:
                q, p = int(quota), int(period)
            except ValueError:
                return None
            return q / p if q > 0 and p > 0 else None
    return None


def affinity_cpus() -> int:
    """Cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def available_cpus() -> int:
    """Cores this process can use: its CPU affinity, capped by the cgroup quota (rounded up)."""
    n = affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit)))
    return max(1, n)


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """``{cpu: (total, idle)}`` clock ticks of ``cpus`` from ``/proc/stat`` ({} if unreadable).

    idle counts ``idle`` and ``iowait``; total the first eight fields (guest time is already
    inside user time).
    """
    out = {}
    for line in (_read(PROC_STAT) or "").splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        try:
            ticks = [int(f) for f in fields[:8]]
        except ValueError:
            continue
        if len(ticks) >= 5:
            out[int(name[3:])] = (sum(ticks), ticks[3] + ticks[4])
    return out


def busy_cpus(cpus: set[int] | None = None, interval: float | None = None) -> float:
    """How many of ``cpus`` (default: this process's affinity) other processes keep busy.

    The busy fraction of each core over ``interval`` seconds (default :data:`BUSY_SAMPLE_S`),
    summed: about 1.0 while another process spins on one core. The calling thread sleeps
    while it samples, so the busy time is other processes' (and this process's other threads',
    which at start-up are none). 0.0 where ``/proc/stat`` cannot be read.
    """
    if cpus is None:
        try:
            cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return 0.0
    before = _cpu_times(cpus)
    if not before:
        return 0.0
    time.sleep(BUSY_SAMPLE_S if interval is None else interval)
    after = _cpu_times(cpus)
    busy = 0.0
    for cpu, (total, idle) in after.items():
        if cpu in before:
            d_total, d_idle = total - before[cpu][0], idle - before[cpu][1]
            if d_total > 0:
                busy += min(1.0, max(0.0, 1.0 - d_idle / d_total))
    return busy


def _positive_int(value, source: str) -> int | None:
    """``value`` as a thread count; None for "not given" (None, "", 0, "auto")."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "auto")):
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{source}={value!r} is not a thread count; give a positive integer, or "
            "0/auto to use the cores this process may use"
        ) from None
    if n < 0:
        raise ValueError(f"{source}={value!r} must be >= 0 (0: automatic)")
    return n or None


def num_threads(requested=None, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """``(threads, reason)`` following the order in the module docstring."""
    env = os.environ if env is None else env
    n = _positive_int(requested, "num_threads")
    if n:
        return n, "requested"
    n = _positive_int(env.get(ENV), ENV)
    if n:
        return n, ENV
    n = _positive_int(env.get("OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    if n:
        return n, "OMP_NUM_THREADS"
    cpus = available_cpus()
    local = _positive_int(env.get("LOCAL_WORLD_SIZE"), "LOCAL_WORLD_SIZE") or 1
    busy = int(busy_cpus() + 0.5) if cpus > 1 and local == 1 else 0
    free = max(1, cpus - busy)
    n = max(1, free // local)
    reason = f"{cpus} usable core(s)"
    if busy:
        reason += f", {busy} kept busy by other processes"
    if local > 1:
        reason += f" / {local} local processes"
    return n, reason


def configure_threads(requested=None) -> int:
    """Set torch's intra-op thread count from :func:`num_threads`; returns it."""
    n, reason = num_threads(requested)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    log.info("torch CPU threads: %d (%s)", n, reason)
    return n


# Element-wise work gets one thread per this many entries (at least one, at most all): a few
# milliseconds of work per thread, which a barrier stall on a busy core cannot dominate.
WORK_PER_THREAD = 1 << 22


def threads_for(numel: int) -> int:
    """Threads for element-wise work over ``numel`` entries (see :data:`WORK_PER_THREAD`)."""
    return max(1, min(torch.get_num_threads(), numel // WORK_PER_THREAD))


@contextmanager
def work_threads(numel: int):
    """Run the block with :func:`threads_for` ``(numel)`` torch threads, then restore the count.

    For fst's eager CPU element-wise work: the masks of a weight (a few million entries: one
    thread), the SR-STE decay, the IR half of dY (one thread up to about 8M entries). Not for
    code that ``torch.compile`` traces (dynamo cannot trace ``torch.set_num_threads``, and the
    compiled work is fused into a few kernels anyway): callers skip it when
    ``torch.compiler.is_compiling()``.
    """
    n = torch.get_num_threads()
    k = threads_for(numel)
    if k == n:
        yield
        return
    torch.set_num_threads(k)
    try:
        yield
    finally:
        torch.set_num_threads(n)
