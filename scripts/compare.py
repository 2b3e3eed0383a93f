"""Compare strategies: one table per group of comparable runs, and accuracy curves.

    python scripts/compare.py RUN_DIR [RUN_DIR ...] [--out outputs/compare] [--no-plot]

RUN_DIR: run directories or sweep directories (``outputs/multirun/<date>``, an output root);
every finished run (``summary.json``) under them is read. Runs that differ only in the sparsity
plan and the seed form a group (``fst.analysis.compare``); each group gets a table (rows:
strategy and its non-default options; columns: final and best validation metric as
mean ± std over seeds, n, wall time, images/s, steps) and a PNG with the validation metric
against epoch and against wall-clock time, one line per strategy. The tables are printed and
written with the figures to ``--out`` (``compare.md``, ``compare.csv``, ``compare*.png``).
A multirun prints the same tables when it ends (and writes them into its sweep directory).
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from fst.analysis.compare import compare  # noqa: E402


def main(argv=None) -> str:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", help="run or sweep directories (searched for summary.json)")
    p.add_argument("--out", default="outputs/compare", help="where the tables and PNGs go")
    p.add_argument("--no-plot", action="store_true", help="tables only, no PNG")
    args = p.parse_args(argv)
    try:
        report = compare(args.runs, Path(args.out), figures=not args.no_plot)
    except FileNotFoundError as e:  # a typo or an empty directory: one line, no traceback
        raise SystemExit(
            f"error: {e}; pass run directories or sweep directories of train.py"
        ) from None
    print(report, end="")
    print(f"written: {Path(args.out) / 'compare.md'}")
    return report


if __name__ == "__main__":
    main()
