"""Tables 1, 3, 4, 5 from run directories' ``summary.json``, beside the paper's numbers.

Each run directory written by ``train.py`` holds ``summary.json`` (keys used here: ``task``,
``model``, ``dataset``, ``strategy``, ``seed``, ``epochs``, ``global_batch_size``,
``primary_metric``, ``val/<primary_metric>``, ``embedded_data``, ``config_path``) and
``config_resolved.yaml``. Runs are grouped by *scale* (dataset, image size, model and its
width, epochs, batch): a scale is one column of ours next to the paper's column, as
``mean ± std (n seeds)`` of the final validation metric (sample std over seeds).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fst.analysis import paper


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
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # type: ignore[return-value]


def scale_label(s: dict) -> str:
    """What the run's numbers are about: data (embedded or not), size, model, epochs, batch."""
    cfg = s.get("_config", {})
    data, model = cfg.get("data", {}), cfg.get("model", {})
    parts = [s.get("dataset", "?") + (" (embedded)" if s.get("embedded_data") else "")]
    if "image_size" in data:
        parts[0] += f" {data['image_size']}px"
    if data.get("val_fraction") is not None:
        parts[0] += f" ({100 * (1 - float(data['val_fraction'])):.0f}% train split)"
    m = s.get("model", "?")
    if model.get("arch"):
        m += f":{model['arch']}"
    kwargs = model.get("kwargs") or {}
    if kwargs.get("channels"):
        m += " channels " + "-".join(map(str, kwargs["channels"]))
    dims = [f"{k} {model[k]}" for k in ("patch_size", "embed_dim", "depth") if model.get(k)]
    if dims:  # a ViT resized from its named architecture
        m += " (" + ", ".join(dims) + ")"
    parts.append(m)
    parts.append(f"{s.get('epochs', '?')} ep")
    parts.append(f"batch {s.get('global_batch_size', '?')}")
    return ", ".join(parts)


def _row_key(spec: TableSpec, s: dict):
    if spec.task == "detection":
        return (s.get("dataset"), s.get("model"), s.get("strategy"))
    return s.get("strategy")


def aggregate(spec: TableSpec, summaries: list[dict]) -> dict[str, dict]:
    """``{scale: {row: {"values", "seeds", "mean", "std", "n"}}}`` for the runs that fit ``spec``."""
    out: dict[str, dict] = defaultdict(lambda: defaultdict(lambda: {"values": [], "seeds": []}))
    for s in summaries:
        if s.get("task", spec.task) != spec.task:
            continue
        if spec.models and s.get("model") not in spec.models:
            continue
        key = _row_key(spec, s)
        # Detection runs on other data (e.g. the embedded shapes set) keep their own row.
        if spec.task != "detection" and key not in spec.rows:
            continue
        metric = s.get("primary_metric")
        value = s.get(f"val/{metric}")
        if value is None:
            continue
        cell = out[scale_label(s)][key]
        cell["values"].append(float(value))
        cell["seeds"].append(s.get("seed"))
        cell["metric"] = metric
    for rows in out.values():
        for cell in rows.values():
            v = cell["values"]
            cell["n"] = len(v)
            cell["mean"] = statistics.fmean(v)
            cell["std"] = statistics.stdev(v) if len(v) > 1 else 0.0
    return {k: dict(v) for k, v in out.items()}


def _fmt(cell: dict | None) -> str:
    if not cell:
        return "not run"
    return f"{cell['mean']:.2f} ± {cell['std']:.2f} (n={cell['n']})"


def _describe(key) -> dict[str, str]:
    from fst.strategies import STRATEGIES

    name = key[-1] if isinstance(key, tuple) else key
    return (
        STRATEGIES.get(name).describe() if name in STRATEGIES else {"eq1": "", "eq2": "", "eq3": ""}
    )


def build(spec: TableSpec, summaries: list[dict]) -> tuple[list[dict], str] | None:
    """CSV rows and a Markdown body for ``spec``; ``None`` when no run fits it."""
    agg = aggregate(spec, summaries)
    if not agg:
        return None
    scales = sorted(agg)
    rows = list(spec.rows)
    if spec.task == "detection":  # runs on other datasets/models (e.g. embedded shapes) too
        rows += sorted({k for sc in agg.values() for k in sc} - set(rows), key=str)
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
            flags = paper.TABLE5_FLAGS[key]
            for name, f in zip(("S(W)", "S(W^T)", "S(X^T)", "IR"), flags):
                md[name] = "✓" if f else "✗"
        md["paper"] = spec.paper.get(key, "—")
        for extra_name, values in spec.extra.items():
            md[extra_name] = values.get(key, "—")
        for i, sc in enumerate(scales):
            cell = agg[sc].get(key)
            md[f"ours{i}"] = "not implemented (see below)" if missing else _fmt(cell)
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
                        "std": round(cell["std"], 4),
                        "seeds": " ".join(map(str, cell["seeds"])),
                        "values": " ".join(f"{v:.4f}" for v in cell["values"]),
                    }
                )
        md_rows.append(md)

    from fst.analysis.report import markdown_table

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
        "seeds). Embedded-data columns are small CPU runs on data that ships with the code: they test "
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
