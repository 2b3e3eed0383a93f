"""The embedded ViT table (every strategy on the small ViT) beside the ResNet-18 numbers.

    python scripts/vit_table.py RUN_DIR [RUN_DIR ...] [--out results] [--name vit_digits]
        [--resnet results/table1_digits.csv ...]

Reads every ``summary.json`` under the run directories (``python train.py -m +sweep=vit_digits``
writes them) and, for the ResNet-18 columns, the CSV files of ``scripts/make_tables.py``
(default: ``results/table{1,3,5}_digits*.csv`` that exist). Writes ``<out>/<name>.md`` and
``.csv`` (default ``outputs/``; pass ``--out results`` for the committed table).
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from fst.analysis import report, tables, vit_table  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", help="run directories or multirun roots")
    p.add_argument("--out", default="outputs")
    p.add_argument("--name", default="vit_digits", help="file stem of the table")
    p.add_argument(
        "--resnet",
        nargs="*",
        default=None,
        help="make_tables CSV files with the ResNet-18 numbers (default: results/table*_digits*.csv)",
    )
    args = p.parse_args(argv)
    resnet_csvs = args.resnet
    if resnet_csvs is None:
        resnet_csvs = sorted(
            str(f)
            for t in ("table1", "table3", "table5")
            for f in (ROOT / "results").glob(f"{t}_digits*.csv")
        )
    try:
        summaries = tables.find_summaries(args.runs)
    except FileNotFoundError as e:  # a user's typo: one line, no traceback
        raise SystemExit(
            f"error: {e}; pass the output_root of train.py -m +sweep=vit_digits"
        ) from None
    try:
        csv_rows, body = vit_table.build(summaries, vit_table.read_resnet(resnet_csvs))
    except ValueError as e:
        raise SystemExit(f"{e}; pass the output_root of `train.py -m +sweep=vit_digits`") from e
    out = Path(args.out)
    report.write_csv(out / f"{args.name}.csv", csv_rows)
    report.write_markdown(out / f"{args.name}.md", vit_table.TITLE, body)
    print(f"{len(summaries)} runs, {len(csv_rows)} cells -> {out / args.name}.md")
    return out / f"{args.name}.md"


if __name__ == "__main__":
    main()
