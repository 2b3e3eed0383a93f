"""Tables 1, 3, 4, 5 as Markdown and CSV, ours beside the paper's, from run directories.

    python scripts/make_tables.py RUN_DIR [RUN_DIR ...] [--out results] [--suffix _digits]
        [--tables table1 table3 table4 table5]

Every ``summary.json`` under the given directories is read (``train.py`` writes one per run;
a multirun root holds many). Runs are averaged over seeds only when every other setting that
can change the result is equal (``fst.analysis.tables``): a row per strategy and its non-default
options, a column per scale (model with its arch and width, data set, image size, epochs, batch,
batch limits, optimizer, schedule, ...); each cell shows n, and one seed no ``± 0.00``. A table is written only when some run fits it:
``<out>/<table><suffix>.md`` and ``.csv``.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from fst.analysis import report, tables  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "runs", nargs="+", help="run directories or multirun roots (searched for summary.json)"
    )
    p.add_argument(
        "--out", default="outputs/tables", help="output directory (results/ only when asked)"
    )
    p.add_argument("--suffix", default="", help="appended to file names, e.g. _digits")
    p.add_argument("--tables", nargs="+", default=list(tables.TABLES), choices=list(tables.TABLES))
    args = p.parse_args(argv)

    try:
        summaries = tables.find_summaries(args.runs)
    except FileNotFoundError as e:  # a user's typo: one line, no traceback
        raise SystemExit(f"error: {e}; pass the output_root of train.py runs") from None
    if not summaries:
        raise SystemExit(
            f"no summary.json under {args.runs}; pass the output_root of train.py runs"
        )
    print(f"{len(summaries)} runs")
    written = []
    for key in args.tables:
        spec = tables.TABLES[key]
        built = tables.build(spec, summaries)
        if built is None:
            print(f"{key}: no matching runs, not written")
            continue
        csv_rows, body = built
        out = Path(args.out)
        report.write_csv(out / f"{key}{args.suffix}.csv", csv_rows)
        report.write_markdown(out / f"{key}{args.suffix}.md", spec.title, body)
        written.append(key)
        print(f"{key}: {len(csv_rows)} cells -> {out / (key + args.suffix)}.md")
    return written


if __name__ == "__main__":
    main()
