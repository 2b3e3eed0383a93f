"""Build ``table5_paper_vs_release.{md,csv}`` from the runs of the paper-vs-release sweep.

    python train.py -m +sweep=table5_paper_vs_release
    python train.py -m +experiment=table5_released_digits seed=0,1,2
    python scripts/table5_paper_vs_release.py outputs [--out results]

Reads every ``summary.json`` under the given roots whose experiment is
``release_ablation_digits`` or ``table5_released_digits``, takes ``sparsity.ir_coef`` and
``sparsity.x_pattern`` from the run's resolved config, and reports final val top-1 as
mean +- std over seeds (the latest run per configuration and seed). Runs of different scale
(model width, image size, epochs, batch, batch limits) are never averaged together: the scale
is part of each row. Writes into ``--out`` (a directory; default ``outputs/tables``).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import platform
import statistics
import subprocess
from pathlib import Path

import yaml

EXPERIMENTS = ("release_ablation_digits", "table5_released_digits")
# Table 5 of the paper (ResNet-18, ImageNet top-1): the paper's fixed mask without / with IR.
COMMITS: set[str] = set()  # the commits the runs recorded in their summary.json
PAPER = {("fixed", 0.0): 69.4, ("fixed", 1.0): 71.0}


def scale_of(cfg: dict) -> tuple:
    """What besides the strategy changes the result: (width, image size, epochs, batch, limit)."""
    model, data, trainer = cfg.get("model", {}), cfg.get("data", {}), cfg.get("trainer", {})
    return (
        model.get("width"),
        data.get("image_size"),
        trainer.get("epochs"),
        data.get("batch_size"),
        trainer.get("limit_train_batches"),
    )


def scale_label(scale: tuple) -> str:
    width, size, epochs, batch, limit = scale
    text = f"width {width}, {size} px, {epochs} epochs, batch {batch}"
    return text + (f", {limit} batches/epoch" if limit is not None else "")


def collect(roots: list[Path]) -> dict[tuple, dict[int, tuple[str, float]]]:
    """``{(strategy, x_pattern, ir_coef, scale): {seed: (run_dir, top1)}}``, latest per seed."""
    runs: dict[tuple, dict[int, tuple[str, float]]] = {}
    for root in roots:
        for f in sorted(root.rglob("summary.json")):
            s = json.loads(f.read_text())
            if s.get("experiment") not in EXPERIMENTS:
                continue
            cfg = yaml.safe_load(Path(s["config_path"]).read_text())
            sp = cfg["sparsity"]
            key = (
                s["strategy"],
                sp.get("x_pattern", "fixed"),
                float(sp.get("ir_coef", 1.0)),
                scale_of(cfg),
            )
            prev = runs.setdefault(key, {}).get(s["seed"])
            if prev is None or prev[0] < s["run_dir"]:  # run dirs end in a timestamp
                runs[key][s["seed"]] = (s["run_dir"], float(s["final"]["val/top1"]))
                COMMITS.add(s.get("commit") or "unknown")
    return runs


def describe(key) -> str:
    strategy, pattern, coef, _ = key
    if strategy == "fst_released":
        return "fst_released (release: ir 0.03, random4, twice-pruned Eq. 2 W, dense stem/fc)"
    label = {("fixed", 1.0): " = paper's fst", ("fixed", 0.0): " = paper's fst_noir"}.get(
        (pattern, coef), ""
    )
    return f"fst, x_pattern={pattern}, ir_coef={coef:g}{label}"


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("roots", nargs="*", default=["outputs"], help="dirs searched for summary.json")
    p.add_argument("--out", default="outputs/tables", help="output directory")
    args = p.parse_args(argv)
    runs = collect([Path(r) for r in args.roots])
    if not runs:
        raise SystemExit(f"no runs of {EXPERIMENTS} found under {args.roots}; run the sweep first")
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    order = sorted(runs, key=lambda k: (str(k[3]), k[0] == "fst_released", k[1], k[2]))
    for key in order:
        accs = [a for _, a in sorted(runs[key].values())]
        seeds = sorted(runs[key])
        mean = statistics.mean(accs)
        std = statistics.stdev(accs) if len(accs) > 1 else None  # one seed: no spread
        paper = PAPER.get((key[1], key[2])) if key[0] == "fst" else None
        rows.append(
            dict(
                config=describe(key),
                strategy=key[0],
                x_pattern=key[1],
                ir_coef=key[2],
                scale=scale_label(key[3]),
                seeds=len(seeds),
                top1_mean=round(mean, 2),
                top1_std="" if std is None else round(std, 2),
                per_seed=" ".join(f"{a:.2f}" for a in accs),
                paper_imagenet_top1="" if paper is None else paper,
            )
        )
    out = Path(args.out) / "table5_paper_vs_release"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Table 5, paper vs released code (embedded scale: digits, NOT ImageNet)",
        "",
        "Final val top-1 (%) of a ResNet-18 on scikit-learn's digits, mean and standard deviation",
        "over seeds (n = number of seeds; no spread for one seed). Each row's scale (model width,",
        "image size, epochs, batch) is read from its runs; rows of different scale are never",
        "averaged. The paper's column is its ImageNet ResNet-18 number (Table 5), for orientation",
        "only: different data and scale.",
        "",
        "| configuration | scale | n | top-1 mean | std | per seed | paper (ImageNet) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        std = "-" if r["top1_std"] == "" else f"{r['top1_std']:.2f}"
        lines.append(
            f"| {r['config']} | {r['scale']} | {r['seeds']} | {r['top1_mean']:.2f} | {std} | "
            f"{r['per_seed']} | {r['paper_imagenet_top1']} |"
        )
    lines += [
        "",
        "Commands: `python train.py -m +sweep=table5_paper_vs_release`, "
        "`python train.py -m +experiment=table5_released_digits seed=0,1,2`, "
        f"`python scripts/table5_paper_vs_release.py {' '.join(args.roots)} --out {args.out}`.",
        f"Machine: {platform.machine()} CPU, 2 cores (shared), {platform.python_version()}; "
        f"runs at commit(s) {', '.join(sorted(COMMITS))}; table built at {commit}; generated {datetime.date.today().isoformat()}.",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
