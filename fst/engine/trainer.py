"""``Trainer``: one training loop for every task (``train_one_epoch``) and one evaluation.

The task (``fst.tasks``) says what a batch means (``train_step`` -> losses, ``evaluate`` ->
metrics); the trainer does the rest: micro-batching and gradient accumulation (DDP ``no_sync``
on all but the last micro-batch), autocast, non-finite checks, clipping, optimizer and per-step
schedule, logging, checkpoints, preemption.

A trainer is handed everything it runs, built once by ``fst.engine.training.build_parts``:
``RunParts`` (task, data, model, optimizer, schedule, scaler, sampler, logger, diagnostics),
the typed ``trainer`` settings (``fst.engine.config.TrainerConfig``) and the ``RunEnv`` (device,
processes, run directory, seed, loader settings). To add a component (e.g. a mask sparsifier
stepped after the optimizer), build it in ``build_parts``, add it to ``RunParts`` and, when it
has state, to ``Trainer.stateful``: checkpoints save and restore every entry of that mapping.

Counters (all saved in checkpoints, so a resume continues exactly where the run stopped):

* ``epoch``: the epoch in progress (0-based); ``step_in_epoch``: optimizer steps done in it;
* ``global_step``: optimizer steps done in total (the x-axis of every logged metric).

The data order is a function of ``(seed, epoch)`` only (``ResumableSampler``), so a resume
skips exactly the ``step_in_epoch * data.batch_size`` samples already consumed this epoch.

Divergence never reaches a checkpoint: a non-finite loss or gradient stops the run (or skips the
batch, ``trainer.skip_nonfinite``), a non-finite validation metric stops it before the epoch's
checkpoint is written and is never "best", and ``save`` refuses weights holding NaN/Inf.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from fst.engine import dist as fdist
from fst.engine.checkpoint import (
    BEST,
    CHECKPOINT_DIRNAME,
    LAST,
    capture_rng_state,
    check_state_dict_compatible,
    nonfinite_entries,
    restore_rng_state,
    save_checkpoint,
)
from fst.engine.config import TrainerConfig
from fst.engine.faults import (
    PREEMPTED_EXIT_CODE,
    PREEMPTED_MARKER,
    NonFiniteError,
    NonFiniteGuard,
    PreemptionHandler,
)
from fst.engine.resume import ResumeError
from fst.engine.sampler import LEGACY_ORDER, ResumableSampler
from fst.layers import set_decay_scale
from fst.logging.progress import progress
from fst.types import DataBundle, DataLoaderConfig

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """Where the run stands (see the module docstring)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    train_time_s: float = 0.0


@dataclass(frozen=True)
class RunEnv:
    """Where and how a run executes."""

    device: torch.device
    dist: fdist.DistInfo
    run_dir: Path
    seed: int
    loader: DataLoaderConfig  # data.batch_size: global, all processes x accumulation steps
    #: Per-layer sparsity diagnostics every N optimizer steps (``logger.diagnostics_every_n_steps``).
    diagnostics_every: int = 0
    #: Constant entries of every checkpoint (the resolved ``config``, ``meta``).
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunParts:
    """Everything a run is made of, built once from the config (``build_parts``)."""

    task: Any  # fst.tasks.base.Task
    data: DataBundle
    model: nn.Module  # sparsified, on the device; DDP-wrapped in a multi-process run
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    sampler: ResumableSampler
    logger: Any  # fst.logging.RunLogger
    mask_tracker: Any = None  # fst.logging.MaskTracker
    sparsifier: Any = None  # fst.sparsifier: masks a strategy keeps across steps, or None


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def steps_per_epoch(sampler: ResumableSampler, limit: int | None) -> int:
    """Optimizer steps in one epoch: the sampler's global batches, capped by
    ``trainer.limit_train_batches``."""
    n = sampler.batches_per_epoch
    return n if limit is None else min(n, int(limit))


def autocast(device: torch.device, precision: str):
    """A context-manager factory for the run's autocast: bf16/fp16 on CUDA, nothing elsewhere
    (on CPU ``bf16`` runs in fp32, see ``configs/trainer/default.yaml``)."""
    amp = device.type == "cuda" and precision in ("bf16", "16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype, enabled=amp)


def val_loader(
    data: DataBundle,
    batch_size: int,
    limit: int | None,
    device: torch.device,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """The validation loader: ``data.val`` in order, the first ``limit`` batches (None: all)."""
    val = data.val
    if limit is not None:
        val = Subset(val, range(min(len(val), int(limit) * batch_size)))
    return DataLoader(
        val,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory and device.type == "cuda",
        collate_fn=data.collate_fn,
    )


def restart_schedule_at(
    scheduler: torch.optim.lr_scheduler.LRScheduler, step: int, base_lrs: list[float]
) -> None:
    """Set a step-indexed schedule (``LambdaLR``) to ``step`` with the given base lrs.

    Used on resume: the schedule is rebuilt from the *current* config (a changed ``optim.lr``,
    ``sched.*`` or ``trainer.epochs`` takes effect) and continued at the checkpoint's step. With
    an unchanged config it computes exactly what the uninterrupted run computed,
    ``base_lr * factor(step)``.
    """
    if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        log.warning(
            "%s is not a step-indexed LambdaLR: its saved state is restored as is, so a changed "
            "optim.lr or sched.* does not apply on resume",
            type(scheduler).__name__,
        )
        return
    scheduler.base_lrs = list(base_lrs)
    scheduler.last_epoch = step
    for group, base, fn in zip(scheduler.optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * fn(step)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]


def bar_postfix(rec: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows of a logged training record; images/s with at least 3
    significant digits (a detector on a CPU runs below 1 image/s, which ``%.0f`` showed as 0)."""
    img_s = rec["train/img_per_s"]
    return {
        "loss": f"{rec['train/loss']:.3f}",
        "lr": f"{rec['train/lr']:.3g}",
        "img_s": f"{img_s:.0f}" if img_s >= 100 else f"{img_s:.3g}",
    }


class Trainer:
    """Runs ``settings.epochs`` epochs of ``parts.task`` on ``parts.model``.

    Args:
        parts: the run's components (``RunParts``), built once.
        settings: the ``trainer`` config group, typed.
        env: device, processes, run directory, seed and loader settings.
    """

    def __init__(self, parts: RunParts, settings: TrainerConfig, env: RunEnv):
        self.parts, self.cfg, self.env = parts, settings, env
        self.task, self.data, self.model = parts.task, parts.data, parts.model
        self.optimizer, self.scheduler, self.scaler = parts.optimizer, parts.scheduler, parts.scaler
        self.sampler, self.logger, self.mask_tracker = (
            parts.sampler,
            parts.logger,
            parts.mask_tracker,
        )
        self.sparsifier = parts.sparsifier
        self.device, self.dist, self.seed = env.device, env.dist, env.seed
        self.run_dir = Path(env.run_dir)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIRNAME
        self.progress = Progress()
        self.last_val: dict[str, float] = {}
        self.accum = int(settings.accumulate_grad_batches)
        self.global_batch = env.loader.batch_size
        self.micro_batch = self.global_batch // (self.dist.world_size * self.accum)
        self.steps_per_epoch = steps_per_epoch(self.sampler, settings.limit_train_batches)
        self.epochs = int(settings.epochs)
        self.val_loader = val_loader(
            self.data,
            env.loader.val_batch_size or self.global_batch,
            settings.limit_val_batches,
            self.device,
            env.loader.num_workers,
            env.loader.pin_memory,
        )
        self.guard = NonFiniteGuard(
            skip=settings.skip_nonfinite,
            max_skips=settings.max_nonfinite_skips,
            check_grads=settings.precision != "16",
        )
        self.autocast = autocast(self.device, settings.precision)
        self.preempt: PreemptionHandler | None = None
        # The newest checkpoint written (weights checked finite), and whether last.pt on disk
        # holds a validated state (written right after a finite validation) or a mid-epoch one.
        self.last_checkpoint: Path | None = None
        self.last_is_validated = False

    @property
    def stateful(self) -> dict[str, Any]:
        """Components whose ``state_dict`` goes into every checkpoint, by checkpoint key."""
        items = {
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "nonfinite": self.guard,
        }
        if self.mask_tracker is not None:
            # Previous forward masks: the first flip rate after a resume compares against them.
            items["mask_tracker"] = self.mask_tracker
        if self.sparsifier is not None:
            # Masks / gradients the strategy keeps across steps (issue 12's sparsifier).
            items["sparsifier"] = self.sparsifier
        return items

    # ---------------------------------------------------------------- data
    def _train_loader(self, epoch: int) -> DataLoader:
        skip = self.progress.step_in_epoch * self.accum * self.micro_batch
        self.sampler.set_epoch(epoch, skip=skip)
        # A private generator: DataLoader draws its worker base seed from it, not from the global
        # RNG, so creating the iterator mid-epoch on resume leaves the global stream untouched.
        g = torch.Generator()
        g.manual_seed(self.seed * 100_003 + epoch * 1009 + self.dist.rank)
        return DataLoader(
            self.data.train,
            batch_size=self.micro_batch,
            sampler=self.sampler,
            num_workers=self.env.loader.num_workers,
            pin_memory=self.env.loader.pin_memory and self.device.type == "cuda",
            drop_last=True,
            collate_fn=self.data.collate_fn,
            generator=g,
            persistent_workers=False,
            # SLURM signals every process, Ctrl-C the process group: workers must outlive both.
            worker_init_fn=PreemptionHandler.worker_init_fn,
        )

    # ---------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train from ``progress`` to ``epochs``; returns the last validation metrics."""
        p = self.progress
        with PreemptionHandler() as preempt:
            self.preempt = preempt
            while p.epoch < self.epochs:
                t0 = time.time()
                self.train_one_epoch(p.epoch)
                p.train_time_s += time.time() - t0
                epoch = p.epoch
                p.epoch, p.step_in_epoch = epoch + 1, 0
                every = max(1, int(self.cfg.val_every_n_epochs))
                validated = False
                if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
                    metrics = self.evaluate()
                    self._stop_if_nonfinite(metrics, epoch)
                    self.last_val = metrics
                    self._log_val(metrics, epoch)
                    validated = True
                self.save(LAST, validated=validated)
                if preempt.synced():
                    self._exit_preempted(saved=True)
        return self.last_val

    def train_one_epoch(self, epoch: int) -> None:
        """Run optimizer steps ``progress.step_in_epoch .. steps_per_epoch`` of ``epoch``."""
        p, model = self.progress, self.model
        model.train()
        batches = iter(self._train_loader(epoch))
        bar = progress(
            self.steps_per_epoch,
            f"epoch {epoch + 1}/{self.epochs}",
            initial=p.step_in_epoch,
            enabled=self.dist.is_main and self.cfg.progress_bar,
        )
        window: dict[str, list[float]] = defaultdict(list)
        window_images, window_t0 = 0, time.perf_counter()
        while p.step_in_epoch < self.steps_per_epoch:
            losses, images = self._optimizer_step(batches)
            p.step_in_epoch += 1
            p.global_step += 1
            for k, v in losses.items():
                window[k].append(v)
            window_images += images * self.dist.world_size
            bar.update(1)
            if p.global_step % max(1, int(self.cfg.log_every_n_steps)) == 0 or (
                p.step_in_epoch == self.steps_per_epoch
            ):
                dt = max(time.perf_counter() - window_t0, 1e-9)
                rec = {f"train/{k}": sum(v) / len(v) for k, v in window.items()}
                rec["train/lr"] = self.optimizer.param_groups[0]["lr"]
                rec["train/img_per_s"] = window_images / dt
                self.logger.log(rec, step=p.global_step, epoch=epoch)
                bar.set_postfix(**bar_postfix(rec))
                window.clear()
                window_images, window_t0 = 0, time.perf_counter()
            every = self.env.diagnostics_every
            if self.mask_tracker is not None and every > 0 and p.global_step % every == 0:
                if self.dist.is_main:
                    diag = self.mask_tracker.measure(unwrap(model))
                    if diag:
                        self.logger.log(diag, step=p.global_step, epoch=epoch)
            self._after_step()
        bar.close()

    def _optimizer_step(self, batches) -> tuple[dict[str, float], int]:
        """Accumulate ``accum`` micro-batches and take one optimizer step (unless non-finite)."""
        model, task, p = self.model, self.task, self.progress
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = defaultdict(float)
        loss_total = torch.zeros((), device=self.device)
        images = 0
        ddp = isinstance(model, nn.parallel.DistributedDataParallel)
        # SR-STE decay is added in every backward: keep it once per step, unscaled.
        loss_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        set_decay_scale(model, loss_scale / self.accum)
        for micro in range(self.accum):
            batch = next(batches)
            last = micro == self.accum - 1
            sync = contextlib.nullcontext() if (last or not ddp) else model.no_sync()
            with sync:
                with self.autocast():
                    out = task.train_step(model, batch, self.device)
                if "loss" not in out:
                    raise KeyError(f"{type(task).__name__}.train_step must return a 'loss' entry")
                loss = out["loss"] / self.accum
                nan_at = self.cfg.debug_nan_at_step
                if nan_at is not None and p.global_step + 1 == int(nan_at):
                    loss = loss * float("nan")  # fault injection for tests of the NaN policy
                self.scaler.scale(loss).backward()
            loss_total += loss.detach()
            for k, v in out.items():
                sums[k] += float(v.detach()) / self.accum if torch.is_tensor(v) else v / self.accum
            images += task.batch_size(batch)
        clip = self.cfg.grad_clip_norm
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        ok = self.guard.check(loss_total, unwrap(model), p.global_step + 1, self.good_checkpoint())
        if ok:
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # The sparsifier steps only after a step that was taken (fp16: the scaler skips
            # steps with inf gradients and then lowers its scale), while the gradients exist.
            if self.sparsifier is not None and (scale is None or self.scaler.get_scale() >= scale):
                self.sparsifier.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return dict(sums), images

    def _after_step(self) -> None:
        """Periodic checkpoint, preemption (real or injected for tests)."""
        p = self.progress
        every = int(self.cfg.checkpoint_every_n_steps or 0)
        saved = every > 0 and p.global_step % every == 0 and p.step_in_epoch < self.steps_per_epoch
        if saved:
            self.save(LAST)
        debug = self.cfg.debug_signal_at_step
        if debug is not None and p.global_step == int(debug) and self.dist.is_main:
            os.kill(os.getpid(), getattr(signal, self.cfg.debug_signal))
        if self.preempt is not None and self.preempt.synced():
            self._exit_preempted(saved=saved)

    def _exit_preempted(self, saved: bool) -> None:
        if not saved:  # a second save of this step would push the older one out of .prev
            self.save(LAST)
        self.logger.finish(exit_code=1)
        if self.dist.is_main and self.preempt.exit_code == PREEMPTED_EXIT_CODE:
            # torchrun reports 1 for any failed worker, whatever its status: the marker is how a
            # job script run under torchrun knows to requeue (README: "Preemption")
            (self.run_dir / PREEMPTED_MARKER).write_text(f"{self.preempt.signal_name}\n")
        fdist.barrier()
        self.preempt.exit_preempted()

    # ---------------------------------------------------------------- evaluation
    def evaluate(self) -> dict[str, float]:
        """Evaluate on rank 0 (unwrapped model, eval mode, no grad); metrics on every rank."""
        metrics = None
        if self.dist.is_main:
            model = unwrap(self.model)
            model.eval()
            with torch.no_grad(), self.autocast():
                metrics = self.task.evaluate(model, self.val_loader, self.device)
            model.train()
            if self.task.primary_metric not in metrics:
                raise KeyError(
                    f"{type(self.task).__name__}.evaluate returned {sorted(metrics)}, without "
                    f"its primary metric {self.task.primary_metric!r}"
                )
        metrics = fdist.broadcast_object(metrics)
        return {k: float(v) for k, v in metrics.items()}

    def _stop_if_nonfinite(self, metrics: dict[str, float], epoch: int) -> None:
        """A non-finite validation metric stops the run like a non-finite training loss, before
        this epoch's checkpoint is written."""
        bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
        if not bad:
            return
        shown = ", ".join(f"val/{k}={v}" for k, v in bad.items())
        p = self.progress
        raise NonFiniteError(
            f"non-finite validation metrics after epoch {epoch + 1} (step {p.global_step}): "
            f"{shown}; the model diverged, and nothing of this epoch was checkpointed. "
            f"last good checkpoint: {self.good_checkpoint(validated=True)}. Lower the learning "
            "rate (optim.lr=...), enable gradient clipping (trainer.grad_clip_norm=1.0) or use "
            "trainer.precision=32, then resume from that checkpoint.",
            step=p.global_step,
            loss=metrics.get("loss", float("nan")),
        )

    def _log_val(self, metrics: dict[str, float], epoch: int) -> None:
        p = self.progress
        value = metrics[self.task.primary_metric]
        improved = math.isfinite(value) and self.task.is_better(value, p.best_value)
        if improved:
            p.best_value, p.best_epoch = value, epoch
        rec = {f"val/{k}": v for k, v in metrics.items()}
        rec[f"val/best_{self.task.primary_metric}"] = p.best_value
        self.logger.log(rec, step=p.global_step, epoch=epoch)
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.epochs,
            ", ".join(f"val/{k}={v:.4g}" for k, v in metrics.items()),
        )
        if improved:
            self.save(BEST, validated=True)

    # ---------------------------------------------------------------- checkpoints
    def good_checkpoint(self, validated: bool = False) -> str | None:
        """The checkpoint to name in a divergence error: the newest one written (its weights
        were checked finite), or with ``validated`` the newest whose state also passed a finite
        validation (``last.pt`` written at an epoch end, else ``best.pt``)."""
        last = self.last_checkpoint
        if last is not None and (self.last_is_validated or not validated):
            kind = "validated" if self.last_is_validated else "written mid-epoch, not validated"
            return f"{last} ({kind})"
        best = self.ckpt_dir / BEST
        if validated and self.progress.best_value is not None and best.is_file():
            return f"{best} (validated, epoch {(self.progress.best_epoch or 0) + 1})"
        return None

    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (plain tensors/containers: loads with weights_only=True)."""
        p = self.progress
        rng = fdist.all_gather_object(capture_rng_state())
        return {
            "model": unwrap(self.model).state_dict(),
            **{k: obj.state_dict() for k, obj in self.stateful.items()},
            "progress": asdict(p),
            "epoch": p.epoch,
            "step_in_epoch": p.step_in_epoch,
            "global_step": p.global_step,
            "sampler": {
                "seed": self.seed,
                "epoch": p.epoch,
                "global_batch": self.global_batch,
                "samples_consumed": p.step_in_epoch * self.global_batch,
                "order": self.sampler.order,
            },
            "rng": rng,  # one entry per rank
            "last_val": dict(self.last_val),
            "world_size": self.dist.world_size,
            **self.env.checkpoint_extra,
        }

    def save(self, name: str, validated: bool = False) -> Path | None:
        """Write checkpoint ``name`` (rank 0). Refuses weights holding NaN/Inf."""
        if not self.cfg.save_checkpoints or (name == BEST and self.cfg.keep_checkpoints == "last"):
            return None
        state = self.state_dict()  # collective (RNG gather): every rank takes part
        state["validated"] = validated
        path = self.ckpt_dir / name
        if self.dist.is_main:
            bad = nonfinite_entries(state["model"])
            if bad:
                raise NonFiniteError(
                    f"model weights are non-finite at step {self.progress.global_step} "
                    f"({len(bad)} tensor(s), first {bad[0]!r}); {path} was NOT written. last "
                    f"good checkpoint: {self.good_checkpoint()}. Lower the learning rate or "
                    "enable gradient clipping (trainer.grad_clip_norm=1.0), then resume from it.",
                    step=self.progress.global_step,
                    loss=float("nan"),
                )
            save_checkpoint(path, state, keep_previous=self.cfg.keep_checkpoints == "all")
            if name == LAST:
                self.last_checkpoint, self.last_is_validated = path, validated
        fdist.barrier()
        return path

    def load_state_dict(self, state: dict[str, Any], *, source: str = "") -> None:
        """Restore a checkpoint written by ``state_dict``.

        The model, counters, RNG and the state of every ``stateful`` component come from the
        checkpoint. The *settings* come from this run's config: optimizer hyperparameters
        (``optim.lr``, ``weight_decay``, ...) are re-applied over the checkpoint's, and the
        schedule is rebuilt from ``sched.*``/``trainer.epochs`` and continued at the
        checkpoint's step (``fst.engine.resume`` decides which settings may change).
        """
        model = unwrap(self.model)
        lacking = [
            k for k in ("model", "progress", "optimizer", "scheduler", "scaler") if k not in state
        ]
        if lacking:
            raise ResumeError(
                f"checkpoint {source} lacks {', '.join(repr(k) for k in lacking)} (written by an "
                "older fst, or not a training checkpoint), so the run cannot continue exactly; "
                f"start a new run from its weights with resume=null model.pretrained={source}"
            )
        check_state_dict_compatible(model, state["model"], source=source)
        known = {f.name for f in fields(Progress)}
        p = Progress(**{k: v for k, v in state["progress"].items() if k in known})
        saved_batch = state.get("sampler", {}).get("global_batch", self.global_batch)
        # a run keeps the data order it started with (checkpoints before issue 27: seed + epoch)
        self.sampler.order = state.get("sampler", {}).get("order", LEGACY_ORDER)
        if p.step_in_epoch and saved_batch != self.global_batch:
            raise ResumeError(
                f"checkpoint {source} stopped mid-epoch with data.batch_size={saved_batch}; "
                f"this run uses {self.global_batch}, so the consumed samples are undefined. "
                f"Resume with data.batch_size={saved_batch}."
            )
        if p.step_in_epoch > self.steps_per_epoch:
            raise ResumeError(
                f"checkpoint {source} is at step {p.step_in_epoch} of its epoch but an epoch now "
                f"has {self.steps_per_epoch} steps (trainer.limit_train_batches changed?)"
            )
        if p.epoch > self.epochs:
            raise ResumeError(
                f"trainer.epochs={self.epochs} but checkpoint {source} has already finished "
                f"{p.epoch} epochs; resume with trainer.epochs={p.epoch} or more"
            )
        # This run's settings, before the checkpoint's state overwrites the optimizer's groups.
        settings = [
            {k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")}
            for g in self.optimizer.param_groups
        ]
        base_lrs = [g.get("initial_lr", g["lr"]) for g in self.optimizer.param_groups]
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group, mine in zip(self.optimizer.param_groups, settings):
            group.update(mine)
        self.scheduler.load_state_dict(state["scheduler"])  # counters; lambdas stay this run's
        restart_schedule_at(self.scheduler, p.global_step, base_lrs)
        self.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state.get("nonfinite", {}))
        if self.mask_tracker is not None:
            self.mask_tracker.load_state_dict(state.get("mask_tracker", {}))
        if self.sparsifier is not None:
            if not state.get("sparsifier"):
                raise ValueError(
                    f"checkpoint {source} has no sparsifier state, but this strategy keeps its "
                    "masks there: it cannot be resumed exactly"
                )
            self.sparsifier.load_state_dict(state["sparsifier"])
        self.last_val = dict(state.get("last_val", {}))
        self.progress = p
        if source and Path(source) == self.ckpt_dir / LAST:  # continued in place
            self.last_checkpoint = Path(source)
            self.last_is_validated = bool(state.get("validated", False))
        rng = state.get("rng") or []
        if isinstance(rng, dict):
            rng = [rng]
        if len(rng) == self.dist.world_size:
            restore_rng_state(rng[self.dist.rank])
        else:
            log.warning(
                "checkpoint has RNG states of %d process(es), this run has %d: RNG streams are "
                "re-seeded (the data order is still exact, random augmentations are not)",
                len(rng),
                self.dist.world_size,
            )
            torch.manual_seed(self.seed + 7919 * p.global_step + self.dist.rank)
