"""``Trainer``: one training loop for every task (``train_one_epoch``) and one evaluation.

The task (``fst.tasks``) says what a batch means (``train_step`` -> losses, ``evaluate`` ->
metrics); the trainer does the rest: micro-batching and gradient accumulation (DDP ``no_sync``
on all but the last micro-batch), autocast, non-finite checks, clipping, optimizer and per-step
schedule, logging, checkpoints, preemption.

Counters (all saved in checkpoints, so a resume continues exactly where the run stopped):

* ``epoch``: the epoch in progress (0-based); ``step_in_epoch``: optimizer steps done in it;
* ``global_step``: optimizer steps done in total (the x-axis of every logged metric).

The data order is a function of ``(seed, epoch)`` only (``ResumableSampler``), so a resume
skips exactly the ``step_in_epoch * data.batch_size`` samples already consumed this epoch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
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
    RESUME_META_KEYS,
    capture_rng_state,
    check_meta_compatible,
    check_state_dict_compatible,
    restore_rng_state,
    save_checkpoint,
)
from fst.engine.faults import NonFiniteGuard, PreemptionHandler
from fst.engine.sampler import ResumableSampler
from fst.layers import set_decay_scale
from fst.tasks.base import DataBundle, Task

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


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class Trainer:
    """Runs ``epochs`` epochs of ``task`` on ``model``; see ``fst.engine.training.train``.

    Args:
        task: the task (step and evaluator).
        model: the (sparsified) model, already on ``device``, possibly DDP-wrapped.
        data: the task's datasets.
        optimizer / scheduler / scaler: stepped once per optimizer step.
        trainer_cfg: the ``trainer`` config group (a dict-like).
        global_batch: ``data.batch_size`` (all processes x accumulation steps).
        run_dir: where ``checkpoints/`` live.
        logger: a ``fst.logging.RunLogger``.
        state_extra: constant entries for every checkpoint (resolved ``config``, ``meta``).
    """

    def __init__(
        self,
        *,
        task: Task,
        model: nn.Module,
        data: DataBundle,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        device: torch.device,
        dist: fdist.DistInfo,
        trainer_cfg: Any,
        global_batch: int,
        val_batch_size: int,
        num_workers: int,
        pin_memory: bool,
        seed: int,
        run_dir: Path,
        logger: Any,
        mask_tracker: Any = None,
        diagnostics_every: int = 0,
        state_extra: dict[str, Any] | None = None,
    ):
        self.task, self.model, self.data = task, model, data
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.device, self.dist, self.cfg = device, dist, trainer_cfg
        self.seed, self.run_dir, self.logger = seed, Path(run_dir), logger
        self.mask_tracker, self.diagnostics_every = mask_tracker, diagnostics_every
        self.state_extra = dict(state_extra or {})
        self.progress = Progress()
        self.last_val: dict[str, float] = {}
        self.accum = int(trainer_cfg.accumulate_grad_batches)
        self.global_batch = global_batch
        self.micro_batch = global_batch // (dist.world_size * self.accum)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.sampler = ResumableSampler(
            len(data.train),
            global_batch,
            seed=seed,
            rank=dist.rank,
            world_size=dist.world_size,
        )
        limit = trainer_cfg.limit_train_batches
        self.steps_per_epoch = self.sampler.batches_per_epoch
        if limit is not None:
            self.steps_per_epoch = max(1, min(self.steps_per_epoch, int(limit)))
        self.epochs = int(trainer_cfg.epochs)
        self.val_loader = self._val_loader(val_batch_size)
        self.guard = NonFiniteGuard(
            skip=bool(trainer_cfg.get("skip_nonfinite", False)),
            max_skips=trainer_cfg.get("max_nonfinite_skips"),
            check_grads=str(trainer_cfg.precision) != "16",
        )
        amp = device.type == "cuda" and str(trainer_cfg.precision) in ("bf16", "16")
        dtype = torch.bfloat16 if str(trainer_cfg.precision) == "bf16" else torch.float16
        self.autocast = lambda: torch.autocast(device.type, dtype=dtype, enabled=amp)
        self.ckpt_dir = self.run_dir / CHECKPOINT_DIRNAME
        self.last_checkpoint: Path | None = None
        self.preempt: PreemptionHandler | None = None
        # Issue 12 hook: the strategy's sparsifier (None if stateless), set by train() beside
        # the scheduler; stepped after each taken optimizer step, checkpointed with it.
        self.sparsifier: Any = None

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
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and self.device.type == "cuda",
            drop_last=True,
            collate_fn=self.data.collate_fn,
            generator=g,
            persistent_workers=False,
            # SLURM signals every process; a worker killed by SIGTERM would crash the step.
            worker_init_fn=PreemptionHandler.worker_init_fn,
        )

    def _val_loader(self, batch_size: int) -> DataLoader:
        val = self.data.val
        limit = self.cfg.limit_val_batches
        if limit is not None:
            val = Subset(val, range(min(len(val), int(limit) * batch_size)))
        return DataLoader(
            val,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and self.device.type == "cuda",
            collate_fn=self.data.collate_fn,
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
                if (epoch + 1) % every == 0 or epoch + 1 == self.epochs:
                    self.last_val = self.evaluate()
                    self._log_val(self.last_val, epoch)
                self.save(LAST)
        return self.last_val

    def train_one_epoch(self, epoch: int) -> None:
        """Run optimizer steps ``progress.step_in_epoch .. steps_per_epoch`` of ``epoch``."""
        from tqdm.auto import tqdm

        p, model = self.progress, self.model
        model.train()
        batches = iter(self._train_loader(epoch))
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.step_in_epoch,
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="step",
            dynamic_ncols=True,
            disable=not (self.dist.is_main and self.cfg.progress_bar),
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
                bar.set_postfix(
                    loss=f"{rec['train/loss']:.3f}",
                    lr=f"{rec['train/lr']:.3g}",
                    img_s=f"{rec['train/img_per_s']:.0f}",
                )
                window.clear()
                window_images, window_t0 = 0, time.perf_counter()
            if (
                self.mask_tracker is not None
                and self.diagnostics_every > 0
                and p.global_step % self.diagnostics_every == 0
                and self.dist.is_main
            ):
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
                if self.cfg.get("debug_nan_at_step") is not None and (
                    p.global_step + 1 == int(self.cfg.debug_nan_at_step)
                ):
                    loss = loss * float("nan")  # fault injection for tests of the NaN policy
                self.scaler.scale(loss).backward()
            loss_total += loss.detach()
            for k, v in out.items():
                sums[k] += float(v.detach()) / self.accum if torch.is_tensor(v) else v / self.accum
            images += task.batch_size(batch)
        clip = self.cfg.grad_clip_norm
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        last_ckpt = self.last_checkpoint
        ok = self.guard.check(loss_total, unwrap(model), p.global_step + 1, last_ckpt)
        if ok:
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), float(clip))
            scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # Issue 12 hook: only after a step that was taken (fp16: the scaler skips steps
            # with inf gradients and then lowers its scale), while the gradients still exist.
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
        debug = self.cfg.get("debug_signal_at_step")
        if debug is not None and p.global_step == int(debug) and self.dist.is_main:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.preempt is not None and self.preempt.synced():
            if not saved:  # a second save of this step would push the older one out of .prev
                self.save(LAST)
            self.logger.finish(exit_code=1)
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

    def _log_val(self, metrics: dict[str, float], epoch: int) -> None:
        p = self.progress
        value = metrics[self.task.primary_metric]
        improved = self.task.is_better(value, p.best_value)
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
            self.save(BEST)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (plain tensors/containers: loads with weights_only=True)."""
        p = self.progress
        rng = fdist.all_gather_object(capture_rng_state())
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(p),
            "epoch": p.epoch,
            "step_in_epoch": p.step_in_epoch,
            "global_step": p.global_step,
            "sampler": {
                "seed": self.seed,
                "epoch": p.epoch,
                "global_batch": self.global_batch,
                "samples_consumed": p.step_in_epoch * self.global_batch,
            },
            "rng": rng,  # one entry per rank
            "nonfinite": self.guard.state_dict(),
            # Previous forward masks: the first flip rate after a resume compares against them.
            "mask_tracker": self.mask_tracker.state_dict() if self.mask_tracker else {},
            # Issue 12: masks / gradients the strategy keeps across steps (its sparsifier).
            "sparsifier": self.sparsifier.state_dict() if self.sparsifier is not None else {},
            "last_val": dict(self.last_val),
            "world_size": self.dist.world_size,
            **self.state_extra,
        }

    def save(self, name: str) -> Path | None:
        if not self.cfg.get("save_checkpoints", True):
            return None
        state = self.state_dict()  # collective (RNG gather): every rank takes part
        path = self.ckpt_dir / name
        if self.dist.is_main:
            save_checkpoint(path, state)
            if name == LAST:
                self.last_checkpoint = path
        fdist.barrier()
        return path

    def load_state_dict(self, state: dict[str, Any], *, source: str = "") -> None:
        """Restore a checkpoint written by ``state_dict`` (model, optimizer, counters, RNG)."""
        model = unwrap(self.model)
        if "meta" in state and "meta" in self.state_extra:
            check_meta_compatible(
                state["meta"], self.state_extra["meta"], keys=RESUME_META_KEYS, source=source
            )
        check_state_dict_compatible(model, state["model"], source=source)
        p = Progress(**state["progress"])
        saved_batch = state.get("sampler", {}).get("global_batch", self.global_batch)
        if p.step_in_epoch and saved_batch != self.global_batch:
            raise ValueError(
                f"checkpoint {source} stopped mid-epoch with data.batch_size={saved_batch}; "
                f"this run uses {self.global_batch}, so the consumed samples are undefined. "
                f"Resume with data.batch_size={saved_batch}."
            )
        if p.step_in_epoch > self.steps_per_epoch:
            raise ValueError(
                f"checkpoint {source} is at step {p.step_in_epoch} of its epoch but an epoch now "
                f"has {self.steps_per_epoch} steps (trainer.limit_train_batches changed?)"
            )
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.guard.load_state_dict(state.get("nonfinite", {}))
        if self.mask_tracker is not None:
            self.mask_tracker.load_state_dict(state.get("mask_tracker", {}))
        if self.sparsifier is not None:  # issue 12
            if not state.get("sparsifier"):
                raise ValueError(
                    f"checkpoint {source} has no sparsifier state, but this strategy keeps its "
                    "masks there: it cannot be resumed exactly"
                )
            self.sparsifier.load_state_dict(state["sparsifier"])
        self.last_val = dict(state.get("last_val", {}))
        self.progress = p
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


def unreadable_skipped(data: DataBundle) -> int:
    """Images skipped as unreadable (``data.on_error=skip``) in both splits so far."""
    return sum(int(getattr(ds, "skipped", 0)) for ds in (data.train, data.val))
