"""Reproduce the DER paper's MNIST table with raycl's own searches, and print it as Markdown.

For every chosen row (default: ER, DER, DER++ x buffers 200 and 500 x seq-mnist, perm-mnist,
rot-mnist) this runs `launch/tune.py`'s search with the paper's batch size and one epoch, trying
the paper's published arguments first (--no-paper-start: search alone); rows that differ only in
their buffer size are one table search (`--buffer-size 200,500`: each size searched as if alone,
in shared populations). It retrains each winner on
--seeds seeds on all training data, tests it, and writes OUT/results.json (one entry per finished
row, merged as each row ends) and OUT/reproduction.md:

    | dataset | method | buffer | setting | paper | ours (mean ± std) | difference | ... | wall s |

The paper's values and arguments live in raycl/tune/der_paper.yaml, with their source.

Examples:
    python launch/reproduce.py --data-root ../shared/data                 # the 18 default rows
    python launch/reproduce.py --rows 'seq-mnist/*/500' --samples 16 --seeds 5
    python launch/reproduce.py --resume                                   # after an interruption
    python launch/reproduce.py --paper der-notebook --seeds 5             # the DER repository's notebook
    python launch/reproduce.py --list
"""

from __future__ import annotations

import argparse
import sys

from raycl.cli import entry_point
from raycl.cli import add_benchmark_flags, given_benchmark_options
from raycl.device import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", metavar="PATTERN", default=None,
                   help="rows to run, as dataset/method/buffer keys; shell patterns allowed "
                        "('rot-mnist/*/500', '*/derpp/*'); see --list (default: the paper's ER, DER and DER++ "
                        "rows)")
    p.add_argument("--list", action="store_true", help="print every row of the paper file and exit")
    p.add_argument("--samples", type=int, default=8,
                   help="configurations each row's search tries (default 8)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds the winner is retrained and tested on (default 3)")
    p.add_argument("--trial-seeds", type=int, default=1, metavar="S",
                   help="train every configuration of a row's search on S seeds at once and rank by their mean "
                        "(default 1)")
    p.add_argument("--out", default="reproduction",
                   help="folder for results.json, reproduction.md, best_args/ and experiments/ "
                        "(default ./reproduction)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows OUT/results.json holds and run the others (an interrupted row's "
                        "search continues where it stopped)")
    p.add_argument("--no-paper-start", dest="paper_start", action="store_false",
                   help="do not try the paper's published arguments first: the search alone")
    p.add_argument("--search-seed", type=int, default=0, help="seed of Optuna's TPE sampler (default 0)")
    p.add_argument("--paper", metavar="FILE", default=None,
                   help="paper-values YAML, or a shipped one by name: der-paper (raycl/tune/der_paper.yaml, the "
                        "DER paper's table; default) or der-notebook (the DER repository's notebook: chf DER and "
                        "DER++ at batch 64 on masked Class-IL)")
    p.add_argument("--data-root", default=None,
                   help="folder holding MNIST/raw/ (default: $RAYCL_DATA, else ~/.cache/raycl)")
    add_benchmark_flags(p)
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial and per test run (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial and per test run: 0, a fraction in (0, 1) (trials share a GPU) or 1; a "
                        "value no node of the cluster has is an error at once (default 0)")
    p.add_argument("--wait-for-resources", action="store_true",
                   help="do not stop when no node of the cluster has --gpus-per-trial GPUs: wait for Ray to place "
                        "the trials (a cluster still scaling up)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="what the searches and test runs train at: fp32, tf32 or bf16 (default fp32)")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or host:port)")
    p.add_argument("--verbose", type=int, default=0, choices=(0, 1, 2, 3),
                   help="Tune's output per search: 0 only this script's lines (default), 1 progress tables")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raycl.tune.reproduce import ReproduceOptions, load_paper_table, reproduce

    if args.list:
        table = load_paper_table(args.paper)
        print(f"rows of {table.path} (default methods: {', '.join(table.default_methods)}):")
        for row in table.rows:
            print(f"  {row.key:24s} paper {row.accuracy:6.2f}  args {row.args or '-'}")
        return 0
    options = ReproduceOptions(
        out=args.out, rows=args.rows, paper=args.paper, samples=args.samples, seeds=args.seeds,
        trial_seeds=args.trial_seeds,
        benchmark_options=given_benchmark_options(args), backbone=args.backbone,
        resume=args.resume, paper_start=args.paper_start, search_seed=args.search_seed, data_root=args.data_root,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, address=args.address,
        wait_for_resources=args.wait_for_resources, precision=args.precision, verbose=args.verbose,
    )
    _, markdown = reproduce(options, progress=lambda line: print(line, flush=True))
    print()
    print(markdown, end="")
    print(f"table: {options.out}/reproduction.md   results: {options.out}/results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
