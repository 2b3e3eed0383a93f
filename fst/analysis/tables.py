"""Tables 1, 3, 4, 5 from run directories' ``summary.json``, beside the paper's numbers.

Each run directory written by ``train.py`` holds ``summary.json`` (keys used here: ``task``,
``model``, ``dataset``, ``strategy``, ``seed``, ``epochs``, ``global_batch_size``, ``device``,
``primary_metric``, ``val/<primary_metric>``, ``embedded_data``) and ``config_resolved.yaml``.

Runs are averaged over seeds only when *everything else that can change the result* is equal:

* a **row** is a strategy plus every sparsity setting that differs from the strategy's defaults
  (``configs/sparsity/<key>.yaml`` and the strategy's options): ``fst (ir_coef=0.5)`` is its own
  row, never averaged into ``fst``;
* a **column** (a *scale*) is every other setting of the resolved config (model with its arch,
  width, patch size, kwargs; data set, image size, split; epochs, batch,
  ``limit_train_batches``, optimizer, schedule, loss, precision, backend, ...) plus the device
  type, except the keys in :data:`NOT_RESULT` (naming, paths, logging, display, checkpoint
  frequency, data loading). A new config key therefore separates runs without a code change.

A cell is ``mean ± std (n=...)`` of the final validation metric (sample std over seeds); one
seed has no spread and shows ``value (n=1)``. Column labels name the scale (data, model, epochs,
batch) and every further setting in which the table's columns differ.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from fst.analysis import paper
from fst.analysis.report import markdown_table
from fst.strategies import OPTIONS, STRATEGIES


@dataclass
class TableSpec:
    """One paper table: its rows (strategy keys, or (dataset, model, strategy) for Table 4)."""

    key: str
    title: str
    task: str
    rows: list
    paper: dict
    metric_label: str
    models: tuple[str, ...] | None = None  # restrict to these summary["model"] values
    extra: dict = field(default_factory=dict)
    # rows the paper lists that no strategy implements: row -> ((Eq. 1, 2, 3 objects), why)
    not_implemented: dict = field(default_factory=dict)
    paper_label: str | None = None  # header of the paper column (default: "paper <metric>")


TABLES = {
    "table1": TableSpec(
        "table1",
        "Table 1: which operands of Eq. 2 and 3 tolerate 2:4 pruning (ResNet-18)",
        "classification",
        ["dense", "wg", "wx", "gg", "gx"],
        paper.TABLE1_TOP1,
        "top-1 %",
    ),
    "table3": TableSpec(
        "table3",
        "Table 3: ResNet-18/50 from scratch, every row",
        "classification",
        [
            "dense",
            "meprop",
            "resprop",
            "dpf",
            "rigl",
            "asfp",
            "prunet",
            "clickt",
            "sparset",
            "asp",
            "srste",
            "tsm",
            "fst2",
            "fst",
        ],
        paper.TABLE3_R18_TOP1,
        "top-1 %",
        extra={
            "pattern (paper)": paper.TABLE3_PATTERN,
            "speedup R18 (paper)": paper.TABLE3_R18_SPEEDUP,
            "paper R50 top-1 %": paper.TABLE3_R50_TOP1,
            "speedup R50 (paper)": paper.TABLE3_R50_SPEEDUP,
        },
        not_implemented=paper.TABLE3_NOT_IMPLEMENTED,
        paper_label="paper R18 top-1 % (ImageNet)",
    ),
    "table4": TableSpec(
        "table4",
        "Table 4: object detection, dense vs FST",
        "detection",
        sorted({(d, m, s) for d, m, s in paper.TABLE4_MAP}),
        paper.TABLE4_MAP,
        "mAP %",
    ),
    "table5": TableSpec(
        "table5",
        "Table 5: ablation (ResNet-18)",
        "classification",
        ["dense", "srste", "fst2", "fst_noir", "fst"],
        paper.TABLE5_TOP1,
        "top-1 %",
    ),
}


NOT_RESULT = (
    "seed",  # what a cell averages over
    "name",
    "output_root",
    "resume",
    "model.label",
    "model.pretrained_strict",  # how a head mismatch is handled, not what trains
    "logger.*",
    "trainer.progress_bar",
    "trainer.print_summary",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.save_checkpoints",
    "trainer.keep_checkpoints",
    "trainer.val_every_n_epochs",  # the final metric is always the last epoch's
    "trainer.device",  # "auto": the device that ran is read from summary.json instead
    "data.root",  # where the data lives; data.name and the data settings say what it is
    "data.num_workers",
    "data.pin_memory",
    "data.val_batch_size",  # evaluation batching only (eval mode)
)
"""Config keys (fnmatch patterns) that cannot change a run's final metric; every other key
separates runs. ``sparsity.*`` forms the rows instead (:func:`row_label`)."""

# Keys the base part of a column label already shows (see :func:`scale_label`).
_LABELLED = {
    "data.name",
    "data.image_size",
    "data.val_fraction",
    "data.batch_size",
    "model.name",
    "model.arch",
    "model.width",
    "model.kwargs.channels",
    "model.patch_size",
    "model.embed_dim",
    "model.depth",
    "trainer.epochs",
    "trainer.limit_train_batches",
}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def find_summaries(roots: list[str | Path]) -> list[dict]:
    """Every ``summary.json`` under ``roots`` (files or directories, searched recursively)."""
    found = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise FileNotFoundError(f"run directory {str(root)!r} does not exist")
        paths = [root] if root.is_file() else sorted(root.rglob("summary.json"))
        for p in paths:
            s = json.loads(p.read_text())
            s.setdefault("run_dir", str(p.parent))
            s["_config"] = _read_config(p.parent / "config_resolved.yaml")
            found.append(s)
    return found


def _read_config(path: Path) -> dict:
    if not path.exists():
        return {}

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def settings(s: dict) -> dict[str, str]:
    """What besides the seed and the sparsity plan determines ``s``'s result: the resolved
    config flattened to ``{"model.width": "16", ...}`` without :data:`NOT_RESULT` and
    ``sparsity.*``, plus ``device`` (its type). ``null`` and absent keys are the same (a key
    added to the schema later has ``null`` as its default). Data set, model, epochs and batch
    also come from the summary (runs without ``config_resolved.yaml``)."""
    cfg = {  # what summary.json records; the resolved config, where present, says the same
        "data.name": s.get("dataset"),
        "model.name": s.get("model"),
        "trainer.epochs": s.get("epochs"),
        "data.batch_size": s.get("global_batch_size"),
    }
    cfg.update(_flatten(s.get("_config") or {}))
    out = {
        k: _text(v)
        for k, v in cfg.items()
        if v is not None
        and not k.startswith("sparsity.")
        and not any(fnmatch.fnmatchcase(k, p) for p in NOT_RESULT)
    }
    if s.get("device"):
        out["device"] = str(s["device"]).split(":")[0]
    return out


def scale_label(s: dict) -> str:
    """What the run's numbers are about: data (embedded or not), size, model, epochs, batch."""
    cfg = s.get("_config", {})
    data, model = cfg.get("data", {}), cfg.get("model", {})
    trainer = cfg.get("trainer", {})
    parts = [s.get("dataset", "?") + (" (embedded)" if s.get("embedded_data") else "")]
    if "image_size" in data:
        parts[0] += f" {data['image_size']}px"
    if data.get("val_fraction") is not None:
        parts[0] += f" ({100 * (1 - float(data['val_fraction'])):.0f}% train split)"
    m = s.get("model", "?")
    if model.get("arch"):
        m += f":{model['arch']}"
    if model.get("width") is not None:
        m += f" width {model['width']}"
    kwargs = model.get("kwargs") or {}
    if kwargs.get("channels"):
        m += " channels " + "-".join(map(str, kwargs["channels"]))
    dims = [f"{k} {model[k]}" for k in ("patch_size", "embed_dim", "depth") if model.get(k)]
    if dims:  # a ViT resized from its named architecture
        m += " (" + ", ".join(dims) + ")"
    parts.append(m)
    parts.append(f"{s.get('epochs', '?')} ep")
    if trainer.get("limit_train_batches") is not None:
        parts[-1] += f" of {trainer['limit_train_batches']} batches"
    parts.append(f"batch {s.get('global_batch_size', '?')}")
    return ", ".join(parts)


@functools.cache
def _sparsity_defaults(strategy: str) -> dict[str, str]:
    """``configs/sparsity/<strategy>.yaml`` over the strategy's option defaults, as text."""
    out: dict[str, Any] = {}
    if strategy in STRATEGIES:
        plan = STRATEGIES.get(strategy)
        out = {o: getattr(plan, o) for o in OPTIONS if hasattr(plan, o)}
    path = CONFIGS / "sparsity" / f"{strategy}.yaml"
    if path.exists():
        out.update(OmegaConf.to_container(OmegaConf.load(path)))  # type: ignore[arg-type]
    return {k: _text(v) for k, v in out.items()}


def row_label(s: dict) -> str:
    """The strategy, with every sparsity setting that differs from its defaults:
    ``fst``, ``fst (ir_coef=0.5)``, ``srste (decay=0.0, mask_layout=cin)``."""
    strategy = str(s.get("strategy"))
    sp = (s.get("_config") or {}).get("sparsity") or {}
    defaults = _sparsity_defaults(strategy)
    changed = [
        f"{k}={_text(v)}"
        for k, v in sorted(sp.items())
        if k != "strategy" and defaults.get(k) != _text(v)
    ]
    return strategy + (f" ({', '.join(changed)})" if changed else "")


def row_strategy(row: str) -> str:
    """The strategy key of a row label (``"fst (ir_coef=0.5)"`` -> ``"fst"``)."""
    return row.split(" (", 1)[0]


def _row_key(spec: TableSpec, s: dict):
    if spec.task == "detection":
        return (s.get("dataset"), s.get("model"), row_label(s))
    return row_label(s)


def _column_labels(scales: dict[tuple, dict]) -> dict[tuple, str]:
    """A distinct label per scale: its base label, plus every setting in which the scales of
    one table differ that the base label does not show."""
    keys = {k for sc in scales for k, _ in sc}
    differ = sorted(k for k in keys - _LABELLED if len({dict(sc).get(k) for sc in scales}) > 1)
    labels = {}
    for sc, first in scales.items():
        d = dict(sc)
        extra = [f"{k}={d[k]}" for k in differ if k in d]
        labels[sc] = scale_label(first) + "".join(f", {e}" for e in extra)
    return labels


def aggregate(spec: TableSpec, summaries: list[dict]) -> dict[str, dict]:
    """``{scale label: {row: {"values", "seeds", "mean", "std", "n"}}}`` for the runs that fit
    ``spec``; ``std`` is ``None`` for one seed."""
    cells: dict[tuple, dict] = defaultdict(lambda: defaultdict(lambda: {"values": [], "seeds": []}))
    first: dict[tuple, dict] = {}
    for s in summaries:
        if s.get("task", spec.task) != spec.task:
            continue
        if spec.models and s.get("model") not in spec.models:
            continue
        key = _row_key(spec, s)
        # Detection runs on other data (e.g. the embedded shapes set) keep their own row.
        if spec.task != "detection" and row_strategy(key) not in spec.rows:
            continue
        metric = s.get("primary_metric")
        value = s.get(f"val/{metric}")
        if value is None:
            continue
        scale = tuple(sorted(settings(s).items()))
        first.setdefault(scale, s)
        cell = cells[scale][key]
        cell["values"].append(float(value))
        cell["seeds"].append(s.get("seed"))
        cell["metric"] = metric
    for rows in cells.values():
        for cell in rows.values():
            v = cell["values"]
            cell["n"] = len(v)
            cell["mean"] = statistics.fmean(v)
            cell["std"] = statistics.stdev(v) if len(v) > 1 else None
    labels = _column_labels(first)
    return {labels[sc]: dict(rows) for sc, rows in cells.items()}


def format_cell(cell: dict | None) -> str:
    """``mean ± std (n=3)``; one seed: ``value (n=1)`` (no spread to show); none: ``not run``."""
    if not cell:
        return "not run"
    if cell.get("std") is None or cell["n"] < 2:
        return f"{cell['mean']:.2f} (n={cell['n']})"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f} (n={cell['n']})"


def _describe(key) -> dict[str, str]:
    name = row_strategy(key[-1] if isinstance(key, tuple) else key)
    return (
        STRATEGIES.get(name).describe() if name in STRATEGIES else {"eq1": "", "eq2": "", "eq3": ""}
    )


def build(spec: TableSpec, summaries: list[dict]) -> tuple[list[dict], str] | None:
    """CSV rows and a Markdown body for ``spec``; ``None`` when no run fits it."""
    agg = aggregate(spec, summaries)
    if not agg:
        return None
    scales = sorted(agg)
    found = {k for sc in agg.values() for k in sc}
    rows = []
    for row in spec.rows:  # each strategy, then its runs with other settings (variants)
        rows.append(row)
        if spec.task != "detection":
            rows += sorted(k for k in found if k != row and row_strategy(k) == row)
    if spec.task == "detection":  # runs on other datasets/models (e.g. embedded shapes) too
        rows += sorted(found - set(rows), key=str)
    csv_rows, md_rows = [], []
    for key in rows:
        missing = key in spec.not_implemented
        listed = key in spec.paper or missing or any(key in v for v in spec.extra.values())
        if not any(key in agg[sc] for sc in scales) and not listed:
            continue
        label = " / ".join(key) if isinstance(key, tuple) else key
        desc = _describe(key)
        if missing:  # the objects the paper says it prunes
            desc = dict(zip(("eq1", "eq2", "eq3"), spec.not_implemented[key][0]))
        md = {"row": label, "eq1": desc["eq1"], "eq2": desc["eq2"], "eq3": desc["eq3"]}
        if spec.key == "table5":
            flags = paper.TABLE5_FLAGS[row_strategy(key)]
            for name, f in zip(("S(W)", "S(W^T)", "S(X^T)", "IR"), flags):
                md[name] = "✓" if f else "✗"
        md["paper"] = spec.paper.get(key, "—")
        for extra_name, values in spec.extra.items():
            md[extra_name] = values.get(key, "—")
        for i, sc in enumerate(scales):
            cell = agg[sc].get(key)
            md[f"ours{i}"] = "not implemented (see below)" if missing else format_cell(cell)
            if cell:
                csv_rows.append(
                    {
                        "table": spec.key,
                        "row": label,
                        "paper": spec.paper.get(key, ""),
                        "scale": sc,
                        "metric": cell.get("metric", ""),
                        "n": cell["n"],
                        "mean": round(cell["mean"], 4),
                        "std": "" if cell["std"] is None else round(cell["std"], 4),
                        "seeds": " ".join(map(str, cell["seeds"])),
                        "values": " ".join(f"{v:.4f}" for v in cell["values"]),
                    }
                )
        md_rows.append(md)

    cols = ["row", "eq1", "eq2", "eq3"]
    heads = ["row", "Eq. 1", "Eq. 2", "Eq. 3"]
    if spec.key == "table5":
        cols += ["S(W)", "S(W^T)", "S(X^T)", "IR"]
        heads += ["S(W)", "S(W^T)", "S(X^T)", "IR"]
    paper_head = spec.paper_label or (
        "paper "
        + spec.metric_label
        + (" (VOC/COCO)" if spec.task == "detection" else " (ImageNet)")
    )
    cols += ["paper", *spec.extra, *(f"ours{i}" for i in range(len(scales)))]
    heads += [paper_head, *spec.extra, *(f"ours ({i + 1})" for i in range(len(scales)))]
    legend = "\n".join(f"- ours ({i + 1}): {sc}" for i, sc in enumerate(scales))
    body = (
        f"Ours: final validation {spec.metric_label}, mean ± sample std over seeds (n = number of "
        "seeds; one seed: its value, no spread). Runs are averaged only when every setting but the "
        "seed is equal: a column per scale, a row per strategy and its options. Embedded-data columns are small CPU runs on data that ships with the code: they test "
        "orderings, not the paper's ImageNet / VOC / COCO numbers.\n\n"
        + legend
        + "\n\n"
        + markdown_table(md_rows, cols, heads)
    )
    if spec.not_implemented:
        body += "\n\nNot implemented:\n\n" + "\n".join(
            f"- {key}: {why}." for key, (_, why) in spec.not_implemented.items()
        )
    return csv_rows, body
