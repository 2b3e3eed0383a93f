"""``evaluate_checkpoint(cfg)``: what ``eval.py`` does (metrics, 2:4 check, export).

The checkpoint's saved (resolved) config rebuilds the task, model and sparsity; the eval config
may replace its ``data`` and ``backend`` groups and the device/loader settings.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Subset

log = logging.getLogger(__name__)


def check_nm_weights(model: nn.Module) -> list[dict[str, Any]]:
    """For every sparse layer with a pruned Eq. 1 weight: is that weight 2:4 along the GEMM's
    reduction dim (Ci*kh*kw, or Ci with ``mask_layout=cin``)? One row per layer."""
    from fst.layers import sparse_layers
    from fst.rules import operand_checks, weight_operands

    rows = []
    for name, m in sparse_layers(model):
        for check in operand_checks(m.plan, weight_operands(m.weight, m.plan)[0], None):
            rows.append({"layer": name, "nm_ok": check.ok(), "along": check.along})
    return rows


@torch.no_grad()
def export_nm_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """A plain state_dict with every pruned layer's weight replaced by its 2:4 forward weight.

    Keys are those of the dense model (``fst.sparsify`` keeps parameter names), so it loads
    into the unsparsified architecture for deployment; the model itself is not changed.
    """
    from fst.layers import sparse_layers
    from fst.rules import weight_operands

    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, m in sparse_layers(model):
        if m.plan.rules[0].prunes:
            sd[f"{name}.weight"] = weight_operands(m.weight, m.plan)[0].detach().clone()
    return sd


def evaluate_checkpoint(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate ``cfg.checkpoint``; write and return the metrics (see ``configs/eval.yaml``)."""
    from fst.engine.checkpoint import (
        check_state_dict_compatible,
        load_checkpoint,
        save_checkpoint,
    )
    from fst.engine.config import validate_config
    from fst.engine.training import build_sparse_model
    from fst.engine.validate import resolve_device
    from fst.tasks import TASKS

    ckpt_path = Path(str(cfg.checkpoint)).expanduser()
    state = load_checkpoint(ckpt_path)
    if "config" not in state or "model" not in state:
        raise ValueError(
            f"{ckpt_path} is not a checkpoint written by train.py (it has no 'config'/'model' "
            "entries); eval.py needs the training config to rebuild the model"
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
    validate_config(run)
    device = resolve_device(str(cfg.device))

    task = TASKS.get(run.task)(run)
    data = task.build_data()
    model = build_sparse_model(task, run)
    check_state_dict_compatible(model, state["model"], source=str(ckpt_path))
    model.load_state_dict(state["model"])
    model.to(device).eval()
    if run.trainer.get("channels_last"):
        model.to(memory_format=torch.channels_last)
    # [issue 15 hook] eval.py's compile=, else the run's trainer.compile (in place, see fst.compile)
    from fst.compile import compile_model

    mode = cfg.get("compile")
    compile_model(model, run.trainer.get("compile", False) if mode is None else mode)

    bs = int(cfg.get("val_batch_size") or run.data.get("val_batch_size") or run.data.batch_size)
    val = data.val
    limit = run.trainer.get("limit_val_batches")
    if limit is not None:
        val = Subset(val, range(min(len(val), int(limit) * bs)))
    loader = DataLoader(
        val,
        batch_size=bs,
        shuffle=False,
        num_workers=int(run.data.get("num_workers", 0)),
        pin_memory=device.type == "cuda",
        collate_fn=data.collate_fn,
    )
    amp = device.type == "cuda" and str(run.trainer.precision) in ("bf16", "16")
    dtype = torch.bfloat16 if str(run.trainer.precision) == "bf16" else torch.float16
    with torch.autocast(device.type, dtype=dtype, enabled=amp):
        metrics = task.evaluate(model, loader, device)

    result: dict[str, Any] = {
        "checkpoint": str(ckpt_path.resolve()),
        "name": run.get("name"),
        "task": str(run.task),
        "model": str(run.model.name),
        "strategy": str(run.sparsity.strategy),
        "backend": str(run.backend.name),
        "dataset": str(run.data.name),
        "epoch": state.get("epoch"),
        "global_step": state.get("global_step"),
        "num_samples": len(val),
        **{f"val/{k}": float(v) for k, v in metrics.items()},
    }
    if cfg.get("check_nm", True):
        rows = check_nm_weights(model)
        bad = [r["layer"] for r in rows if not r["nm_ok"]]
        result.update(nm_layers_checked=len(rows), nm_ok=not bad, nm_failures=bad)
    if cfg.get("export"):
        export = Path(str(cfg.export)).expanduser()
        save_checkpoint(export, export_nm_state_dict(model), keep_previous=False)
        result["export"] = str(export.resolve())

    out = Path(str(cfg.output)) if cfg.get("output") else Path(out_dir or ".") / "eval_metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    result["output"] = str(out.resolve())
    return result
