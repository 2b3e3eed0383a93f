"""The embedded ViT table: every strategy on a small ViT, beside the ResNet-18 tables' numbers.

Ours come from the runs' ``summary.json`` (``model == "vit"``; one column per scale, as in
:mod:`fst.analysis.tables`); the ResNet-18 numbers are read back from the CSV files that
``scripts/make_tables.py`` wrote (``results/table{1,3,5}_<suffix>.csv``), one column per
ResNet scale (data set, size, width, epochs, batch), so that nothing is re-run or retyped.
"""

from __future__ import annotations

import csv
from pathlib import Path

from fst.analysis import tables
from fst.analysis.report import markdown_table
from fst.strategies import STRATEGIES

TITLE = "Every strategy on a small ViT (embedded data), beside ResNet-18"


def spec() -> tables.TableSpec:
    return tables.TableSpec(
        "vit", TITLE, "classification", list(STRATEGIES), {}, "top-1 %", models=("vit",)
    )


def read_resnet(paths: list[str | Path]) -> dict[str, dict[str, dict]]:
    """``{scale: {strategy: {"mean", "std", "n"}}}`` from make_tables CSV files (rows seen in
    several tables, e.g. dense, are the same runs: the first is kept)."""
    out: dict[str, dict[str, dict]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                cells = out.setdefault(r["scale"], {})
                cells.setdefault(
                    r["row"],
                    {
                        "mean": float(r["mean"]),
                        "std": float(r["std"]) if r["std"] not in ("", None) else None,
                        "n": int(r["n"]),
                    },
                )
    return out


def build(summaries: list[dict], resnet: dict[str, dict[str, dict]]) -> tuple[list[dict], str]:
    """CSV rows (ours) and the Markdown body; raises ValueError when no ViT run is found."""
    s = spec()
    agg = tables.aggregate(s, summaries)
    if not agg:
        raise ValueError("no summary.json of a model=vit classification run under the given dirs")
    vit_scales = sorted(agg)
    res_scales = sorted(resnet)
    csv_rows, md_rows = [], []
    found = {k for sc in agg.values() for k in sc}
    rows = [
        k for row in s.rows for k in [row, *sorted(found - {row})] if tables.row_strategy(k) == row
    ]
    for key in rows:
        if not any(key in agg[sc] for sc in vit_scales):
            continue
        desc = tables._describe(key)
        md = {"row": key, "eq1": desc["eq1"], "eq2": desc["eq2"], "eq3": desc["eq3"]}
        for i, sc in enumerate(vit_scales):
            cell = agg[sc].get(key)
            dense = agg[sc].get("dense")
            md[f"vit{i}"] = tables.format_cell(cell)
            md[f"delta{i}"] = (
                f"{cell['mean'] - dense['mean']:+.2f}" if cell and dense and key != "dense" else ""
            )
            if cell:
                csv_rows.append(
                    {
                        "row": key,
                        "scale": sc,
                        "n": cell["n"],
                        "mean": round(cell["mean"], 4),
                        "std": "" if cell["std"] is None else round(cell["std"], 4),
                        "seeds": " ".join(map(str, cell["seeds"])),
                        "values": " ".join(f"{v:.4f}" for v in cell["values"]),
                    }
                )
        for j, sc in enumerate(res_scales):
            md[f"res{j}"] = tables.format_cell(resnet[sc].get(key))
        md_rows.append(md)
    cols = ["row", "eq1", "eq2", "eq3"]
    heads = ["strategy", "Eq. 1", "Eq. 2", "Eq. 3"]
    for i in range(len(vit_scales)):
        cols += [f"vit{i}", f"delta{i}"]
        heads += [f"ViT ({i + 1})", "vs dense"]
    cols += [f"res{j}" for j in range(len(res_scales))]
    heads += [f"ResNet-18 ({chr(ord('a') + j)})" for j in range(len(res_scales))]
    legend = [f"- ViT ({i + 1}): {sc}" for i, sc in enumerate(vit_scales)]
    legend += [
        f"- ResNet-18 ({chr(ord('a') + j)}): {sc} (from the existing ResNet tables)"
        for j, sc in enumerate(res_scales)
    ]
    body = (
        "Final validation top-1 %, mean ± sample std over seeds (n = number of seeds); "
        "'vs dense': ViT mean minus the dense ViT mean. Embedded data (scikit-learn's digits), "
        "small CPU runs: they compare strategies at this scale, not ImageNet numbers.\n\n"
        + "\n".join(legend)
        + "\n\n"
        + markdown_table(md_rows, cols, heads)
    )
    return csv_rows, body
