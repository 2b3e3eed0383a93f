"""fst.threads: the thread count from affinity, cgroup quotas (v1, v2) and overrides."""

from __future__ import annotations

import pytest
import torch

from fst import threads


@pytest.fixture
def fake_system(tmp_path, monkeypatch):
    """A fake /sys/fs/cgroup and /proc/self/cgroup under tmp_path; affinity of 8 cores."""
    root = tmp_path / "cgroup"
    root.mkdir()
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("0::/\n")
    monkeypatch.setattr(threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(threads, "PROC_CGROUP", proc)
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "no_proc_stat")  # no load seen
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    return root, proc


def test_no_quota_uses_the_affinity(fake_system):
    assert threads.cgroup_cpu_limit() is None
    assert threads.available_cpus() == 8


def test_cgroup_v2_quota_caps_and_rounds_up(fake_system):
    root, _ = fake_system
    (root / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs
    assert threads.cgroup_cpu_limit() == 2.5
    assert threads.available_cpus() == 3
    (root / "cpu.max").write_text("max 100000\n")
    assert threads.available_cpus() == 8


def test_cgroup_v2_nested_path_of_this_process(fake_system):
    root, proc = fake_system
    proc.write_text("0::/job/step\n")
    (root / "job" / "step").mkdir(parents=True)
    (root / "job" / "step" / "cpu.max").write_text("100000 100000\n")
    assert threads.available_cpus() == 1


def test_cgroup_v1_quota(fake_system):
    root, proc = fake_system
    proc.write_text("4:memory:/x\n3:cpu,cpuacct:/slurm/job1\n0::/\n")
    d = root / "cpu,cpuacct" / "slurm" / "job1"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("400000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit() == 4.0
    assert threads.available_cpus() == 4
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert threads.available_cpus() == 8


def test_affinity_smaller_than_quota(fake_system, monkeypatch):
    root, _ = fake_system
    (root / "cpu.max").write_text("1600000 100000\n")  # 16 CPUs of quota, 2 cores pinned
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads.available_cpus() == 2


def test_overrides_in_order(fake_system):
    assert threads.num_threads(None, env={}) == (8, "8 usable core(s)")
    assert threads.num_threads(None, env={"LOCAL_WORLD_SIZE": "4"})[0] == 2
    assert threads.num_threads(None, env={"OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")
    env = {"OMP_NUM_THREADS": "3", "FST_NUM_THREADS": "5"}
    assert threads.num_threads(None, env=env) == (5, "FST_NUM_THREADS")
    assert threads.num_threads(6, env=env) == (6, "requested")
    assert threads.num_threads("auto", env={})[0] == 8  # 0 / "auto" / None: automatic
    assert threads.num_threads(0, env={"FST_NUM_THREADS": "auto"})[0] == 8


def _stat(*cores) -> str:
    """A /proc/stat text: per core (user, idle) ticks; the aggregate line must be skipped."""
    lines = ["cpu  999 0 0 999 0 0 0 0 0 0"]
    lines += [f"cpu{i} {u} 0 0 {idle} 0 0 0 0 0 0" for i, (u, idle) in enumerate(cores)]
    return "\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n"


@pytest.fixture
def fake_stat(tmp_path, monkeypatch):
    """/proc/stat that moves from ``before`` to ``after`` while busy_cpus sleeps."""
    path = tmp_path / "stat"
    monkeypatch.setattr(threads, "PROC_STAT", path)

    def install(before: str, after: str):
        path.write_text(before)
        monkeypatch.setattr(threads.time, "sleep", lambda s: path.write_text(after))

    return install


def test_busy_cpus_counts_cores_other_processes_keep_busy(fake_stat):
    # core 0 idle, core 1 spinning, core 2 half busy; core 3 is outside the affinity
    fake_stat(_stat((0, 0), (0, 0), (0, 0), (0, 0)), _stat((0, 20), (20, 0), (10, 10), (20, 0)))
    assert threads.busy_cpus({0, 1, 2}) == pytest.approx(1.5)
    assert threads.busy_cpus({0}) == 0.0


def test_busy_cpus_without_proc_stat_is_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(threads, "PROC_STAT", tmp_path / "missing")
    assert threads.busy_cpus({0, 1}) == 0.0


def test_busy_cores_are_left_out_of_the_automatic_count(fake_system, fake_stat):
    idle = [(0, 0)] * 8
    fake_stat(_stat(*idle), _stat((20, 0), (20, 0), *[(0, 20)] * 6))  # two cores spinning
    assert threads.num_threads(None, env={}) == (
        6,
        "8 usable core(s), 2 kept busy by other processes",
    )
    # an explicit count, and torchrun's processes (they load each other's cores), ignore load
    assert threads.num_threads(None, env={"OMP_NUM_THREADS": "8"})[0] == 8
    assert threads.num_threads(None, env={"LOCAL_WORLD_SIZE": "2"})[0] == 4
    fake_stat(_stat(*idle), _stat(*[(20, 0)] * 8))  # every core busy: still one thread
    assert threads.num_threads(None, env={})[0] == 1


def test_bad_values_name_the_fix():
    with pytest.raises(ValueError, match="FST_NUM_THREADS='many' is not a thread count"):
        threads.num_threads(None, env={"FST_NUM_THREADS": "many"})
    with pytest.raises(ValueError, match="must be >= 0"):
        threads.num_threads(-2, env={})


def test_configure_threads_applies_it(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("FST_NUM_THREADS", "1")
    try:
        assert threads.configure_threads() == 1 and torch.get_num_threads() == 1
        assert threads.configure_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_work_threads_scope_by_size_and_restores_the_count(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.work_threads(1000):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.work_threads(2 * threads.WORK_PER_THREAD):  # large work: all threads
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), threads.work_threads(10):
            raise RuntimeError
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(torch, "get_num_threads", lambda: 16)
        assert threads.threads_for(3 * threads.WORK_PER_THREAD + 5) == 3
        assert threads.threads_for(10**12) == 16 and threads.threads_for(0) == 1
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
