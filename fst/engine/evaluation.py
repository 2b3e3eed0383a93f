"""``evaluate_checkpoint(cfg)``: what ``eval.py`` does (metrics, 2:4 check, export).

The checkpoint's saved (resolved) config rebuilds the task, model and sparsity; the eval config
may replace its ``data`` and ``backend`` groups and the device/loader settings. ``checkpoint=``
takes a checkpoint file or a run directory (its ``checkpoints/best.pt``, else ``last.pt``).

What the 2:4 check checks
    Every fst strategy stores the *dense* weights W in its checkpoints and computes S(W) (or
    T(W)) from them at every forward; W itself is not 2:4, by design, and is not what deploys.
    The deployable weights are S(W): ``export=`` writes them as a plain state_dict. The check
    (``check_stored_nm``) therefore inspects weight tensors *as stored* in the file that is
    meant to hold 2:4 weights, without masking them again:

    * ``checkpoint=RUN`` (a training checkpoint): the deployable weights eval.py derives from
      the dense W; with ``export=`` the file as written to disk and read back. This confirms
      the export; it cannot catch a tampered W, which is dense anyway.
    * ``checkpoint=RUN weights=FILE`` (e.g. an export, or any pruned state_dict): the tensors of
      FILE exactly as stored. A weight with more than 2 nonzeros in a group of 4 along its
      GEMM's reduction dimension fails the check (exit status 1), and the metrics are computed
      with FILE's weights as they are (the model is densified: nothing re-masks them).

    A layer passes when its weight has at most 2 nonzeros in every group of 4 consecutive
    entries along the reduction dimension of the GEMM it feeds: Ci*kh*kw of Eq. 1 (Ci at each
    kernel position with ``mask_layout=cin``); for ``tsm`` also along Co, the reduction
    dimension of Eq. 2, which uses the same T(W).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import fst
from fst.engine.checkpoint import (
    BEST,
    CHECKPOINT_DIRNAME,
    LAST,
    CheckpointError,
    check_state_dict_compatible,
    load_checkpoint,
    nonfinite_entries,
    previous_path,
    save_checkpoint,
)
from fst.engine.config import resolve_config
from fst.engine.record import run_record
from fst.engine.rundir import claim, holds_run, remove_if_empty
from fst.engine.trainer import autocast, val_loader
from fst.engine.training import build_model, place_model
from fst.engine.validate import check_data, check_device, resolve_device
from fst.layers import sparse_layers
from fst.rules import operand_checks, weight_operands
from fst.sparsifier import restore_sparsifier
from fst.tasks import TASKS
from fst.types import ConfigError, FstError

log = logging.getLogger(__name__)


def check_stored_nm(model: nn.Module, stored: Mapping[str, torch.Tensor]) -> list[dict[str, Any]]:
    """For every sparse layer of ``model`` whose Eq. 1 weight is pruned: is its weight *as
    stored* in ``stored`` (``{"<layer>.weight": tensor}``) 2:4 along the reduction dims of the
    GEMMs it feeds? No mask is applied here. Only weights whose rule promises 2:4 are checked
    (unstructured or filter pruning, e.g. DPF's or ASFP's, promises none). One row per layer:
    ``layer``, ``along``, ``nm_ok``, ``failed_along``.
    """
    rows = []
    for name, m in sparse_layers(model):
        eq1, eq2 = m.plan.rules[:2]
        if not eq1.prunes:
            continue
        w = stored[f"{name}.weight"]
        # a stored weight also serves Eq. 2 when that GEMM reuses it (tsm: T(W)^T, 2:4 along Co)
        w_bwd = w if eq2.shares_forward_weight and eq2.tensor_core(m.plan) else None
        checks = operand_checks(m.plan, w, w_bwd, state=m.rule_state)
        checks = [c for c in checks if c.tensor_core]
        if not checks:
            continue
        bad = [c.along for c in checks if not c.ok()]
        rows.append(
            {
                "layer": name,
                "along": " and ".join(c.along for c in checks),
                "nm_ok": not bad,
                "failed_along": bad,
            }
        )
    return rows


@torch.no_grad()
def export_nm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain state_dict with every pruned layer's weight replaced by its 2:4 forward weight.

    Keys are those of the dense model (``fst.sparsify`` keeps parameter names), so it loads
    into the unsparsified architecture for deployment; the model itself is not changed.
    """
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, m in sparse_layers(model):
        if m.plan.rules[0].prunes:
            w_fwd = weight_operands(m.weight, m.plan, need_bwd=False, state=m.rule_state)[0]
            sd[f"{name}.weight"] = w_fwd.detach().clone()
    return sd


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory's ``checkpoints/best.pt`` (else ``last.pt``)."""
    return checkpoint_candidates(path)[0]


def checkpoint_candidates(path: str | Path) -> list[Path]:
    """The files ``checkpoint=path`` may mean, in order: the file itself; for a run directory
    its ``best.pt`` then ``last.pt`` (and their ``.prev`` copies), so that a damaged ``best.pt``
    falls back to ``last.pt``."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        found = []
        for d in (p / CHECKPOINT_DIRNAME, p):
            for name in (BEST, LAST):
                for f in (d / name, previous_path(d / name)):
                    if f.is_file() and f not in found:
                        found.append(f)
        if found:
            return found
        raise CheckpointError(
            f"checkpoint={path}: that run directory has no checkpoints/best.pt or last.pt "
            "(was it run with trainer.save_checkpoints=false?); pass a checkpoint file"
        )
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint={path}: no such checkpoint file or run directory; pass a file such as "
            "outputs/NAME/seed0/DATE/checkpoints/best.pt, or the run directory"
        )
    return [p]


def _load_first(path: str | Path) -> tuple[Path, dict]:
    """The first loadable candidate of ``checkpoint=path`` (warning about each skipped one)."""
    candidates = checkpoint_candidates(path)
    errors = []
    for c in candidates:
        try:
            return c, load_checkpoint(c)
        except CheckpointError as e:
            if len(candidates) == 1:
                raise CheckpointError(
                    f"{e} (eval.py: pass the run directory to fall back to its other "
                    "checkpoints, or another checkpoint file)"
                ) from None
            errors.append(str(e).split(";")[0])
            log.warning("eval: skipping checkpoint %s: %s", c, errors[-1])
    raise CheckpointError(
        f"checkpoint={path}: no loadable checkpoint in that run directory ({'; '.join(errors)}); "
        "the run's checkpoints are damaged: train again, or pass a copy of a good checkpoint"
    )


#: Files of a run directory that eval.py must never write over.
PROTECTED_NAMES = ("summary.json", "metrics.jsonl", "config_resolved.yaml", "train.log",
                   "summary.txt")  # fmt: skip


def refuse_run_file(path: Path, key: str) -> None:
    """``export=``/``output=`` may not name a file of a training run: anything under a
    ``checkpoints/`` folder, a run's own record (``summary.json``, ...) or a training
    checkpoint (raises ``ConfigError``)."""
    p = path.expanduser().resolve()
    why = None
    if CHECKPOINT_DIRNAME in p.parts[:-1]:
        why = f"it is inside a run's {CHECKPOINT_DIRNAME}/ folder"
    elif p.name in PROTECTED_NAMES and holds_run(p.parent):
        why = f"it is the run's own {p.name}"
    elif p.is_file() and p.suffix in (".pt", ".pth"):
        try:
            with zipfile.ZipFile(p) as z:
                if any(n.endswith("/data.pkl") for n in z.namelist()) and _is_training_ckpt(p):
                    why = "it is a training checkpoint"
        except (OSError, zipfile.BadZipFile):
            pass
    if why:
        raise ConfigError(
            f"{key}={path}: {why}; eval.py never writes over a training run's files. Write "
            f"elsewhere, e.g. {key}=" + ("resnet18_24.pt" if key == "export" else "metrics.json")
        )


def _is_training_ckpt(p: Path) -> bool:
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not loadable: not a checkpoint to protect
        return False
    return isinstance(state, dict) and "config" in state and "meta" in state


def _check_finite_weights(stored: Mapping[str, Any], source: str, key: str) -> None:
    bad = nonfinite_entries(stored)
    if bad:
        raise ConfigError(
            f"{key}={source} holds non-finite values (NaN/Inf) in {len(bad)} tensor(s), e.g. "
            f"{bad[0]}: its metrics would be meaningless; evaluate the run's checkpoint, or "
            "export the weights again from a good one (export=FILE)"
        )


def evaluate_checkpoint(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint``; write and return the metrics (see ``configs/eval.yaml``)."""
    for key in ("export", "output"):
        if cfg.get(key):
            refuse_run_file(Path(str(cfg[key])), key)
    ckpt_path, state = _load_first(cfg.checkpoint)
    if "config" not in state or "model" not in state:
        raise ConfigError(
            f"{ckpt_path} is not a checkpoint written by train.py (it has no 'config'/'model' "
            "entries); eval.py needs the training config to rebuild the model. To check an "
            "exported state_dict, pass it as weights= next to the checkpoint of its run"
        )
    run = OmegaConf.create(state["config"])
    run.pop("hydra", None)
    if cfg.get("data") is not None:
        run.data = cfg.data
    if cfg.get("backend") is not None:
        run.backend = cfg.backend
    run.trainer.device = cfg.device
    if cfg.get("limit_val_batches") is not None:
        run.trainer.limit_val_batches = cfg.limit_val_batches
    if cfg.get("num_workers") is not None:
        run.data.num_workers = cfg.num_workers
    typed = resolve_config(run)
    check_device(run)  # the device and backend exist here (as train.py checks)
    check_data(run.data)
    device = resolve_device(typed.trainer.device)

    task = TASKS.get(typed.task)(typed)
    data = task.build_data()
    model = build_model(task, typed)
    check_state_dict_compatible(model, state["model"], source=str(ckpt_path))
    model.load_state_dict(state["model"])
    _check_finite_weights(state["model"], str(ckpt_path), "checkpoint")
    # Issue 12: masks a sparsifier holds (DPF, RigL, ASP) come from the checkpoint too.
    restore_sparsifier(model, state.get("sparsifier"), source=str(ckpt_path))
    weights_path = Path(str(cfg.weights)).expanduser() if cfg.get("weights") else None
    if weights_path is not None:
        stored = load_checkpoint(weights_path)
        if isinstance(stored.get("model"), dict) and "config" in stored:
            raise ConfigError(
                f"weights={weights_path} is a training checkpoint (dense W by design, not its "
                "2:4 weights); evaluate it with checkpoint=" + str(weights_path) + ", or write "
                "its 2:4 weights with export=FILE and pass that as weights="
            )
        stored = stored.get("model", stored) if isinstance(stored.get("model"), dict) else stored
        check_state_dict_compatible(model, stored, source=str(weights_path))
        _check_finite_weights(stored, str(weights_path), "weights")
    else:
        stored = export_nm_state_dict(model)
    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path.resolve()),
        **run_record(run),
        "epoch": state.get("epoch"),
        "global_step": state.get("global_step"),
    }
    if cfg.get("export"):
        export = Path(str(cfg.export)).expanduser()
        save_checkpoint(export, stored, keep_previous=False)
        result["export"] = str(export.resolve())
        stored = load_checkpoint(export)  # check the file as written, not the memory it came from
    if cfg.get("check_nm", True):
        rows = check_stored_nm(model, stored)
        bad = [
            f"{r['layer']} (along {', '.join(r['failed_along'])})" for r in rows if not r["nm_ok"]
        ]
        source = weights_path or (result.get("export") and Path(result["export"]))
        result.update(
            nm_checked=(
                f"weights as stored in {source}"
                if source
                else "the deployable weights S(W) derived from the checkpoint's dense W "
                "(training checkpoints store dense W by design; export= writes S(W))"
            ),
            nm_layers_checked=len(rows),
            nm_ok=not bad,
            nm_failures=bad,
        )
    if weights_path is not None:
        # Evaluate exactly the stored tensors: plain layers, nothing re-masks them.
        fst.densify(model)
        model.load_state_dict(stored)
    # [issue 15 hook] eval.py's compile=, else the run's trainer.compile (in place, see fst.compile)
    place_model(model, typed, device, compile=cfg.get("compile")).eval()

    loader_cfg = typed.loader
    bs = int(cfg.get("val_batch_size") or loader_cfg.val_batch_size or loader_cfg.batch_size)
    loader = val_loader(
        data,
        bs,
        typed.trainer.limit_val_batches,
        device,
        num_workers=loader_cfg.num_workers,
        pin_memory=True,
    )
    with torch.no_grad(), autocast(device, typed.trainer.precision)():
        metrics = task.evaluate(model, loader, device)
    result["num_samples"] = len(loader.dataset)
    result.update({f"val/{k}": float(v) for k, v in metrics.items()})
    if weights_path is not None:
        result["weights"] = str(weights_path.resolve())

    out = Path(str(cfg.output)) if cfg.get("output") else Path(out_dir or ".") / "eval_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["output"] = str(out.resolve())
    return result


#: What ``run_eval`` prints besides the ``val/*`` metrics.
PRINTED = ("checkpoint", "weights", "nm_checked", "nm_ok", "nm_layers_checked", "export", "output")


def run_eval(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """``eval.py``: evaluate, print the metrics, and fail (``FstError``, exit status 1) when a
    layer is not 2:4 (see the module docstring for what is checked)."""
    # Each evaluation gets a directory of its own (<stamp>_2, ... when two start in the same
    # second), like a training run; an explicit output= needs none.
    own = None
    if out_dir is not None and not cfg.get("output"):
        own = claim(out_dir)
    try:
        result = evaluate_checkpoint(cfg, out_dir=own.path if own else out_dir)
    except BaseException:
        if own is not None:
            own.discard()
        remove_if_empty(Path(out_dir) if out_dir else None)  # the launch's empty directory
        raise
    finally:
        if own is not None:
            own.release()
    if own is not None and own.path != Path(out_dir):
        remove_if_empty(Path(out_dir))
    elif own is None:
        remove_if_empty(Path(out_dir) if out_dir else None)
    for k, v in result.items():
        if k.startswith("val/") or k in PRINTED:
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    if result.get("nm_ok") is False:
        raise FstError(
            f"NOT 2:4 ({result['nm_checked']}): {', '.join(result['nm_failures'])}. These "
            "weights would not run on 2:4 sparse tensor cores: re-export them from the run's "
            "checkpoint with eval.py checkpoint=RUN_DIR export=FILE, and find where they were "
            "modified"
        )
    return result
