"""Turn a finished (or interrupted) search into figures and one HTML page.

Reads only the experiment folder's own files (trials.parquet, each trial's result.json, the best
trial's last checkpoint), so it works on a search copied from a cluster. Writes PNG figures and
index.html into EXPERIMENT_DIR/report (or --out) and prints the page's path.

    python launch/report.py experiments/derpp-seq-mnist-b500
"""

from __future__ import annotations

import argparse
import sys

from raycl.cli import entry_point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", metavar="EXPERIMENT_DIR", help="folder of one search (holds trials.parquet)")
    parser.add_argument("--out", default=None, help="where to write the report (default EXPERIMENT_DIR/report)")
    parser.add_argument("--optuna-storage", metavar="FILE|URL", default=None,
                        help="the search's Optuna study (its journal file, e.g. optuna.log, or its database, e.g. "
                             "sqlite:///optuna.db); default: rebuild the study from the trials table")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    from raycl.tune.report import write_report

    files = write_report(args.experiment, args.out, args.optuna_storage)
    for note in files.notes:
        print(f"note: {note}")
    for figure in files.figures:
        print(f"figure: {figure}")
    print(f"report: {files.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
