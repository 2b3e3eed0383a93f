"""``train(cfg)``: everything ``train.py`` does, callable from tests and notebooks.

One path, in order:

1. ``prepare``: check the config (shape, values, this machine), find the checkpoint to resume
   and reconcile its settings with the config (``fst.engine.resume``), check the data files,
   claim the run directory (``fst.engine.rundir``). Nothing is built and nothing written before
   these pass; a failed launch leaves no run directory behind.
2. ``build_parts``: data, model (then ``fst.sparsify``), sampler, optimizer, schedule, scaler,
   DDP wrapper, logger: each built once, from the config, and handed to the ``Trainer``.
3. Restore the checkpoint, ``Trainer.fit``, write ``summary.json``.

Only rank 0 resolves the run directory and writes files; the other ranks log warnings only.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import fst
from fst.compile import compile_model
from fst.data.images import unreadable_skipped
from fst.engine import dist as fdist
from fst.engine import resume as fresume
from fst.engine import validate as fvalidate
from fst.engine.checkpoint import load_checkpoint, nonfinite_entries
from fst.engine.config import RunConfig, missing_keys, resolve_config
from fst.engine.faults import PREEMPTED_MARKER
from fst.engine.optim import OPTIMIZERS, SCHEDULERS
from fst.engine.record import EMBEDDED_DATASETS, data_fingerprint, run_meta, run_record
from fst.engine.rundir import claim, remove_if_empty
from fst.engine.sampler import ResumableSampler
from fst.engine.trainer import RunEnv, RunParts, Trainer, steps_per_epoch
from fst.logging import MaskTracker, RunLogger
from fst.sparsifier import build_sparsifier
from fst.tasks import TASKS
from fst.types import ConfigError, FstError

log = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


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


def hydra_runtime() -> tuple[Path | None, str | None, str | None]:
    """(output dir, mode RUN/MULTIRUN, chosen experiment) of the current Hydra job, if any."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None, None, None
    mode = str(hc.mode).split(".")[-1] if hc.mode is not None else None
    return Path(hc.runtime.output_dir), mode, hc.runtime.choices.get("experiment")


def default_run_dir(cfg: DictConfig) -> Path:
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path(cfg.output_root) / str(cfg.name) / f"seed{cfg.seed}" / stamp


def build_model(task, run: RunConfig) -> torch.nn.Module:
    """The task's model sparsified by the run's plan: ``fst.sparsify`` with the ``Strategy``
    and ``Backend`` built once by ``resolve_config`` (training and ``eval.py``)."""
    sp = run.sparsity
    try:
        return fst.sparsify(
            task.build_model(),
            strategy=sp.strategy,
            backend=run.backend.impl,
            decay=sp.decay,
            exclude=list(sp.exclude),
        )
    except ValueError as e:
        if "exclude pattern" not in str(e):
            raise
        raise ConfigError(
            f"sparsity.exclude={list(sp.exclude)}: {e}; fix the patterns (fnmatch, "
            "e.g. sparsity.exclude=[conv1,fc]) or use sparsity.exclude=[]"
        ) from None


def place_model(model: torch.nn.Module, run: RunConfig, device: torch.device, compile=None):
    """Move ``model`` to ``device`` (channels_last if configured) and compile it in place
    (``compile``: a mode, else ``trainer.compile``), after its weights are in (training and
    ``eval.py``): parameter and state_dict names stay the eager model's (``fst.compile``)."""
    model.to(device)
    if run.trainer.channels_last:
        model.to(memory_format=torch.channels_last)
    return compile_model(model, run.trainer.compile if compile is None else compile)


# --------------------------------------------------------------------------------------------
# 1. prepare: checks, resume, run directory
# --------------------------------------------------------------------------------------------


@dataclass
class RunSetup:
    """The outcome of ``prepare``: the final config, where the run writes, what it resumes."""

    cfg: DictConfig
    run: RunConfig  # cfg, checked and typed
    device: torch.device
    dist: fdist.DistInfo
    run_dir: Path
    claim: Any = None  # fst.engine.rundir.RunDir on rank 0
    resume: Any = None  # fst.engine.resume.ResumePoint on rank 0; its path on every rank
    resume_path: Path | None = None
    experiment: str | None = None
    launch_dir: Path | None = None  # the directory Hydra made for this launch


def _check_complete(cfg: DictConfig, missing: list[str], searched: str | None) -> None:
    """Fail naming every value still unset (``???``), with the dataset's own layout help."""
    if not missing:
        return
    why = ""
    if searched is not None:
        why = (
            f"resume=auto found no checkpoint of run {cfg.name!r} seed {cfg.seed} ({searched}), "
            "so nothing supplies the values this command leaves unset. "
        )
    if "data.root" in missing:
        try:
            fvalidate.check_data(cfg.data)  # the dataset's check explains its expected layout
        except ConfigError as e:
            raise ConfigError(why + str(e)) from None
    shown = ", ".join(missing)
    raise ConfigError(
        f"{why}{shown} {'is' if len(missing) == 1 else 'are'} not set (??? in the composed "
        f"config); pass {' '.join(f'{k}=...' for k in missing)} on the command line"
    )


def _prepare_main(cfg: DictConfig, start: Path, mode: str | None, dist) -> tuple[Any, Any]:
    """Rank 0: resume point, completed config, data check, run directory claim."""
    point = fresume.locate(cfg, start, mode)
    missing = missing_keys(cfg)
    if point is not None:
        fresume.reconcile(cfg, point, missing)
        missing = missing_keys(cfg)
    searched = None
    if point is None and cfg.get("resume") == "auto":
        dirs = fresume.auto_candidates(cfg, start, mode)
        searched = "searched " + ", ".join(str(d) for d in dirs[:4])
    _check_complete(cfg, missing, searched)
    fvalidate.check_data(cfg.data)
    in_place = point is not None and point.run_dir is not None
    rundir = claim(point.run_dir if in_place else start, resume=in_place)
    rundir.stop_at = _output_root(cfg)
    return point, rundir


def prepare(cfg: DictConfig, run_dir: str | Path | None = None) -> RunSetup:
    """Step 1 (see the module docstring). Raises ``FstError`` naming the problem and the fix;
    the directory Hydra made for this launch is removed again when nothing was written to it."""
    try:
        return _prepare(cfg, run_dir)
    except BaseException:
        remove_if_empty(hydra_runtime()[0], stop_at=_output_root(cfg))
        raise


def _output_root(cfg: DictConfig) -> Path | None:
    """``output_root`` if it can be read (the limit up to which empty run dirs are removed)."""
    try:
        return Path(str(cfg.output_root))
    except Exception:  # noqa: BLE001 - a broken config must not hide the real error
        return None


def _prepare(cfg: DictConfig, run_dir: str | Path | None) -> RunSetup:
    run = resolve_config(cfg)
    fdist.export_slurm_env()
    fvalidate.check_run_config(cfg)  # device, backend, precision, batch split: same on every rank
    device = fvalidate.resolve_device(run.trainer.device)
    dist = fdist.init_distributed(device.type)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
    launch_dir, mode, experiment = hydra_runtime()
    start = Path(run_dir) if run_dir is not None else (launch_dir or default_run_dir(cfg))

    point = rundir = error = None
    if dist.is_main:
        try:
            point, rundir = _prepare_main(cfg, start, mode, dist)
        except FstError as e:
            error = e
    # Every rank needs rank 0's outcome: the run dir, the checkpoint, values filled from it.
    filled_keys = [f.split("=", 1)[0] for f in (point.filled if point else [])]
    filled = {k: OmegaConf.select(cfg, k) for k in filled_keys}
    shared = (
        None if error is None else str(error),
        str(rundir.path) if rundir else None,
        str(point.path) if point else None,
        filled,
    )
    message, chosen, ckpt, filled = fdist.broadcast_object(shared)
    if message is not None:
        if error is not None:
            raise error
        raise FstError(message)  # other ranks: rank 0 reports it
    for key, value in filled.items():
        OmegaConf.update(cfg, key, value, merge=False)
    if filled:  # values taken from the checkpoint: type the completed config
        same_plan = not any(k.startswith("sparsity.") for k in filled)
        run = resolve_config(cfg, sparsity=run.sparsity if same_plan else None)
    chosen = Path(chosen)
    if launch_dir is not None and launch_dir.resolve() != chosen.resolve():
        # Hydra's directory for this launch, unused (or another rank's)
        remove_if_empty(launch_dir, stop_at=_output_root(cfg))
    return RunSetup(
        cfg=cfg,
        run=run,
        device=device,
        dist=dist,
        run_dir=chosen,
        claim=rundir,
        resume=point,
        resume_path=Path(ckpt) if ckpt else None,
        experiment=experiment,
        launch_dir=launch_dir,
    )


# --------------------------------------------------------------------------------------------
# 2. build the run's parts
# --------------------------------------------------------------------------------------------


def build_parts(cfg: DictConfig, setup: RunSetup):
    """Data, model, sampler, optimizer, schedule, scaler, DDP wrapper and logger, each built once
    from the typed config ``setup.run``. Returns ``(RunParts, RunEnv)`` for ``Trainer``."""
    run, device, dist, tc = setup.run, setup.device, setup.dist, setup.run.trainer
    # Model initialisation must be identical on every rank; augmentation streams differ by rank.
    seed_everything(run.seed)
    task = TASKS.get(run.task)(run)
    data = task.build_data()
    model = build_model(task, run)
    if tc.sync_batchnorm and dist.enabled:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # compiled in place before the DDP wrapper (fst.compile)
    model = place_model(model, run, device)

    global_batch = run.loader.batch_size
    sampler = ResumableSampler(
        len(data.train),
        global_batch,
        seed=run.seed,
        rank=dist.rank,
        world_size=dist.world_size,
    )
    steps = steps_per_epoch(sampler, tc.limit_train_batches)
    optimizer = OPTIMIZERS.get(run.optim.name)(model, **run.optim.kwargs)
    scheduler = SCHEDULERS.get(run.sched.name)(
        optimizer, total_steps=tc.epochs * steps, steps_per_epoch=steps, **run.sched.kwargs
    )
    scaler = torch.amp.GradScaler(
        device.type, enabled=device.type == "cuda" and tc.precision == "16"
    )
    # The sparsifier of strategies whose masks/gradients live across steps (None for stateless
    # ones), built beside the optimizer; the trainer steps it and checkpoints it.
    sparsifier = build_sparsifier(
        model,
        optimizer,
        strategy=run.sparsity.strategy,
        total_steps=tc.epochs * steps,
        steps_per_epoch=steps,
        seed=run.seed,
        **run.sparsity.schedule,
    )
    if dist.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    # W&B dashboards group by flat keys (run.strategy, run.dataset, ...): a W&B sweep locks the
    # top-level keys it sets (sparsity=fst), so the nested sparsity.strategy may not arrive.
    wandb_config = {**resolved, "run": {**run_record(run), "seed": run.seed}}
    wandb_cfg = run.logger.wandb
    resume_step = None
    if setup.resume is not None:
        resume_step = int(setup.resume.state.get("global_step", 0))
    logger = RunLogger(
        setup.run_dir,
        wandb_config,
        name=run.name,
        wandb_cfg=dataclasses.asdict(wandb_cfg) if wandb_cfg else None,
        active=dist.is_main,
        resume_step=resume_step,
    )
    parts = RunParts(
        task=task,
        data=data,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        sampler=sampler,
        logger=logger,
        mask_tracker=MaskTracker(),
        sparsifier=sparsifier,
    )
    env = RunEnv(
        device=device,
        dist=dist,
        run_dir=setup.run_dir,
        seed=run.seed,
        loader=run.loader,
        diagnostics_every=run.logger.diagnostics_every_n_steps,
        checkpoint_extra={
            "config": resolved,
            "meta": run_meta(run, getattr(task, "num_classes", None)),
            "data_fingerprint": {
                "train": data_fingerprint(data.train),
                "val": data_fingerprint(data.val),
            },
        },
    )
    return parts, env


# --------------------------------------------------------------------------------------------
# files of the run directory
# --------------------------------------------------------------------------------------------


def _attach_log_file(run_dir: Path) -> logging.Handler:
    # A file name that is not valid UTF-8 (surrogate escapes) is written escaped, not dropped
    # with a "--- Logging error ---" traceback.
    handler = logging.FileHandler(
        run_dir / "train.log", encoding="utf-8", errors="backslashreplace"
    )
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    return handler


def _write_config_files(cfg: DictConfig, run_dir: Path, resumed_step: int | None) -> None:
    """``config_resolved.yaml`` (the settings in force) and, for a new run, ``.hydra/``. A
    resumed run whose settings changed keeps the previous file as ``config_resolved.step<N>``
    (never overwritten), and a finished run's ``summary.json`` as ``summary.step<N>.json``."""
    resolved = OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True))
    path = run_dir / "config_resolved.yaml"
    if resumed_step is not None and path.is_file() and path.read_text() != resolved:
        kept = run_dir / f"config_resolved.step{resumed_step}.yaml"
        # Already there: an earlier resume from this same step was stopped before it kept a
        # step, so the current file produced nothing; the record of steps 1..N stays as is.
        if not kept.exists():
            path.replace(kept)
    path.write_text(resolved)
    summary = run_dir / "summary.json"
    if resumed_step is not None and summary.is_file():
        # A finished run continued (more epochs): its summary describes the shorter run; keep
        # it under the step it describes until this run writes its own.
        summary.replace(run_dir / f"summary.step{resumed_step}.json")
    hydra_dir = run_dir / ".hydra"
    if hydra_dir.exists():
        return
    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    hydra_dir.mkdir()
    task_cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    task_cfg.pop("hydra", None)
    (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(task_cfg))
    (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(list(hc.overrides.task)))
    (hydra_dir / "hydra.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"hydra": hc})))


def _log_to_file_only(handler: logging.Handler | None, message: str) -> None:
    """Record a failure in ``train.log`` (the console gets it from ``fst.engine.cli``)."""
    if handler is not None:
        record = logging.LogRecord(__name__, logging.ERROR, __file__, 0, message, None, None)
        handler.handle(record)


# --------------------------------------------------------------------------------------------
# 3. train
# --------------------------------------------------------------------------------------------


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; returns the summary written to ``<run dir>/summary.json``.

    Raises ``FstError`` (bad config, data or checkpoint; divergence; disk full) with the cause
    and the fix in its message; exits with status 75 (preempted) or 130 (Ctrl-C) after writing
    ``last.pt``.
    """
    root = logging.getLogger()
    level = root.level
    setup = prepare(cfg, run_dir)
    if not setup.dist.is_main:
        root.setLevel(logging.WARNING)  # rank 0 reports; the others only warn
    handler, started = None, False
    try:
        if setup.dist.is_main:
            handler = _attach_log_file(setup.run_dir)
            if setup.resume is not None:
                for item in setup.resume.filled:
                    log.info("resume: %s taken from the checkpoint's config", item)
                if setup.resume.changes:
                    log.info(
                        "resume: applying changed settings: %s", "; ".join(setup.resume.changes)
                    )
        parts, env = build_parts(cfg, setup)
        run = setup.run
        if setup.resume_path is None and run.model.kwargs.get("pretrained"):
            _check_finite_pretrained(run, parts.model)
        trainer = Trainer(parts, setup.run.trainer, env)
        resumed_step = None
        if setup.resume_path is not None:
            state = setup.resume.state if setup.resume else load_checkpoint(setup.resume_path)
            _check_same_data(run, state, env.checkpoint_extra["data_fingerprint"], setup)
            trainer.load_state_dict(state, source=str(setup.resume_path))
            resumed_step = trainer.progress.global_step
            log.info(
                "resumed from %s at epoch %d, step %d of %d (global step %d)",
                setup.resume_path,
                trainer.progress.epoch + 1,
                trainer.progress.step_in_epoch,
                trainer.steps_per_epoch,
                resumed_step,
            )
            if setup.resume is not None:
                setup.resume.state = None  # free the checkpoint's memory
            del state
        else:
            seed_everything(setup.run.seed + setup.dist.rank)
        if setup.dist.is_main:
            (setup.run_dir / PREEMPTED_MARKER).unlink(missing_ok=True)  # continued now
            _write_config_files(cfg, setup.run_dir, resumed_step)
            _log_header(run, trainer, parts)
        started = True
        try:
            final = trainer.fit()
        except BaseException:
            parts.logger.finish(1)
            raise
        summary = _summary(run, setup, trainer, final)
        if setup.dist.is_main:
            parts.logger.write_summary(summary)
            parts.logger.finish(0)
            log.info("%s", _final_line(summary))
        fdist.barrier()
        return summary
    except BaseException as e:
        if not isinstance(e, SystemExit | KeyboardInterrupt):
            _log_to_file_only(handler, f"run failed: {type(e).__name__}: {e}")
        if handler is not None:
            handler.close()
            root.removeHandler(handler)
            handler = None
        if not started and setup.claim is not None:
            if setup.claim.discard():
                log.info("removed %s: the run failed before training started", setup.run_dir)
        raise
    finally:
        if handler is not None:
            handler.close()
            root.removeHandler(handler)
        if setup.claim is not None:
            setup.claim.release()
        root.setLevel(level)


def _check_finite_pretrained(run: RunConfig, model: torch.nn.Module) -> None:
    """Weights loaded from ``model.pretrained`` hold no NaN/Inf (else the first step would be
    reported as divergence, with advice about the learning rate)."""
    bad = nonfinite_entries(model.state_dict())
    if bad:
        raise ConfigError(
            f"model.pretrained={run.model.kwargs['pretrained']} holds non-finite values (NaN/Inf) in "
            f"{len(bad)} tensor(s), e.g. {bad[0]}; these weights are broken: pass other "
            "weights, or model.pretrained=null to start from scratch"
        )


def _check_same_data(run: RunConfig, state: dict, now: dict, setup: RunSetup) -> None:
    """A resume reads the data its checkpoint was trained on (``data.root`` may move it, not
    replace it): the files and labels must match the checkpoint's fingerprint."""
    saved = state.get("data_fingerprint")
    if not saved:  # a checkpoint from before the fingerprint: nothing to compare
        return
    for split in ("train", "val"):
        a, b = saved.get(split) or {}, now.get(split) or {}
        if a and b and a != b:
            what = (
                f"{a.get('samples')} vs {b.get('samples')} samples"
                if a.get("samples") != b.get("samples")
                else "the same number of samples but other files or labels"
            )
            raise fresume.ResumeError(
                f"cannot resume {setup.resume_path}: data.root={run.data.kwargs.get('root')} holds "
                f"other {split} data than the checkpoint's run ({what}); point data.root at the "
                "data the run was trained on, or start a new run (resume=null)"
            )


def _final_line(summary: dict[str, Any]) -> str:
    """The run's one result line (``train.py`` prints nothing else): the final and best value
    of the primary metric and where the run's files are."""
    pm = summary["primary_metric"]
    value, best = summary.get(f"val/{pm}"), summary.get(f"best/val/{pm}")
    if value is None:
        return f"no validation metrics; run dir: {summary['run_dir']}"
    best_text = "" if best is None else f" (best {best:.4g} at epoch {summary['best_epoch']})"
    return f"final val/{pm}: {value:.4g}{best_text}; run dir: {summary['run_dir']}"


def _log_header(run: RunConfig, trainer, parts) -> None:
    """Run dir, the model's sparsity in one line (the per-layer table goes to
    ``<run dir>/summary.txt``, and to the console with ``trainer.print_summary=true``), data."""
    log.info("run dir: %s", trainer.run_dir.resolve())
    table = fst.summary(parts.model.module if trainer.dist.enabled else parts.model)
    path = trainer.run_dir / "summary.txt"
    model, strategy = run.model.name, run.sparsity.strategy.name
    path.write_text(f"model {model}, strategy {strategy}\n{table}\n")
    log.info("fst.summary: %s; full table in %s", table.headline(), path.resolve())
    if trainer.cfg.print_summary:
        log.info("model (%s, strategy %s):\n%s", model, strategy, table)
    log.info(
        "%d train / %d val samples; %d steps/epoch x %d epochs; global batch %d = %d "
        "process(es) x %d accumulation x %d",
        len(parts.data.train),
        len(parts.data.val),
        trainer.steps_per_epoch,
        trainer.epochs,
        trainer.global_batch,
        trainer.dist.world_size,
        trainer.accum,
        trainer.micro_batch,
    )


def _summary(run: RunConfig, setup: RunSetup, trainer, final: dict[str, float]) -> dict[str, Any]:
    p, run_dir = trainer.progress, setup.run_dir
    pm = trainer.task.primary_metric
    return {
        **run_record(run),
        "experiment": setup.experiment,
        "seed": run.seed,
        "epochs": trainer.epochs,
        "steps": p.global_step,
        "steps_per_epoch": trainer.steps_per_epoch,
        "global_batch_size": trainer.global_batch,
        "world_size": setup.dist.world_size,
        "primary_metric": pm,
        **{f"val/{k}": v for k, v in final.items()},
        f"best/val/{pm}": p.best_value,
        "best_epoch": None if p.best_epoch is None else p.best_epoch + 1,
        "final": {f"val/{k}": v for k, v in final.items()},
        "train_time_s": round(p.train_time_s, 2),
        "nonfinite_skipped": trainer.guard.skipped,
        "unreadable_images_skipped": unreadable_skipped(trainer.data.train, trainer.data.val),
        "resumed_from": str(setup.resume_path) if setup.resume_path else None,
        "commit": git_commit(),
        "device": str(setup.device),
        "run_dir": str(run_dir.resolve()),
        "config_path": str((run_dir / "config_resolved.yaml").resolve()),
        "checkpoint": str((run_dir / "checkpoints" / "last.pt").resolve()),
        "embedded_data": run.data.name in EMBEDDED_DATASETS,
    }
