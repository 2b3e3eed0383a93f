"""``train(cfg)``: everything ``train.py`` does, callable from tests and notebooks.

Order: validate the config -> set up devices/processes -> find the run dir (and the checkpoint
to resume) -> build data, model (then ``fst.sparsify``), optimizer, schedule -> restore ->
``Trainer.fit`` -> ``summary.json``. Only rank 0 writes files.
"""

from __future__ import annotations

import logging
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fst.engine import dist as fdist
from fst.engine.config import group_kwargs, sparsity_options, validate_config

log = logging.getLogger(__name__)


def check_data(cfg: DictConfig) -> None:
    """Run the dataset builder's ``check`` (files present, layout) before anything is built."""
    from fst.data import DATASETS

    check = getattr(DATASETS.get(cfg.data.name), "check", None)
    if check is not None:
        data = cfg.data
        kwargs = {str(k): None if OmegaConf.is_missing(data, k) else data[k] for k in data}
        check(**kwargs)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def git_commit() -> str | None:
    """Short hash of the checkout this file lives in (None outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _hydra_runtime() -> tuple[Path | None, str | None, str | None]:
    """(output dir, mode RUN/MULTIRUN, chosen experiment) of the current Hydra job, if any."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None, None
    mode = str(hc.mode).split(".")[-1] if hc.mode is not None else None
    return Path(hc.runtime.output_dir), mode, hc.runtime.choices.get("experiment")


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path(cfg.output_root) / str(cfg.name) / f"seed{cfg.seed}" / stamp


def resolve_resume(cfg: DictConfig, run_dir: Path, mode: str | None) -> tuple[Path, Path | None]:
    """The run dir to write to and the checkpoint to resume from (None: fresh run).

    ``resume=auto``: the newest loadable checkpoint of this run dir, else (single runs) of the
    sibling run dirs of the same name and seed (``${output_root}/${name}/seed${seed}/*``),
    newest first; a run found there is continued *in its own directory*. A multirun job only
    looks in its own directory (re-launch the sweep with the same ``hydra.sweep.dir``).
    ``resume=PATH``: that checkpoint file, or the newest loadable one in that directory.
    """
    from fst.engine.checkpoint import CheckpointError, find_resume

    resume = cfg.get("resume")
    if resume in (None, "", False):
        return run_dir, None
    if resume != "auto":
        path = Path(str(resume)).expanduser()
        if path.is_dir():
            found = find_resume(path)
            if found is None:
                raise CheckpointError(f"resume={resume}: no loadable checkpoint in that directory")
            return run_dir, found
        if not path.is_file():
            raise CheckpointError(f"resume={resume}: no such checkpoint file or run directory")
        return run_dir, path
    found = find_resume(run_dir)
    if found is not None:
        return run_dir, found
    if mode != "MULTIRUN" and run_dir.parent.is_dir():
        siblings = sorted(
            (d for d in run_dir.parent.iterdir() if d.is_dir() and d != run_dir),
            key=lambda d: d.name,
            reverse=True,
        )
        for d in siblings:
            found = find_resume(d)
            if found is not None:
                log.info("resume=auto: continuing the run in %s", d)
                return d, found
    log.info("resume=auto: no checkpoint found, starting a fresh run in %s", run_dir)
    return run_dir, None


def build_sparse_model(task, cfg: DictConfig) -> torch.nn.Module:
    """``task.build_model()`` then ``fst.sparsify`` with the sparsity and backend groups."""
    import fst

    model = task.build_model()
    return fst.sparsify(
        model,
        strategy=cfg.sparsity.strategy,
        backend=cfg.backend.name,
        decay=float(cfg.sparsity.decay),
        exclude=list(cfg.sparsity.exclude),
        **sparsity_options(cfg),
    )


def run_meta(cfg: DictConfig, num_classes: int | None) -> dict[str, Any]:
    """What a checkpoint records about the run, compared on resume and shown by eval.py."""
    return {
        "task": str(cfg.task),
        "model": str(cfg.model.name),
        "strategy": str(cfg.sparsity.strategy),
        "backend": str(cfg.backend.name),
        "dataset": str(cfg.data.name),
        "num_classes": num_classes,
    }


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; returns the summary written to ``<run dir>/summary.json``."""
    from fst.engine.checkpoint import load_checkpoint
    from fst.engine.optim import OPTIMIZERS, SCHEDULERS
    from fst.engine.trainer import Trainer, unreadable_skipped
    from fst.engine.validate import check_run_config, resolve_device
    from fst.logging import MaskTracker, RunLogger
    from fst.tasks import TASKS

    validate_config(cfg)
    check_data(cfg)
    fdist.export_slurm_env()
    check_run_config(cfg)
    device = resolve_device(str(cfg.trainer.device))
    dist = fdist.init_distributed(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    tc = cfg.trainer
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    hydra_dir, mode, experiment = _hydra_runtime()
    start = Path(run_dir) if run_dir is not None else (hydra_dir or default_run_dir(cfg))
    if dist.is_main:
        start, ckpt_path = resolve_resume(cfg, start, mode)
    else:
        ckpt_path = None
    # Every rank must agree (their Hydra timestamps may differ by a second).
    start, ckpt_path = fdist.broadcast_object((start, ckpt_path))
    run_dir = Path(start)
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)

    # Model initialisation must be identical on every rank; augmentation streams differ by rank.
    seed_everything(int(cfg.seed))
    task = TASKS.get(cfg.task)(cfg)
    data = task.build_data()
    model = build_sparse_model(task, cfg)
    num_classes = getattr(task, "num_classes", None)
    model.to(device)
    if tc.channels_last:
        model.to(memory_format=torch.channels_last)
    if tc.sync_batchnorm and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)

    optimizer = OPTIMIZERS.get(cfg.optim.name)(model, **group_kwargs(cfg.optim))
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta = run_meta(cfg, num_classes)
    logger = None
    trainer = Trainer(
        task=task,
        model=model,
        data=data,
        optimizer=optimizer,
        scheduler=None,  # set below, once steps per epoch are known
        scaler=torch.amp.GradScaler(
            device.type, enabled=device.type == "cuda" and str(tc.precision) == "16"
        ),
        device=device,
        dist=dist,
        trainer_cfg=tc,
        global_batch=int(cfg.data.batch_size),
        val_batch_size=int(cfg.data.get("val_batch_size") or cfg.data.batch_size),
        num_workers=int(cfg.data.get("num_workers", 0)),
        pin_memory=bool(cfg.data.get("pin_memory", False)),
        seed=int(cfg.seed),
        run_dir=run_dir,
        logger=None,
        mask_tracker=MaskTracker(),
        diagnostics_every=int(cfg.logger.get("diagnostics_every_n_steps", 0) or 0),
        state_extra={"config": resolved, "meta": meta},
    )
    trainer.scheduler = SCHEDULERS.get(cfg.sched.name)(
        optimizer,
        total_steps=trainer.epochs * trainer.steps_per_epoch,
        steps_per_epoch=trainer.steps_per_epoch,
        **group_kwargs(cfg.sched),
    )
    if ckpt_path is not None:
        state = load_checkpoint(ckpt_path)
        trainer.load_state_dict(state, source=str(ckpt_path))
        log.info(
            "resumed from %s at epoch %d, step %d of %d (global step %d)",
            ckpt_path,
            trainer.progress.epoch + 1,
            trainer.progress.step_in_epoch,
            trainer.steps_per_epoch,
            trainer.progress.global_step,
        )
        del state
    else:
        seed_everything(int(cfg.seed) + dist.rank)
    # [issue 15 hook] torch.compile after fst.sparsify, in place: parameter and state_dict
    # names stay the eager model's (checkpoints, resume, eval.py); before the DDP wrapper.
    from fst.compile import compile_model

    compile_model(model, tc.get("compile", False))
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        trainer.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    wandb_cfg = cfg.logger.get("wandb")
    logger = RunLogger(
        run_dir,
        resolved,
        name=str(cfg.name),
        wandb_cfg=OmegaConf.to_container(wandb_cfg, resolve=True) if wandb_cfg else None,
        active=dist.is_main,
        resume_step=trainer.progress.global_step if ckpt_path is not None else None,
    )
    trainer.logger = logger
    if dist.is_main:
        (run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(resolved))
        import fst

        log.info("run dir: %s", run_dir.resolve())
        log.info(
            "model (%s, strategy %s):\n%s",
            cfg.model.name,
            cfg.sparsity.strategy,
            fst.summary(model),
        )
        log.info(
            "%d train / %d val samples; %d steps/epoch x %d epochs; global batch %d = %d "
            "process(es) x %d accumulation x %d",
            len(data.train),
            len(data.val),
            trainer.steps_per_epoch,
            trainer.epochs,
            trainer.global_batch,
            dist.world_size,
            trainer.accum,
            trainer.micro_batch,
        )
    exit_code = 1
    try:
        final = trainer.fit()
        exit_code = 0
    finally:
        if exit_code:
            logger.finish(exit_code)
    p = trainer.progress
    pm = task.primary_metric
    summary = {
        "name": str(cfg.name),
        "experiment": experiment,
        "task": str(cfg.task),
        "model": str(cfg.model.name),
        "dataset": str(cfg.data.name),
        "strategy": str(cfg.sparsity.strategy),
        "backend": str(cfg.backend.name),
        "seed": int(cfg.seed),
        "epochs": trainer.epochs,
        "steps": p.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "global_batch_size": trainer.global_batch,
        "world_size": dist.world_size,
        "primary_metric": pm,
        **{f"val/{k}": v for k, v in final.items()},
        f"best/val/{pm}": p.best_value,
        "best_epoch": None if p.best_epoch is None else p.best_epoch + 1,
        "final": {f"val/{k}": v for k, v in final.items()},
        "train_time_s": round(p.train_time_s, 2),
        "nonfinite_skipped": trainer.guard.skipped,
        "unreadable_images_skipped": unreadable_skipped(data),
        "commit": git_commit(),
        "device": str(device),
        "run_dir": str(run_dir.resolve()),
        "config_path": str((run_dir / "config_resolved.yaml").resolve()),
        "checkpoint": str((run_dir / "checkpoints" / "last.pt").resolve()),
        "embedded_data": str(cfg.data.name) in ("digits", "digits_hard", "shapes"),
    }
    if dist.is_main:
        logger.write_summary(summary)
        logger.finish(0)
        log.info(
            "final val/%s = %.4g (best %.4g at epoch %s); summary: %s",
            pm,
            final.get(pm, float("nan")),
            p.best_value if p.best_value is not None else float("nan"),
            summary["best_epoch"],
            run_dir / "summary.json",
        )
    fdist.barrier()
    return summary
