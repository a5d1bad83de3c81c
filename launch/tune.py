r"""Search the hyperparameters of a continual-learning method with Ray Tune, Optuna and ASHA.

Optuna's seeded TPE proposes configurations from search_spaces/<method>.yaml; every trial runs
the method over the benchmark's tasks and reports the mean validation accuracy over the tasks
seen so far after each task; at the rungs every configuration is judged against every other
recorded there (ASHA's rule) and the weak ones stop. Test data never chooses anything. At the end the best configuration is merged into a best-args YAML file that
launch/train.py --load-best-args replays, every trial goes to a Parquet table, and a summary
is printed.

Examples:
    python launch/tune.py --method vib --samples 200             # seq-digits, offline
    python launch/tune.py --method vib --dataset seq-mnist --samples 200 --final-eval-seeds 3
    python launch/tune.py --method derpp --dataset seq-digits --samples 16
    python launch/tune.py --method derpp --dataset seq-mnist --buffer-size 500 --samples 64 \
        --trial-seeds 3 --final-eval-seeds 5
    python launch/tune.py --method vib --dataset seq-mnist --samples 200 --population 25 --final-eval-seeds 3
    python launch/tune.py --method derpp --dataset seq-mnist --buffer-size 200,500,5120 --samples 64  # a table
    python launch/tune.py --method derpp --dataset seq-mnist --name my-search --resume
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from raycl.cli import (add_hyperparameter_flags, entry_point, given_buffer_sizes, given_hyperparameters, method_help,
                       requested_method)
from raycl.cli import add_benchmark_flags, add_help_all, given_benchmark_options, help_all_requested, short_help
from raycl.data import benchmark_names
from raycl.device import PRECISIONS
from raycl.tune.options import AUTO, EXPORT_FORMATS, PROTOCOLS, SearchOptions


def whole_or_auto(flag: str):
    """An argparse type: a whole number, or the word auto."""
    def parse(text: str):
        if text == AUTO:
            return AUTO
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number or {AUTO}, got {text!r}") from None

    return parse


def cohort_help(method: str | None) -> str:
    """What ``method``'s cohorts draw once (shared) and per configuration, for --help."""
    if method is None:
        return "python launch/tune.py --method M --help lists M's hyperparameters and what its cohorts share"
    from raycl.hparams import param_specs
    from raycl.methods import get_method, get_population_method

    shared = get_population_method(method).shared_hyperparameters()
    free = [n for n in param_specs(get_method(method).Config) if n not in shared]
    return "\n".join([
        *textwrap.wrap("hyperparameters of a --population cohort (shared = drawn once per cohort, the rest per "
                       "configuration; the search space's choices of shared ones are explored across cohorts):", 79),
        *textwrap.wrap(f"  {method:12s} per configuration: {', '.join(free) or '(none)'}", 79,
                       subsequent_indent=" " * 33),
        "  (every other hyperparameter is shared)"])


# What --help lists besides the method's hyperparameters: the flags a first search needs, some with a
# shorter help than --help-all's (None: their own).
FIRST_SEARCH = {
    "--method": None, "--dataset": None, "--samples": None, "--space": None,
    "--protocol": "how a configuration is judged: seen-tasks (default): its mean val accuracy over the tasks "
                  "seen, weak ones stopped at the rungs; first-task, end-of-training; chosen per task: chf, "
                  "current-task, seen-tasks-val, pbt (--help-all says more)",
    "--population": "configurations trained as one population per trial; auto (default): from the samples and "
                    "the trial slots; 1: one per trial",
    "--search-seed": None, "--cpus-per-trial": None, "--max-concurrent": None, "--storage-path": None,
    "--name": None, "--resume": None,
    "--verbose": "0: the summary only; 1: a status line and the top configurations (default); 2, 3: Ray Tune's",
    "--best-args": None, "--final-eval-seeds": None,
    "--tracker": "log live to mlflow[:URI] or wandb[:PROJECT], one run per configuration (repeatable; pip "
                 "install 'raycl[mlflow]' or 'raycl[wandb]')",
    "--data-root": None,
}


def build_parser(method: str | None = None, full: bool = True) -> argparse.ArgumentParser:
    """The flags, with ``method``'s hyperparameters in the help (none without a method); not
    ``full``: the short help, a first search's flags only (every flag is accepted either way)."""
    description = __doc__ if full else textwrap.fill(" ".join(__doc__.split("\n\n", 1)[0].split()), 79)
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=cohort_help(method))
    add_help_all(p)
    what = p.add_argument_group("what to search")
    what.add_argument("--method", required=True, help=method_help())
    what.add_argument("--dataset", default="seq-digits",
                      help=f"benchmark: {', '.join(benchmark_names())} (default seq-digits, offline)")
    what.add_argument("--samples", type=int, default=16, help="number of configurations to try (default 16)")
    what.add_argument("--space", metavar="FILE", default=None,
                      help="search-space YAML (default: search_spaces/<method>.yaml, or the one a plugin ships)")
    what.add_argument("--protocol", default="seen-tasks", choices=PROTOCOLS,
                      help="one configuration for the stream: seen-tasks = mean val accuracy over the tasks "
                           "seen, reported after every task, final value after the last task (default); "
                           "first-task = the same on only the first --protocol-tasks tasks; end-of-training = "
                           "all tasks, no early stopping. Hyperparameters chosen per task (a schedule): chf = "
                           "the continual hyperparameter framework (plasticity grid, then stability decay, see "
                           "--chf-*); current-task / seen-tasks-val = --candidates proposals from Optuna per "
                           "task, chosen by the task's val accuracy / by the mean over every task seen; pbt = "
                           "population-based training over task boundaries: --samples trials, each the centre of "
                           "--candidates perturbed candidates, Ray Tune's PBT exploiting across trials at every task")
    what.add_argument("--protocol-tasks", type=int, default=2, metavar="K",
                      help="tasks used by --protocol first-task (default 2)")
    what.add_argument("--seed", type=int, default=0, help="first training seed of every trial (default 0)")
    what.add_argument("--trial-seeds", type=int, default=1, metavar="S",
                      help="train every configuration on S seeds at once (one population per trial); the "
                           "objective ASHA and Optuna see is the mean over the seeds (default 1)")
    what.add_argument("--trial-data-seeds", default="vary", choices=("vary", "same"),
                      help="with --trial-seeds > 1: vary = seed i also draws its own data (data seed "
                           "--data-seed + i: its own permutations, angles and validation split), so a "
                           "configuration cannot win on one lucky draw; same = every seed on one benchmark "
                           "(default vary)")
    what.add_argument("--population", type=whole_or_auto("--population"), default=AUTO, metavar="P",
                      help="train P configurations per trial as one population (a cohort, asked from Optuna "
                           "together, with --trial-seeds S: P x S members); at each rung every configuration "
                           "is judged against the whole search and those stopped leave the population; each "
                           "configuration is its own Optuna trial and Parquet row; --samples counts "
                           "configurations. The hyperparameters a population must share are drawn once per "
                           "cohort (see below). auto (default): at least two cohorts per trial slot (samples / "
                           "(2 x slots)), capped per device, and one configuration per trial for a method "
                           "without a vectorised form and for the per-task protocols; 1: one configuration per "
                           "trial")
    what.add_argument("--start-from", metavar="FILE", default=None,
                      help="evaluate this file's values for the method, dataset and buffer size first: mammoth's "
                           "utils/best_args.py (CLS-ER's, SYNERgy's too), a mammoth models/config/<model>.yaml, or "
                           "a raycl best-args YAML; names are mapped to raycl's, flags win over the file, and values "
                           "outside the search space or without a raycl name are named in one warning")
    what.add_argument("--search-seed", type=int, default=0, help="seed of Optuna's TPE sampler (default 0)")
    what.add_argument("--tpe-window", type=int, default=SearchOptions.tpe_window, metavar="N",
                      help="TPE proposes from the best trials and the N most recent ones, so that a proposal's "
                           "cost stops growing with the search; below N trials it is plain TPE (default "
                           f"{SearchOptions.tpe_window}; 0: the whole history at every proposal)")

    per_task = p.add_argument_group("per-task protocols (--protocol chf, current-task, seen-tasks-val, pbt)")
    defaults = SearchOptions  # its fields hold the defaults
    per_task.add_argument("--chf-grid", type=float, nargs="+", default=list(defaults.chf_grid), metavar="LR",
                          help="chf: learning rates of the maximal-plasticity search (default: the DER "
                               f"repository's {' '.join(str(lr) for lr in defaults.chf_grid)})")
    per_task.add_argument("--chf-drop", type=float, default=defaults.chf_drop, metavar="P",
                          help="chf: the stability decay stops once the task's val accuracy reaches (1 - P) x the "
                               f"best fine-tuning accuracy (default {defaults.chf_drop})")
    per_task.add_argument("--chf-decay", type=float, default=defaults.chf_decay,
                          help=f"chf: factor of each stability decay (default {defaults.chf_decay})")
    per_task.add_argument("--chf-decay-limit", type=int, default=defaults.chf_decay_limit, metavar="N",
                          help=f"chf: at most N decays per task (default {defaults.chf_decay_limit}, as FACIL)")
    per_task.add_argument("--candidates", type=int, default=defaults.candidates, metavar="K",
                          help="current-task, seen-tasks-val: candidates Optuna proposes per task; pbt: candidates "
                               f"per trial and task, its centre and perturbations of it (default {defaults.candidates})")

    sched = p.add_argument_group("early stopping (ASHA's rule per configuration, on the task count)")
    sched.add_argument("--grace-period", type=whole_or_auto("--grace-period"), default=AUTO,
                       help="tasks every configuration trains before the first rung; auto: the method's first "
                            "task that trains with its stability mechanism (task 2 for replay, penalties, "
                            "distillation; 1 for methods without one), so the rung sees what is tuned act "
                            "(default auto)")
    sched.add_argument("--reduction-factor", type=int, default=4,
                       help="a configuration goes on past a rung when it is in the top 1/factor of the "
                            "configurations recorded there; rungs sit at grace period x factor^k (default 4)")
    sched.add_argument("--audit-fraction", type=float, default=0.0, metavar="F",
                       help="a random share F of the configurations is never stopped early, so the summary "
                            "can measure how well each rung predicts the final objective on an unselected "
                            "sample (default 0)")

    res = p.add_argument_group("resources and cluster")
    res.add_argument("--cpus-per-trial", type=float, default=1.0,
                     help="CPUs per trial; also its torch thread count (default 1)")
    res.add_argument("--gpus-per-trial", type=float, default=0.0,
                     help="GPUs per trial: 0 (train on CPUs), a fraction in (0, 1) (0.5 = two trials per GPU, "
                          "each capped at that share of its memory) or 1; a trial given a GPU trains on it, and "
                          "one given none on its CPUs. A value no node of the cluster has is an error at once "
                          "(default 0)")
    res.add_argument("--wait-for-resources", action="store_true",
                     help="do not stop when no node of the cluster has --gpus-per-trial GPUs: wait for Ray to "
                          "place the trials (a cluster still scaling up)")
    res.add_argument("--precision", default="fp32", choices=PRECISIONS,
                     help="what the trials and the final evaluation train at: fp32 (exact), tf32 (TF32 matrix "
                          "products and convolutions on a GPU, fp32 on CPUs) or bf16 (forward passes in bf16 "
                          "autocast, float32 weights); recorded in the best-args provenance (default fp32)")
    res.add_argument("--max-concurrent", type=int, default=None,
                     help="at most this many trials at once (default: as many as resources allow)")
    res.add_argument("--address", default=None,
                     help="join a running Ray cluster: 'auto' or host:port (default: start a local one)")
    res.add_argument("--storage-path", default="experiments",
                     help="where experiments are written (default ./experiments); on a multi-node "
                          "cluster this must be storage every node can reach (NFS, s3://...)")
    res.add_argument("--name", default=None,
                     help="experiment name (default <method>-<dataset>-b<buffer size>, or <method>-<dataset> for "
                          "a method without a buffer)")
    res.add_argument("--resume", action="store_true",
                     help="continue the interrupted experiment --name without redoing finished trials")
    res.add_argument("--dashboard", action="store_true",
                     help="start the Ray dashboard on 127.0.0.1 and print its URL")
    res.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2, 3),
                     help="0: only the final summary; 1: one status line (configurations finished, "
                          "running, pruned, diverged, best so far, time left) and the top configurations "
                          "when they change (default); 2: Ray Tune's own trial boxes and status tables; "
                          "3: also every trial's results")

    out = p.add_argument_group("outputs")
    out.add_argument("--best-args", metavar="FILE", default=None,
                     help="best-args YAML to merge the winner into (default best_args/<dataset>.yaml)")
    out.add_argument("--export-format", default="raycl", choices=EXPORT_FORMATS,
                     help="raycl: the best-args YAML only; mammoth: also the winner as mammoth's "
                          "models/config/<model>.yaml (for --model_config best, names mapped back) in the best-args "
                          "file's folder, under models/config/, merged into the file there (default raycl)")
    out.add_argument("--parquet", metavar="FILE", default=None,
                     help="table of every trial (default <experiment>/trials.parquet)")
    out.add_argument("--optuna-storage", metavar="FILE|URL", default=None,
                     help="also keep the Optuna study in this journal file, e.g. optuna.log (Optuna's journal "
                          "storage: one appended line per write, the fastest), or in this database, e.g. "
                          "sqlite:///optuna.db (opened in write-ahead-log mode); view either with "
                          "optuna-dashboard FILE|URL")
    out.add_argument("--final-eval-seeds", type=int, default=0, metavar="N",
                     help="retrain the best config on N seeds and report test mean ± std (default 0)")
    out.add_argument("--tracker", action="append", default=[], metavar="KIND[:WHERE]",
                     help="log the search live to an experiment tracker, one run per configuration under a run "
                          "of the search, repeatable: mlflow[:URI] (a tracking server's http:// address, "
                          "sqlite:///file.db, ...; pip install 'raycl[mlflow]') or wandb[:PROJECT] (W&B's own "
                          "settings, e.g. WANDB_MODE=offline; pip install 'raycl[wandb]'). A tracker that is "
                          "down or slow costs one warning line, never the search. TensorBoard always gets a "
                          "run folder per configuration, <experiment>/tensorboard/")

    data = p.add_argument_group("data")
    data.add_argument("--data-root", default=None,
                      help="folder holding MNIST/raw/ etc. (default: $RAYCL_DATA, else ~/.cache/raycl)")
    data.add_argument("--val-fraction", type=float, default=0.1,
                      help="share of each task's training data held out for validation (default 0.1)")
    data.add_argument("--samples-per-task", type=int, default=None,
                      help="training examples per task of the mer-* benchmarks (default: their protocol's)")
    data.add_argument("--data-seed", type=int, default=0,
                      help="seed of the validation split, permutations and angles (default 0)")
    add_benchmark_flags(data)
    add_hyperparameter_flags(p, method, note=" (fixes it for the whole search)" if full else "",
                             description="each flag fixes it for the whole search" if full else
                             "each fixes it for the whole search (else the space's range)")
    if not full:
        short_help(p, FIRST_SEARCH, method, "tune.py")
    return p


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = build_parser(requested_method(argv), full=help_all_requested(argv)).parse_args(argv)
    buffer_size = given_buffer_sizes(args, args.method)  # one size, or a table's several: 200,500,5120
    fixed = given_hyperparameters(args, args.method)
    options = SearchOptions(
        method=args.method, dataset=args.dataset, samples=args.samples,
        buffer_size=buffer_size, fixed=fixed, space_path=args.space,
        protocol=args.protocol, protocol_tasks=args.protocol_tasks, grace_period=args.grace_period,
        reduction_factor=args.reduction_factor, audit_fraction=args.audit_fraction, seed=args.seed, search_seed=args.search_seed,
        tpe_window=args.tpe_window,
        trial_seeds=args.trial_seeds, trial_data_seeds=args.trial_data_seeds, population=args.population,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        wait_for_resources=args.wait_for_resources, precision=args.precision,
        max_concurrent=args.max_concurrent, address=args.address, storage_path=args.storage_path,
        name=args.name, resume=args.resume, optuna_storage=args.optuna_storage, best_args=args.best_args,
        start_from=args.start_from, export_format=args.export_format,
        parquet=args.parquet, final_eval_seeds=args.final_eval_seeds, data_root=args.data_root,
        val_fraction=args.val_fraction, data_seed=args.data_seed, dashboard=args.dashboard,
        samples_per_task=args.samples_per_task,
        benchmark_options=given_benchmark_options(args), backbone=args.backbone,
        verbose=args.verbose, chf_grid=tuple(args.chf_grid), chf_drop=args.chf_drop, chf_decay=args.chf_decay,
        chf_decay_limit=args.chf_decay_limit, candidates=args.candidates, trackers=tuple(args.tracker),
    )
    from raycl.tune.search import SearchInterrupted, run_search

    if args.verbose <= 1:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)

    try:
        report = run_search(options)
    except SearchInterrupted as exc:
        print(exc, file=sys.stderr)
        return 130
    return 0 if report.best_config is not None else 1


if __name__ == "__main__":
    sys.exit(main())
