"""Resuming a run: which checkpoint, what it supplies, which settings may change.

``locate(cfg, run_dir, mode)`` finds the checkpoint ``resume=`` asks for:

* ``resume=auto``: the newest loadable checkpoint (``last.pt``, falling back over every surviving
  one) of *this run*, i.e. written with the same ``name`` and ``seed`` and the same resolved
  settings (apart from ``MAY_CHANGE``): first in the launch's own directory, then (single runs)
  in the sibling run directories next to it and under ``${output_root}/${name}/seed${seed}/``,
  the most recently written first (checkpoint and metrics file times, not the directory's
  timestamp name: a node whose clock was behind names its run as older). A sibling with the
  same name but other settings (say ``model.width=16`` against 64: the default name does not
  show the width) is skipped with a warning naming the differences, so it is not continued by
  mistake. The run continues in its own directory.
  A multirun job only looks in its own directory (re-launch the sweep with the same
  ``hydra.sweep.dir``). Nothing found: a fresh run.
* ``resume=PATH``: that checkpoint file, or the newest loadable one in that run directory; the
  continued run writes to a new directory (the source run is left as it is).

``reconcile(cfg, point)`` then compares the checkpoint's saved config with this run's:

* values this run leaves unset (``???``, e.g. ``data.root`` with ``+experiment=fst_resnet18
  resume=auto``) are taken from the checkpoint;
* settings matching ``MAY_CHANGE`` may differ and take effect (the trainer re-applies optimizer
  hyperparameters over the checkpoint's and rebuilds the schedule at the checkpoint's step);
* every other difference (model, data, the whole sparsity plan: strategy, options, ``decay``,
  ``exclude``; seed, batch size, epoch length, loss, optimizer type) is refused naming each
  setting, both values and the fix.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fst.engine.checkpoint import (
    CHECKPOINT_DIRNAME,
    RESUME_META_KEYS,
    CheckpointError,
    check_meta_compatible,
    load_checkpoint,
    load_resume,
)
from fst.engine.record import run_meta
from fst.strategies import OPTIONS, STRATEGIES
from fst.types import FstError

log = logging.getLogger(__name__)

#: Settings that may change when a run is resumed, and how the change takes effect.
MAY_CHANGE: dict[str, str] = {
    "optim.lr": "new base learning rate; the schedule continues at the checkpoint's step with it",
    "optim.weight_decay": "set on every parameter group",
    "optim.momentum": "set on every parameter group",
    "optim.nesterov": "set on every parameter group",
    "optim.betas": "set on every parameter group",
    "sched.*": "the schedule is rebuilt from the new settings, continued at the checkpoint's step",
    "trainer.epochs": "training continues to the new epoch count (a cosine schedule re-stretches)",
    "trainer.grad_clip_norm": "clipping from the next step on",
    "trainer.accumulate_grad_batches": "same global batch (data.batch_size), split differently",
    "trainer.precision": "autocast from the next step on",
    "trainer.device": "where the same computation runs",
    "trainer.deterministic": "kernel choice only",
    "trainer.channels_last": "memory layout only",
    "trainer.sync_batchnorm": "multi-GPU BatchNorm statistics",
    "trainer.limit_val_batches": "validation size",
    "trainer.val_every_n_epochs": "validation frequency",
    "trainer.log_every_n_steps": "logging frequency",
    "trainer.checkpoint_every_n_steps": "checkpoint frequency",
    "trainer.save_checkpoints": "checkpoint writing",
    "trainer.keep_checkpoints": "which checkpoint files are kept",
    "trainer.progress_bar": "display",
    "trainer.compile": "the same computation, compiled (torch.compile) or eager",
    "trainer.num_threads": "CPU threads only",
    "trainer.print_summary": "display",
    "trainer.skip_nonfinite": "non-finite policy from the next step on",
    "trainer.max_nonfinite_skips": "non-finite policy from the next step on",
    "trainer.debug_*": "fault injection (tests)",
    "data.root": "the same data read from another place (its files and labels are compared)",
    "data.num_workers": "loading only",
    "data.pin_memory": "loading only",
    "data.val_batch_size": "evaluation batching only",
    "data.on_error": "unreadable-file policy",
    "backend.*": "backends compute the same function",
    "logger.*": "logging only",
    "name": "label only",
    "model.label": "label only (the model's part of the default run name)",
    "model.pretrained_strict": "read only when weights come from model.pretrained, not on resume",
    "output_root": "where new runs go",
    "resume": "",
}


class ResumeError(FstError):
    """A checkpoint cannot be continued with this run's config."""


def may_change(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in MAY_CHANGE)


@dataclass
class ResumePoint:
    """A checkpoint to continue from: ``path`` and its loaded ``state``; ``run_dir`` is the
    checkpoint's run directory when the run continues there (``resume=auto``), else None."""

    path: Path
    state: dict
    run_dir: Path | None = None
    changes: list[str] = field(default_factory=list)  # "key: old -> new", allowed and applied
    filled: list[str] = field(default_factory=list)  # "key=value" taken from the checkpoint


def _same_run(state: dict, cfg: DictConfig) -> bool:
    saved = state.get("config") or {}
    return saved.get("name", cfg.name) == cfg.name and saved.get("seed", cfg.seed) == cfg.seed


def auto_candidates(cfg: DictConfig, run_dir: Path, mode: str | None) -> list[Path]:
    """Directories ``resume=auto`` searches, in order (see the module docstring)."""
    dirs = [run_dir]
    if mode != "MULTIRUN":
        parents = [run_dir.parent, Path(str(cfg.output_root)) / str(cfg.name) / f"seed{cfg.seed}"]
        for parent in dict.fromkeys(p.resolve() for p in parents if p.is_dir()):
            sib = sorted((d for d in parent.iterdir() if d.is_dir()), key=_last_written)
            dirs += [d for d in reversed(sib) if d.resolve() != run_dir.resolve()]
    return list(dict.fromkeys(dirs))


def _last_written(run_dir: Path) -> tuple[float, str]:
    """When a run last wrote its progress (its newest checkpoint or metrics line, else the
    directory itself), as recorded by the file system: the directory name is a timestamp of
    the clock of whichever node started the run, which may be behind."""
    times = []
    for p in (*run_dir.glob(f"{CHECKPOINT_DIRNAME}/*.pt"), run_dir / "metrics.jsonl", run_dir):
        try:
            times.append(p.stat().st_mtime)
        except OSError:
            pass
    return (max(times, default=0.0), run_dir.name)


def locate(cfg: DictConfig, run_dir: Path, mode: str | None = None) -> ResumePoint | None:
    """The checkpoint ``cfg.resume`` asks for (None: a fresh run)."""
    resume = cfg.get("resume")
    if resume in (None, "", False):
        return None
    if resume != "auto":
        path = Path(str(resume)).expanduser()
        if path.is_dir():
            found = load_resume(path)
            if found is None:
                raise CheckpointError(
                    f"resume={resume}: no loadable checkpoint in that directory (looked for "
                    "checkpoints/last.pt, last.prev.pt, best.pt, *.pt); pass a checkpoint file, "
                    "or resume=null for a new run"
                )
            return ResumePoint(*found)
        if not path.is_file():
            raise CheckpointError(
                f"resume={resume}: no such checkpoint file or run directory; pass a checkpoint "
                "file, a run directory, resume=auto (the newest run of this name and seed) or "
                "resume=null"
            )
        return ResumePoint(path, load_checkpoint(path))
    for d in auto_candidates(cfg, run_dir, mode):
        found = load_resume(d)
        if found is None:
            continue
        if not _same_run(found[1], cfg):
            log.info("resume=auto: %s belongs to another run (name/seed differ), skipped", d)
            continue
        refused = _compare(cfg, found[1].get("config"))[1] if d != run_dir else []
        if refused:
            log.warning(
                "resume=auto: %s has this run's name but %d resolved setting(s) differ (%s), "
                "skipped; to continue it, resume=%s with its settings",
                d,
                len(refused),
                "; ".join(refused[:3]) + ("; ..." if len(refused) > 3 else ""),
                d,
            )
            continue
        if d != run_dir:
            log.info("resume=auto: continuing the run in %s", d)
        return ResumePoint(found[0], found[1], run_dir=d)
    log.info("resume=auto: no checkpoint of run %s seed %s found, starting it", cfg.name, cfg.seed)
    return None


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fill_missing(cfg: DictConfig, saved: dict, keys: list[str]) -> list[str]:
    """Set each of ``keys`` (unset in ``cfg``) from the checkpoint's config ``saved``."""
    filled = []
    for key in keys:
        value = OmegaConf.select(OmegaConf.create(saved), key, default=None)
        if value is not None:
            OmegaConf.update(cfg, key, value, merge=False)
            filled.append(key)
    return filled


def reconcile(cfg: DictConfig, point: ResumePoint, missing: list[str]) -> None:
    """Fill ``missing`` keys of ``cfg`` from the checkpoint, then allow or refuse every other
    difference (see the module docstring). Records ``point.filled`` and ``point.changes``."""
    saved = point.state.get("config")
    source = str(point.path)
    if not saved:  # not written by fst's trainer, or by a version without the config
        check_meta_compatible(
            point.state.get("meta"), run_meta(cfg, None), keys=RESUME_META_KEYS, source=source
        )
        return
    point.filled = [f"{k}={cfg_select(cfg, k)}" for k in fill_missing(cfg, saved, missing)]
    point.changes, refused = _compare(cfg, saved)
    if refused:
        raise ResumeError(
            f"cannot resume {source}: {len(refused)} setting(s) differ from the checkpoint's "
            "and may not change in the middle of a run (they define the model, the data, the "
            "sparsity plan or the step count): "
            + "; ".join(refused)
            + ". Resume with the checkpoint's values (drop those overrides), or start a new run "
            "(resume=null). Settings that may change on resume: "
            + ", ".join(k for k in MAY_CHANGE if k != "resume")
            + "."
        )


def _compare(cfg: DictConfig, saved: dict | None) -> tuple[list[str], list[str]]:
    """``(changes, refused)``: this run's resolved settings against a checkpoint's config
    ``saved``: allowed differences (``MAY_CHANGE``) and refused ones, each "key: a -> b"."""
    if not saved:
        return [], []
    old = _flatten({k: v for k, v in saved.items() if k != "hydra"})
    new = _flatten(
        {
            k: v
            for k, v in OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False).items()
            if k != "hydra"
        }
    )
    old, new = _with_plan_defaults(old), _with_plan_defaults(new)
    changes, refused = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if _equal(a, b) or b == "???":  # unset and not in the checkpoint: reported later
            continue
        if may_change(key):
            changes.append(f"{key}: {a!r} -> {b!r}")
        else:
            refused.append(f"{key}: checkpoint {a!r} vs this run {b!r}")
    return changes, refused


def _with_plan_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """Complete the sparsity group with the strategy's own option values, so that the whole
    plan is compared (an option left out means the strategy's value, not "unset")."""
    name = flat.get("sparsity.strategy")
    if name in STRATEGIES:
        plan = STRATEGIES.get(name)
        for option in OPTIONS:
            if hasattr(plan, option):
                flat.setdefault(f"sparsity.{option}", getattr(plan, option))
    return flat


def cfg_select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b
