"""Faults during training: preemption signals and non-finite losses or gradients.

Preemption and Ctrl-C
    ``PreemptionHandler`` turns SIGTERM (sent by SLURM/Kubernetes before killing a job), SIGUSR1
    (SLURM's ``--signal=USR1@<seconds>`` warning), SIGHUP (the terminal or ssh session closed)
    and SIGINT (Ctrl-C) into a flag. Before training starts, ``startup_handler`` (installed by
    ``train.py`` as its first statement) makes the same signals exit 75 (130) at once. The trainer
    checks ``.requested`` after every optimizer step, writes ``last.pt`` and leaves with
    ``exit_preempted()``: the process ends with ``PREEMPTED_EXIT_CODE`` (75, ``EX_TEMPFAIL`` from
    sysexits.h: "try again later"; 130 = 128 + SIGINT after Ctrl-C, as shells report it), or,
    inside a submitit job, hands over to submitit's own handler, which requeues the job; the
    requeued job resumes with ``resume=auto``. No completed step is lost, and the step in flight
    when the signal arrives is finished, not torn. A second Ctrl-C stops at once, without a
    checkpoint (``KeyboardInterrupt``).

Non-finite values
    ``check_finite`` raises ``NonFiniteError`` naming the step, the loss, the parameter whose
    gradient went non-finite and the last good checkpoint. ``NonFiniteGuard`` wraps it for the
    engine: stop (default) or skip the batch and count it (``trainer.skip_nonfinite=true``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fst.types import FstError

log = logging.getLogger(__name__)

#: Exit status of a run stopped by a preemption signal after writing its checkpoint
#: (``EX_TEMPFAIL``, sysexits.h). Schedulers and wrappers can requeue on it; 0 means finished,
#: 1 means failed.
PREEMPTED_EXIT_CODE = 75
#: Written into the run directory by a preempted run (removed when it is continued): what a job
#: script checks under torchrun, which reports 1 instead of the workers' 75.
PREEMPTED_MARKER = "PREEMPTED"
#: Exit status after Ctrl-C (SIGINT), checkpoint written: 128 + 2, what shells report.
INTERRUPTED_EXIT_CODE = 130

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT", "SIGHUP")
#: Signals handled from process start (``install_startup_handlers``) until training starts.
STARTUP_SIGNALS = DEFAULT_SIGNALS


def startup_handler(signum: int, frame: Any) -> None:
    """Before training starts there is nothing to checkpoint: leave at once with 75 (130 after
    Ctrl-C), as a preempted run does; ``fst.engine.training`` removes the run directory this
    launch made (nothing was written to it), so the requeued command starts cleanly."""
    code = INTERRUPTED_EXIT_CODE if signum == signal.SIGINT else PREEMPTED_EXIT_CODE
    os.write(
        2,
        f"fst: received {signal.Signals(signum).name} before training started; nothing to "
        f"checkpoint, exiting with status {code} (run the same command again to start "
        "it)\n".encode(),
    )
    raise SystemExit(code)


def install_startup_handlers() -> None:
    """``train.py``/``eval.py`` call this first: TERM, USR1, HUP (75) and INT (130) end the
    process cleanly during start-up; the trainer's ``PreemptionHandler`` takes over while it
    trains and hands back to these afterwards."""
    if threading.current_thread() is threading.main_thread():
        for name in STARTUP_SIGNALS:
            signal.signal(_signal_number(name), startup_handler)


def _signal_number(sig: int | str) -> int:
    if isinstance(sig, str):
        name = sig.upper() if sig.upper().startswith("SIG") else "SIG" + sig.upper()
        return int(getattr(signal, name))
    return int(sig)


def _is_submitit_handler(handler: Any) -> bool:
    owner = getattr(handler, "__self__", None)
    return owner is not None and type(owner).__module__.startswith("submitit")


#: Seconds a data worker lives on after SIGTERM (see ``PreemptionHandler.worker_init_fn``).
WORKER_SIGTERM_GRACE_S = 60.0
_worker_exit_timer: threading.Timer | None = None


def _worker_deferred_exit(signum: int, frame: Any) -> None:
    global _worker_exit_timer
    if _worker_exit_timer is None:
        _worker_exit_timer = threading.Timer(WORKER_SIGTERM_GRACE_S, os._exit, args=(0,))
        _worker_exit_timer.daemon = True
        _worker_exit_timer.start()


class PreemptionHandler:
    """Context manager: while active, the given signals only set ``.requested``.

    Default signals: SIGTERM, SIGUSR1, plus the signal submitit's own handler is bound to (USR2
    by default) when running inside a submitit job. On exit the previous handlers come back.
    Outside the main thread (where Python cannot install handlers) it warns and stays inert.

    Example::

        with PreemptionHandler() as preempt:
            for batch in loader:
                train_step(batch)
                if preempt.requested:
                    save_checkpoint(run_dir / "checkpoints/last.pt", state)
                    preempt.exit_preempted()
    """

    def __init__(self, signals: Iterable[int | str] | None = None):
        self._signals = [_signal_number(s) for s in (signals or DEFAULT_SIGNALS)]
        self._previous: dict[int, Any] = {}
        self.requested = False
        self.signum: int | None = None
        self.active = False

    @property
    def signal_name(self) -> str | None:
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """75 after a preemption signal, 130 after Ctrl-C (SIGINT)."""
        return INTERRUPTED_EXIT_CODE if self.signum == signal.SIGINT else PREEMPTED_EXIT_CODE

    def _handle(self, signum: int, frame: Any) -> None:
        # Only set flags here: the handler runs between two bytecodes of the training step, and
        # anything heavier (I/O, CUDA calls) could deadlock or tear the step.
        if signum == signal.SIGINT and self.requested and self.signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
        first = not self.requested
        self.requested = True
        if self.signum is None:
            self.signum = signum
        if first:
            again = " (Ctrl-C again stops at once, without one)" if signum == signal.SIGINT else ""
            os.write(
                2,
                f"fst: received {signal.Signals(signum).name}; finishing the current step, "
                f"then checkpointing and exiting{again}\n".encode(),
            )

    def __enter__(self) -> PreemptionHandler:
        if threading.current_thread() is not threading.main_thread():
            log.warning("PreemptionHandler: not in the main thread, signals are not handled")
            return self
        signums = list(self._signals)
        for s in signal.Signals:
            if s not in signums and _is_submitit_handler(signal.getsignal(s)):
                signums.append(int(s))  # submitit's preemption signal (SUBMITIT_PREEMPT_SIGNAL)
        for s in signums:
            self._previous[s] = signal.signal(s, self._handle)
        self.active = True
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev if prev is not None else signal.SIG_DFL)
        self._previous.clear()
        self.active = False

    def synced(self) -> bool:
        """``requested`` on any process (all-reduce under torch.distributed), so all ranks stop together."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            backend = torch.distributed.get_backend()
            device = (
                torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else "cpu"
            )
            flag = torch.tensor([1.0 if self.requested else 0.0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            self.requested = bool(flag.item() > 0)
        return self.requested

    @staticmethod
    def worker_init_fn(worker_id: int = 0) -> None:
        """``DataLoader(worker_init_fn=...)``: data workers outlive the preemption signals.

        SLURM signals every process of the job, data workers included, and Ctrl-C reaches the
        whole foreground process group; a worker killed by SIGTERM/SIGUSR1/SIGINT would crash
        the main process ("DataLoader worker ... killed") in the middle of the step it is
        finishing. Workers ignore SIGUSR1 and SIGINT, and on SIGTERM exit only after
        ``WORKER_SIGTERM_GRACE_S`` (normally the main process has checkpointed and shut them
        down long before), so a hung worker still cannot block the job's exit forever.
        """
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _worker_deferred_exit)

    def exit_preempted(self) -> None:
        """Leave after the checkpoint is written: chain to the displaced handler or exit 75.

        A callable handler displaced for the received signal (submitit's, which requeues the
        job and exits) is called first; if it returns, or there is none, the process exits
        with ``exit_code`` (75, or 130 after Ctrl-C).
        """
        signum = self.signum
        code = self.exit_code
        prev = self._previous.get(signum) if signum is not None else None
        self.__exit__(None, None, None)
        if callable(prev) and prev not in (signal.default_int_handler, startup_handler):
            log.info("handing %s over to the previous handler %r", self.signal_name, prev)
            prev(signum, None)
        what = "interrupted" if code == INTERRUPTED_EXIT_CODE else "preempted"
        log.warning(
            "%s by %s: checkpoint written, exiting with status %d (continue with the same "
            "command plus resume=auto)",
            what,
            self.signal_name,
            code,
        )
        sys.exit(code)


# --------------------------------------------------------------------------------------------
# non-finite loss / gradients
# --------------------------------------------------------------------------------------------


class NonFiniteError(FstError, FloatingPointError):
    """Loss or gradients are NaN/Inf. Attributes: ``step``, ``loss``, ``param`` (or None)."""

    def __init__(self, message: str, *, step: int, loss: float, param: str | None = None):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.param = param


def _loss_value(loss: torch.Tensor | float) -> float:
    if isinstance(loss, torch.Tensor):
        t = loss.detach().float()
        return float(t) if t.numel() == 1 else float(t.sum())  # NaN/Inf survive the sum
    return float(loss)


def nonfinite_grads(model: nn.Module) -> list[str]:
    """Names of parameters whose ``.grad`` holds NaN or Inf, in model (registration) order.

    One device sync in the common all-finite case: the per-parameter flags are stacked first.
    """
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named:
        return []
    device = named[0][1].device
    flags = torch.stack([torch.isfinite(g).all().to(device) for _, g in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok]


def _module_of(param_name: str) -> str:
    return param_name.rpartition(".")[0] or param_name


def check_finite(
    loss: torch.Tensor | float,
    model: nn.Module | None,
    step: int,
    last_checkpoint: str | os.PathLike | None = None,
    *,
    check_grads: bool = True,
) -> None:
    """Raise ``NonFiniteError`` if ``loss`` or any gradient of ``model`` is NaN/Inf.

    Call after ``backward()`` (and after ``scaler.unscale_``; with fp16 loss scaling pass
    ``check_grads=False``, the scaler already skips steps with inf gradients). The message names
    the step, the loss value, the layer where backward first met a non-finite gradient (the
    affected parameter nearest the output: backward runs from the output, so that is where
    the NaN/Inf entered), the first affected parameter in model order, and the last good
    checkpoint to resume from.
    """
    value = _loss_value(loss)
    bad = nonfinite_grads(model) if (check_grads and model is not None) else []
    if math.isfinite(value) and not bad:
        return
    what = [] if math.isfinite(value) else [f"loss is {value}"]
    param = None
    if bad:
        total = sum(1 for _, p in model.named_parameters() if p.grad is not None)
        param = bad[-1]
        where = (
            f"non-finite gradient in {len(bad)}/{total} parameters; backward first met it in "
            f"layer '{_module_of(param)}' (parameter '{param}')"
        )
        if len(bad) > 1:
            where += f"; first in model order: '{bad[0]}'"
        what.append(where)
    ckpt = (
        f"last good checkpoint: {last_checkpoint} (resume from it with resume=auto or resume={last_checkpoint})"
        if last_checkpoint
        else "no checkpoint has been written yet"
    )
    raise NonFiniteError(
        f"non-finite values at step {step}: {'; '.join(what)}. {ckpt}. Lower the learning rate, "
        "enable gradient clipping (trainer.grad_clip_norm) or use trainer.precision=32; "
        "trainer.skip_nonfinite=true skips such batches and counts them instead.",
        step=step,
        loss=value,
        param=param,
    )


class NonFiniteGuard:
    """The engine's NaN policy: ``check`` returns True to take the optimizer step.

    ``skip=False``: ``check`` raises ``NonFiniteError``. ``skip=True``: a non-finite batch is
    logged, counted in ``.skipped`` (steps in ``.skipped_steps``) and ``check`` returns False,
    the caller zeroes the gradients and does not step; after ``max_skips`` skips (None: no limit)
    it raises. ``state_dict``/``load_state_dict`` carry the count across resumes.
    """

    def __init__(self, skip: bool = False, max_skips: int | None = None, check_grads: bool = True):
        self.skip = skip
        self.max_skips = max_skips
        self.check_grads = check_grads
        self.skipped = 0
        self.skipped_steps: list[int] = []

    def check(
        self,
        loss: torch.Tensor | float,
        model: nn.Module | None,
        step: int,
        last_checkpoint: str | os.PathLike | Path | None = None,
    ) -> bool:
        try:
            check_finite(loss, model, step, last_checkpoint, check_grads=self.check_grads)
        except NonFiniteError as e:
            if not self.skip:
                raise
            self.skipped += 1
            self.skipped_steps.append(int(step))
            log.warning("skipping batch (%d skipped so far): %s", self.skipped, e)
            if self.max_skips is not None and self.skipped > self.max_skips:
                raise NonFiniteError(
                    f"{self.skipped} batches with non-finite values (more than max_skips="
                    f"{self.max_skips}), last at step {step}; the run is diverging. {e}",
                    step=e.step,
                    loss=e.loss,
                    param=e.param,
                ) from e
            return False
        return True

    def state_dict(self) -> dict:
        return {"skipped": self.skipped, "skipped_steps": list(self.skipped_steps)}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.skipped_steps = [int(s) for s in state.get("skipped_steps", [])]
