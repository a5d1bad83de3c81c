r"""Train one continual-learning method over a benchmark, for one or several seeds.

The seeds train together as one population (vectorised methods run them in lockstep, the others
member by member in one process); --one-at-a-time trains them as separate runs instead.

Examples:
    python launch/train.py --method derpp --dataset seq-mnist --buffer-size 500 --lr 0.03 \
        --alpha 1 --beta 0.5 --seeds 3
    python launch/train.py --method derpp --load-best-args best_args/seq-mnist.yaml --seeds 5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import textwrap
import time

import numpy as np
import torch

from raycl.cli import add_hyperparameter_flags, entry_point, given_hyperparameters, method_help, requested_method
from raycl.cli import add_benchmark_flags, add_help_all, given_benchmark_options, help_all_requested, short_help
from raycl.data import benchmark_names, load_benchmark
from raycl.device import PRECISIONS, apply_precision, auto_device, resolve_device
from raycl.errors import RayclError
from raycl.files import atomic_write_text, load_best_args, read_yaml
from raycl.files import load_best_args_provenance
from raycl.methods import make_config
from raycl.results import aggregate, summary_table
from raycl.selection import schedule_configs
from raycl.train import PopulationRun

log = logging.getLogger("raycl.train")


# What --help lists besides the method's hyperparameters; --help-all lists every flag.
FIRST_RUN = {"--method": None, "--dataset": None, "--seed": None, "--seeds": None, "--data-root": None,
             "--load-best-args": None, "--json": None, "--device": None}


def build_parser(method: str | None = None, full: bool = True) -> argparse.ArgumentParser:
    """The flags, with ``method``'s hyperparameters in the help (none without a method); not
    ``full``: the short help, a first run's flags only (every flag is accepted either way)."""
    description = __doc__ if full else textwrap.fill(" ".join(__doc__.split("\n\n", 1)[0].split()), 79)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_help_all(parser)
    parser.add_argument("--method", required=True, help=method_help())
    parser.add_argument("--dataset", default=None,
                        help=f"benchmark: {', '.join(benchmark_names())} (default: seq-digits, or the "
                             "only dataset in --load-best-args)")
    parser.add_argument("--seed", type=int, default=0, help="first training seed (default 0)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="number of seeds, seed .. seed+N-1; reports mean ± std (default 1)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding MNIST/raw/ etc. (default: $RAYCL_DATA, else ~/.cache/raycl)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each task's training data held out, stratified, for validation "
                             "(default 0.1; 0 trains on all of it)")
    parser.add_argument("--samples-per-task", type=int, default=None,
                        help="training examples per task of the mer-* benchmarks (default: 1000, or 200 for "
                             "mer-many-permutations)")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the validation split, permutations and rotation angles (default: the "
                             "training seed, so several seeds also average over permutations and angles, "
                             "as the DER paper's runs do)")
    add_benchmark_flags(parser)
    parser.add_argument("--load-best-args", metavar="FILE", default=None,
                        help="start from the hyperparameters a search exported to FILE for this dataset, "
                             "method and --buffer-size, on the benchmark options and backbone it searched "
                             "with; flags given here override them")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="write config, per-seed and mean ± std accuracies (percent) to OUT")
    parser.add_argument("--device", default=os.environ.get("RAYCL_DEVICE", "auto"),
                        help="where to train: auto (cuda where CUDA works, else cpu, saying why), cpu, cuda or "
                             "cuda:N (default $RAYCL_DEVICE, else auto)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (exact), tf32 (TF32 matrix products and convolutions on a GPU, fp32 on CPUs) "
                             "or bf16 (forward passes in bf16 autocast, float32 weights) (default fp32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="train the seeds one after another, each a population of one, instead of as one "
                             "population (same numbers; for comparison, or to bound memory)")
    add_hyperparameter_flags(parser, method)
    if not full:
        short_help(parser, FIRST_RUN, method, "train.py")
    return parser


def _dataset_from_best_args(path: str) -> str:
    data = read_yaml(path) or {}
    if not isinstance(data, dict) or len(data) != 1:
        raise RayclError(f"{path} holds datasets {sorted(data) if isinstance(data, dict) else '?'}; "
                         "choose one with --dataset")
    return next(iter(data))


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser(requested_method(argv), full=help_all_requested(argv)).parse_args(argv)
    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seeds < 1:
        raise RayclError(f"--seeds must be at least 1, got {args.seeds}")
    if args.device == "auto":
        device, why = auto_device()
        log.info("%s", why)
    else:
        device = resolve_device(args.device)
    dataset = args.dataset or (_dataset_from_best_args(args.load_best_args) if args.load_best_args else "seq-digits")
    values = {}
    given = given_hyperparameters(args, args.method)
    benchmark_options, backbone = {}, None
    if args.load_best_args:
        size = int(given["buffer_size"]) if "buffer_size" in given else None
        values.update(load_best_args(args.load_best_args, dataset, args.method, size))
        found = load_best_args_provenance(args.load_best_args, dataset, args.method, size)
        benchmark_options, backbone = found.get("benchmark_options") or {}, found.get("backbone")
        if not isinstance(benchmark_options, dict) or not isinstance(backbone, (str, type(None))):
            raise RayclError(f"{args.load_best_args}: the provenance of {dataset}/{args.method} must give "
                             "benchmark_options as a mapping and backbone as a name")
        benchmark_options = dict(benchmark_options)
    values.update(given)
    benchmark_options.update(given_benchmark_options(args))
    backbone = args.backbone or backbone
    seeds = list(range(args.seed, args.seed + args.seeds))
    data_seeds = seeds if args.data_seed is None else [args.data_seed] * len(seeds)
    benchmarks = {s: load_benchmark(dataset, args.data_root, args.val_fraction, s, samples_per_task=args.samples_per_task,
                                    backbone=backbone, options=benchmark_options)
                  for s in dict.fromkeys(data_seeds)}
    reference = benchmarks[data_seeds[0]]
    # A per-task schedule (values that are lists, one per task): one config per task.
    task_values = schedule_configs(values, reference.n_tasks)
    schedule = [make_config(args.method, v, reference.defaults_for(args.method)) for v in task_values]
    config = schedule[0]
    primary = reference.settings[0]
    apply_precision(args.precision, device, convolutional=reference.model != "mlp")
    log.info("%s on %s (%d tasks, %s%s), config %s", args.method, dataset, reference.n_tasks, reference.model,
             f", options {reference.options}" if reference.options else "", config)
    per_task = {k: v for k, v in values.items() if isinstance(v, (list, tuple))}
    if per_task:
        log.info("per-task schedule (one value per task): %s", per_task)
    groups = [seeds] if not args.one_at_a_time else [[s] for s in seeds]
    results, diverged = [], []
    for group in groups:
        group_data = [data_seeds[seeds.index(s)] for s in group]
        distinct = list(dict.fromkeys(group_data))  # seeds sharing a data seed share its arrays
        population = PopulationRun([benchmarks[d] for d in distinct], args.method, config, group,
                                   [distinct.index(d) for d in group_data], device, precision=args.precision)
        run_start = time.perf_counter()
        while not population.finished:
            population.set_configs([schedule[population.next_task]] * len(population.alive))
            report = population.run_task()
            for member, reason in report.diverged.items():
                log.info("seed %d diverged: %s", group[member], reason)
            if not report.members:
                break
            per_member = report.val[primary].mean(1)
            test = f"  test {primary} {report.test[primary].mean():6.2f}" if report.test else ""
            spread = f" ± {per_member.std():.2f} over {len(per_member)} seeds" if len(per_member) > 1 else ""
            log.info("task %2d/%d  loss %.4f  val %s %6.2f%s%s  (%.1f s)", report.task + 1, report.n_tasks,
                     float(np.mean(report.loss)), primary, report.mean_val(primary), spread, test, report.seconds)
        wall = time.perf_counter() - run_start
        diverged += [group[m] for m in population.diverged]
        for m in population.alive:
            results.append(population.result(m, wall_s=wall))
            log.info("seed %d done: test %s %.2f", group[m], primary, results[-1].test_metrics[primary]["acc"])
    results.sort(key=lambda r: r.seed)

    wall_s = time.perf_counter() - started
    document = {
        "method": args.method, "dataset": dataset, "config": dataclasses.asdict(config),
        "schedule": per_task,
        "seeds": [r.seed for r in results], "diverged_seeds": diverged, "wall_s": wall_s,
        "train_s": [r.train_s for r in results], "val_fraction": args.val_fraction,
        "population": "one at a time" if args.one_at_a_time else len(seeds),
        "data_seeds": "same as seeds" if args.data_seed is None else args.data_seed,
        "device": str(device), "precision": args.precision,
        "benchmark_options": reference.options, "backbone": reference.model,
    }
    if results:
        document["test"] = aggregate(results, "test")
        document["val"] = aggregate(results, "val")
        print()
        print(summary_table(document, len(results)))
    print(f"\n{len(results)} seed(s) finished, {len(diverged)} diverged, {wall_s:.1f} s")
    if args.json:
        atomic_write_text(args.json, json.dumps(_finite(document), indent=2, default=str))
        print(f"wrote {args.json}")
    return 0 if results else 3


def _finite(value):
    """``value`` with NaN and infinities as None: strict JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
