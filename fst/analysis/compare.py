"""Compare strategies across runs: one table per group of comparable runs, and accuracy curves.

``python scripts/compare.py RUN_DIR...`` and the end of every multirun (:class:`MultirunSummary`,
a Hydra callback in ``configs/config.yaml``) use this module.

Runs are **comparable** when every setting that can change the result, other than the sparsity
plan and the seed, is equal (``fst.analysis.tables.settings``: data set and image size, model
and width, epochs, batch, optimizer, schedule, backend, device type, ...). Within a group a row
is a strategy plus its non-default options (``fst (ir_coef=0.5)``, ``tables.row_label``),
averaged over seeds: final and best value of the primary metric (mean ± std, n), wall time
(seconds from the start of training to the last record of ``metrics.jsonl``, validation
included), training throughput (images/s: steps x global batch / training time) and steps.

The figure of a group has two panels: the validation metric against epoch and against
wall-clock seconds, one line per row (the mean over its seeds).
"""

from __future__ import annotations

import logging
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fst.analysis import tables
from fst.analysis.report import write_csv
from fst.logging.jsonl import read_jsonl

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One strategy (with options) of a group, over its seeds."""

    label: str
    runs: list[dict] = field(default_factory=list)

    def _values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.runs if r.get(key) is not None]

    def stat(self, key: str) -> tuple[float | None, float | None]:
        v = self._values(key)
        if not v:
            return None, None
        return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None)

    def curve(self, x: str) -> tuple[list[float], list[float]]:
        """Mean validation metric per epoch over the seeds, against ``x`` (epoch | time)."""
        by_epoch: dict[int, list[tuple[float, float]]] = defaultdict(list)
        for r in self.runs:
            for rec in r["_curve"]:
                by_epoch[rec["epoch"]].append((rec["time"], rec["value"]))
        xs, ys = [], []
        for epoch in sorted(by_epoch):
            pts = by_epoch[epoch]
            xs.append(epoch + 1 if x == "epoch" else statistics.fmean(t for t, _ in pts))
            ys.append(statistics.fmean(v for _, v in pts))
        return xs, ys


@dataclass
class Group:
    """Comparable runs: the same settings apart from the sparsity plan and the seed."""

    label: str
    metric: str
    rows: dict[str, Row] = field(default_factory=dict)


def _curve(run_dir: Path, metric: str) -> tuple[list[dict], float | None]:
    """``[{"epoch", "time", "value"}]`` of every validation record, and the last record's time."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return [], None
    recs = read_jsonl(path)
    key = f"val/{metric}"
    curve = [
        {"epoch": int(r["epoch"]), "time": float(r.get("time", 0.0)), "value": float(r[key])}
        for r in recs
        if r.get(key) is not None
    ]
    last = max((float(r["time"]) for r in recs if "time" in r), default=None)
    return curve, last


def collect(roots: list[str | Path]) -> list[dict]:
    """Every finished run (``summary.json``) under ``roots``, with ``_curve``, ``wall_s`` and
    ``img_per_s`` added. Raises ``FileNotFoundError`` for a root that does not exist."""
    runs = tables.find_summaries(roots)
    for s in runs:
        metric = s.get("primary_metric") or "top1"
        s["_curve"], s["wall_s"] = _curve(Path(s["run_dir"]), metric)
        steps, batch, t = s.get("steps"), s.get("global_batch_size"), s.get("train_time_s")
        s["img_per_s"] = steps * batch / t if steps and batch and t else None
    return runs


def group(runs: list[dict]) -> list[Group]:
    """Runs grouped by their comparable settings (largest group first), rows by strategy."""
    found: dict[tuple, list[dict]] = defaultdict(list)
    for s in runs:
        found[tuple(sorted(tables.settings(s).items()))].append(s)
    firsts = {key: members[0] for key, members in found.items()}
    labels = tables._column_labels(firsts)
    groups = []
    for key, members in found.items():
        metric = members[0].get("primary_metric") or "top1"
        g = Group(labels[key], metric)
        for s in sorted(members, key=lambda s: (tables.row_label(s), s.get("seed") or 0)):
            g.rows.setdefault(tables.row_label(s), Row(tables.row_label(s))).runs.append(s)
        groups.append(g)
    groups.sort(key=lambda g: (-sum(len(r.runs) for r in g.rows.values()), g.label))
    return groups


def _pm(mean: float | None, std: float | None, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f}" + ("" if std is None else f" ± {std:.{digits}f}")


COLUMNS = ("strategy", "final", "best", "n", "wall s", "images/s", "steps")


def table_rows(g: Group) -> list[dict[str, Any]]:
    """One dict per row of ``g``: the numbers behind :func:`markdown` (also the CSV)."""
    out = []
    for row in g.rows.values():
        final, final_sd = row.stat(f"val/{g.metric}")
        best, best_sd = row.stat(f"best/val/{g.metric}")
        steps = sorted({int(r["steps"]) for r in row.runs if r.get("steps") is not None})
        out.append(
            {
                "group": g.label,
                "strategy": row.label,
                "metric": g.metric,
                "final_mean": final,
                "final_std": final_sd,
                "best_mean": best,
                "best_std": best_sd,
                "n": len(row.runs),
                "seeds": " ".join(str(r.get("seed")) for r in row.runs),
                "wall_s": row.stat("wall_s")[0],
                "img_per_s": row.stat("img_per_s")[0],
                "steps": "/".join(map(str, steps)),
            }
        )
    return out


def markdown(g: Group) -> str:
    """The group's table (GitHub Markdown)."""
    lines = [
        f"{g.label} (val/{g.metric}; mean ± std over seeds)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for r in table_rows(g):
        cells = [
            r["strategy"],
            _pm(r["final_mean"], r["final_std"]),
            _pm(r["best_mean"], r["best_std"]),
            str(r["n"]),
            _pm(r["wall_s"], None, 1),
            _pm(r["img_per_s"], None, 0),
            r["steps"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(g: Group, path: Path) -> Path:
    """Validation metric against epoch and against wall-clock seconds, one line per row."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for row in g.rows.values():
        for ax, x in zip(axes, ("epoch", "time")):
            xs, ys = row.curve(x)
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=f"{row.label} (n={len(row.runs)})")
    axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("wall-clock time (s)")
    axes[0].set_ylabel(f"val/{g.metric}")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(g.label, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def compare(roots: list[str | Path], out: Path | None, *, figures: bool = True) -> str:
    """The Markdown report of the runs under ``roots``; with ``out`` also written there
    (``compare.md``, ``compare.csv``, ``compare.png`` or ``compare_<k>.png`` per group)."""
    runs = collect(roots)
    if not runs:
        raise FileNotFoundError(
            f"no finished run (summary.json) under {', '.join(map(str, roots))}"
        )
    groups = group(runs)
    parts = [f"{len(runs)} runs in {len(groups)} group(s) of comparable runs"]
    csv_rows = []
    for k, g in enumerate(groups, 1):
        text = f"## {k}. " + markdown(g)
        if out is not None and figures:
            name = "compare.png" if len(groups) == 1 else f"compare_{k}.png"
            plot(g, out / name)
            text += f"\n\nCurves: {out / name}"
        parts.append(text)
        csv_rows += table_rows(g)
    report = "\n\n".join(parts) + "\n"
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.md").write_text(report)
        write_csv(out / "compare.csv", csv_rows)
    return report


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - hydra is a dependency
    Callback = object  # type: ignore[misc,assignment]


class MultirunSummary(Callback):
    """Hydra callback: when a multirun ends, print the comparison of its runs and write it (and
    the curves) into the sweep directory. Never fails the sweep."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            report = compare([sweep_dir], sweep_dir)
        except FileNotFoundError:
            print(f"multirun summary: no finished run under {sweep_dir}", flush=True)
            return
        except Exception as e:  # noqa: BLE001 - a summary must never turn a sweep into a failure
            log.warning("multirun summary failed: %s: %s", type(e).__name__, e)
            return
        print(
            f"\nmultirun summary ({sweep_dir}; again: python scripts/compare.py {sweep_dir})\n"
            + report,
            flush=True,
        )
