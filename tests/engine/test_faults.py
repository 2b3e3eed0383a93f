"""Preemption signals and the non-finite guard (unit level; end to end: tests/faults/)."""

from __future__ import annotations

import math
import os
import signal
import threading

import pytest
import torch
from torch import nn

from fst.engine.faults import (
    PREEMPTED_EXIT_CODE,
    NonFiniteError,
    NonFiniteGuard,
    PreemptionHandler,
    check_finite,
    nonfinite_grads,
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_sets_flag_and_handlers_are_restored(sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with PreemptionHandler() as h:
        assert h.active and not h.requested
        os.kill(os.getpid(), sig)  # delivered to the main thread before kill() returns
        assert h.requested and h.signum == sig
        assert h.signal_name == signal.Signals(sig).name
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal keeps the first one's name
        assert h.signum == sig
    assert {s: signal.getsignal(s) for s in before} == before


def test_exit_preempted_exits_with_tempfail_status():
    assert PREEMPTED_EXIT_CODE == 75
    with PreemptionHandler() as h:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(SystemExit) as e:
            h.exit_preempted()
    assert e.value.code == PREEMPTED_EXIT_CODE
    assert not h.active


def test_exit_preempted_chains_to_displaced_handler():
    calls = []
    prev = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        with PreemptionHandler() as h:
            os.kill(os.getpid(), signal.SIGUSR1)
            assert calls == []  # not called while the step finishes
            with pytest.raises(SystemExit):
                h.exit_preempted()
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, prev)


def test_inert_outside_main_thread():
    result = {}

    def run():
        with PreemptionHandler() as h:
            result["active"] = h.active

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert result == {"active": False}


def test_synced_without_distributed_is_local_flag():
    h = PreemptionHandler()
    assert h.synced() is False
    h.requested = True
    assert h.synced() is True


def _net_with_grads(bad_layer: str | None = None, value: float = math.inf) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3))
    net.add_module("relu", nn.ReLU())
    net.add_module("conv2", nn.Conv2d(4, 4, 3))
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4, 2))
    if bad_layer is not None:
        # An overflow in bad_layer's backward: its grads and every grad before it go non-finite.
        def poison(module, grad_input, grad_output):
            return tuple(None if g is None else g * value for g in grad_input)

        getattr(net, bad_layer).register_full_backward_hook(poison)
        getattr(net, bad_layer).weight.register_hook(lambda g: g * value)
    out = net(torch.randn(2, 3, 8, 8))
    out.sum().backward()
    return net


def test_finite_passes():
    net = _net_with_grads()
    check_finite(torch.tensor(1.5), net, step=3)
    assert nonfinite_grads(net) == []


def test_nan_loss_names_step_and_checkpoint():
    net = _net_with_grads()
    with pytest.raises(NonFiniteError) as e:
        check_finite(
            torch.tensor(float("nan")), net, step=17, last_checkpoint="run/checkpoints/last.pt"
        )
    msg = str(e.value)
    assert "step 17" in msg and "loss is nan" in msg
    assert "last good checkpoint: run/checkpoints/last.pt" in msg
    assert "trainer.skip_nonfinite=true" in msg
    assert e.value.step == 17 and math.isnan(e.value.loss)


def test_nonfinite_gradient_names_the_layer_backward_met_first():
    net = _net_with_grads("conv2")
    bad = nonfinite_grads(net)
    assert bad[-1] == "conv2.weight" and "fc.weight" not in bad and "conv1.weight" in bad
    with pytest.raises(NonFiniteError) as e:
        check_finite(torch.tensor(0.3), net, step=5)
    msg = str(e.value)
    assert "step 5" in msg and "loss is" not in msg
    assert "layer 'conv2' (parameter 'conv2.weight')" in msg
    assert "first in model order: 'conv1.weight'" in msg
    assert "no checkpoint has been written yet" in msg
    assert e.value.param == "conv2.weight"
    # With fp16 loss scaling the scaler owns inf gradients: check the loss only.
    check_finite(torch.tensor(0.3), net, step=5, check_grads=False)


def test_guard_stops_by_default():
    with pytest.raises(NonFiniteError):
        NonFiniteGuard().check(float("inf"), None, step=1)


def test_guard_skips_and_counts_then_gives_up():
    guard = NonFiniteGuard(skip=True, max_skips=2)
    net = _net_with_grads()
    assert guard.check(torch.tensor(0.5), net, step=0)
    assert not guard.check(torch.tensor(float("nan")), net, step=1)
    assert not guard.check(float("inf"), net, step=4)
    assert guard.skipped == 2 and guard.skipped_steps == [1, 4]
    restored = NonFiniteGuard(skip=True, max_skips=2)
    restored.load_state_dict(guard.state_dict())
    assert restored.skipped == 2 and restored.skipped_steps == [1, 4]
    with pytest.raises(NonFiniteError, match="3 batches with non-finite values"):
        guard.check(float("nan"), net, step=9)


class _Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return torch.tensor(i)


@pytest.mark.parametrize("protect, grace", [(True, 60.0), (True, 0.2), (False, None)])
def test_data_workers_outlive_preemption_signals(protect, grace, monkeypatch):
    # Fork context without PreemptionHandler active: only worker_init_fn protects the worker.
    from fst.engine import faults

    if grace is not None:
        monkeypatch.setattr(faults, "WORKER_SIGTERM_GRACE_S", grace)  # inherited by the fork
    loader = torch.utils.data.DataLoader(
        _Slow(),
        batch_size=1,
        num_workers=1,
        multiprocessing_context="fork",
        worker_init_fn=PreemptionHandler.worker_init_fn if protect else None,
    )
    it = iter(loader)
    assert int(next(it)) == 0  # the worker has run its init fn
    worker = it._workers[0]
    if not protect:  # the control: the worker dies at once, crashing the training step
        with pytest.raises((RuntimeError, ConnectionError, EOFError)):  # "worker ... killed"
            os.kill(worker.pid, signal.SIGUSR1)
            worker.join(timeout=30)
            list(it)
        assert not worker.is_alive()
        return
    os.kill(worker.pid, signal.SIGUSR1)
    os.kill(worker.pid, signal.SIGTERM)
    worker.join(timeout=1.5 if grace > 1 else 30)
    if grace > 1:
        assert worker.is_alive()
        assert [int(b) for b in it] == list(range(1, 8))
    else:  # the grace period is over: the worker leaves by itself
        assert worker.exitcode == 0


def test_submitit_signal_is_caught_and_handed_over_after_checkpoint():
    # A stand-in for submitit's SignalHandler: its bound method on SIGUSR2 requeues the job.
    Fake = type("SignalHandler", (), {"__module__": "submitit.core.job_environment"})
    calls = []
    Fake.checkpoint_and_try_requeue = lambda self, signum, frame: calls.append(signum)
    prev = signal.signal(signal.SIGUSR2, Fake().checkpoint_and_try_requeue)
    try:
        with PreemptionHandler() as h:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert h.requested and h.signal_name == "SIGUSR2" and calls == []
            with pytest.raises(SystemExit):
                h.exit_preempted()  # the engine calls this once last.pt is written
        assert calls == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, prev)


def test_sigint_is_handled_like_sigterm_and_exits_130():
    from fst.engine.faults import INTERRUPTED_EXIT_CODE

    before = signal.getsignal(signal.SIGINT)
    with PreemptionHandler() as h:
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: a flag, no KeyboardInterrupt mid-step
        assert h.requested and h.signal_name == "SIGINT"
        assert h.exit_code == INTERRUPTED_EXIT_CODE == 130
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: out at once
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(SystemExit) as e:
            h.exit_preempted()
    assert e.value.code == 130
    assert signal.getsignal(signal.SIGINT) is before


def test_data_workers_ignore_ctrl_c():
    # Ctrl-C reaches the whole process group; a worker must not die of it mid-step.
    loader = torch.utils.data.DataLoader(
        _Slow(),
        batch_size=1,
        num_workers=1,
        multiprocessing_context="fork",
        worker_init_fn=PreemptionHandler.worker_init_fn,
    )
    it = iter(loader)
    assert int(next(it)) == 0
    worker = it._workers[0]
    os.kill(worker.pid, signal.SIGINT)
    worker.join(timeout=1.0)
    assert worker.is_alive()
    assert [int(b) for b in it] == list(range(1, 8))
