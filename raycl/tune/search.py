"""Run a search: Ray Tune + Optuna (seeded TPE) + ASHA on per-task validation accuracy."""

from __future__ import annotations

import dataclasses
import logging
import os

from typing import TYPE_CHECKING

from raycl import storage
from raycl.data import Benchmark, load_benchmark
from raycl.errors import RayclError
from raycl.methods import get_method, get_population_method
from raycl.tune.options import AUTO, SearchOptions
from raycl.tune.placement import check_cluster_has_gpus, cluster_slots, share_scaled_limit
from raycl.tune.rungs import search_rungs
from raycl.tune.space import DefineByRun, SearchSpace, load_space
from raycl.tune.trial_names import trial_name
from raycl.vocabulary import COHORT, OBJECTIVE, RUNGS_FILE, TASK

if TYPE_CHECKING:
    from raycl.tune.export import SearchReport
    from raycl.tune.export_schedule import SelectionReport

log = logging.getLogger(__name__)


# Tune names every trial and its folder ``<id>_<number>_<n>configs`` (raycl.tune.trial_names).
TRIAL_NAMES = {"trial_name_creator": trial_name, "trial_dirname_creator": trial_name}


class SearchInterrupted(Exception):
    """The search stopped before every configuration ended (Ctrl-C): nothing is exported; its state
    is saved for ``--resume``."""


# The most members --population auto puts in one cohort, per kind of device a trial trains on, for
# MLP-sized networks and for the convolutional ones. On a CPU a stacked ResNet step costs each member
# at least what a run of its own does (launch/benchmark.py --stacked-convs), so there it stays one.
MEMBER_LIMIT = {"cpu": 16, "cuda": 256}
CONVOLUTIONAL_MEMBER_LIMIT = {"cpu": 1, "cuda": 16}


def prepare_space(options: SearchOptions) -> SearchSpace:
    """The space searched: the method's (or ``--space``), its values fixed by the flags; for a table of
    buffer sizes, the space of each size is ``prepare_space`` of that size alone."""
    space = load_space(options.method, options.dataset, options.space_path)
    fixed = dict(options.fixed)
    if options.table:
        from raycl.hparams import param_specs

        if "buffer_size" not in param_specs(get_method(options.method).Config):
            raise RayclError(f"--buffer-size does not apply to method {options.method!r} (it has no buffer)")
    elif options.buffer_size is not None:
        from raycl.hparams import param_specs

        if "buffer_size" not in param_specs(get_method(options.method).Config):
            raise RayclError(f"--buffer-size does not apply to method {options.method!r} (it has no buffer)")
        fixed["buffer_size"] = options.buffer_size
    if fixed:
        from raycl.hparams import build_config

        # The checked values, converted to their declared types, are what the trials and the
        # exported best-args see.
        config = build_config(get_method(options.method).Config, fixed, owner=f"method {options.method!r}")
        space = space.fix({name: getattr(config, name) for name in fixed})
    return space


def shared_hyperparameters(method: str) -> list[str]:
    """The hyperparameters one cohort draws once for all its configurations."""
    return get_population_method(method).shared_hyperparameters()


def trial_slots(options: SearchOptions, nodes: list[dict] | None = None) -> int:
    """How many trials the Ray cluster runs at once, as Ray packs them: per alive node (``ray.nodes()``
    by default) by its CPUs and, for trials given GPUs, floor(1/g) per GPU for a fraction g (one per
    GPU for 1); summed over the nodes, at most --max-concurrent, at least one."""
    slots = cluster_slots(nodes, options.cpus_per_trial, options.gpus_per_trial)
    if options.max_concurrent:
        slots = min(slots, options.max_concurrent)
    return max(1, slots)


def cohort_size(options: SearchOptions, slots: int, convolutional: bool = False) -> tuple[int, str]:
    """P for --population auto: at least two cohorts per trial slot (samples / (2 x slots)), at most
    the member limit of the device a trial trains on and of its network (``convolutional``); one for
    a method without a vectorised form (its members would train one after another anyway); and the
    reason in words."""
    from raycl.methods.base import MemberwiseMethod

    if issubclass(get_population_method(options.method), MemberwiseMethod):
        return 1, f"--population auto: {options.method} has no vectorised form, so one configuration per trial"
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    if convolutional and CONVOLUTIONAL_MEMBER_LIMIT[device] == 1:
        return 1, (f"--population auto: a stacked convolutional network is no faster per member than runs of "
                   f"its own on a {device}, so one configuration per trial")
    limit = member_limit(options, convolutional)
    wanted = max(1, options.samples // (2 * slots))
    size = min(wanted, limit)
    why = f"--population auto: {options.samples} samples / (2 x {slots} trial slots) = {wanted}"
    if size < wanted:
        why += f", capped at {limit} configurations of {options.trial_seeds} seed(s) per {device} trial"
    return size, why


def trial_seeds(options: SearchOptions) -> list[int]:
    return list(range(options.seed, options.seed + options.trial_seeds))


def prepare_benchmarks(options: SearchOptions) -> list[Benchmark]:
    """The benchmark of every trial seed (one per seed with ``trial_data_seeds`` "vary", else one)."""
    count = options.trial_seeds if options.trial_data_seeds == "vary" else 1
    benchmarks = []
    for offset in range(count):
        benchmark = load_benchmark(options.dataset, options.data_root, options.val_fraction,
                                   options.data_seed + offset, samples_per_task=options.samples_per_task,
                                   backbone=options.backbone, options=options.benchmark_options)
        if options.protocol == "first-task":
            if options.protocol_tasks > benchmark.n_tasks:
                raise RayclError(f"--protocol-tasks {options.protocol_tasks} exceeds the {benchmark.n_tasks} "
                                 f"tasks of {options.dataset}")
            benchmark = dataclasses.replace(benchmark, tasks=benchmark.tasks[: options.protocol_tasks])
        benchmarks.append(benchmark)
    return benchmarks



def _make_searcher(options: SearchOptions, space: SearchSpace, final_task: int):
    from raycl.tune.optuna_search import CohortOptunaSearch
    from raycl.tune.optuna_storage import open_storage
    from raycl.tune.sampler import search_sampler

    storage = open_storage(options.optuna_storage) if options.optuna_storage else None
    sampler = search_sampler(options)
    return CohortOptunaSearch(space=DefineByRun(space), metric=OBJECTIVE, mode="max", sampler=sampler,
                              storage=storage, study_name=options.experiment_name, final_task=final_task,
                              samples=options.samples, cohort_size=options.population,
                              shared=shared_hyperparameters(options.method) if options.population > 1 else (),
                              points_to_evaluate=_start_points(options, space, None) or None,
                              audit_fraction=options.audit_fraction, audit_seed=options.search_seed)


def _run_per_task(options: SearchOptions, space: SearchSpace, benchmarks: list[Benchmark]):
    """One trial that chooses the hyperparameters task by task (raycl.selection); its results."""
    from ray import tune

    from raycl.tune.per_task import SelectionProgress, read_selection, selection_trainable

    experiment = options.experiment_dir
    base = {d.name: d.values[0] for d in space.dimensions if d.kind == "fixed"}
    trainable = tune.with_resources(tune.with_parameters(
        selection_trainable, benchmarks=benchmarks, method=options.method, base=base, seed=options.seed,
        gpus=options.gpus_per_trial, precision=options.precision, protocol=options.protocol,
        chf=dataclasses.asdict(options.chf_settings), candidates=options.candidates,
        space=space, search_seed=options.search_seed, threads=max(1, int(options.cpus_per_trial)),
        optuna_storage=options.optuna_storage, study_name=options.experiment_name),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial})
    callbacks = [SelectionProgress(benchmarks[0].n_tasks)] if options.verbose >= 1 else []
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0" if options.verbose <= 1 else "1"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"  # Tune's loggers: no tracker writes TensorBoard here
    param_space, tune_config = {}, tune.TuneConfig(num_samples=1, **TRIAL_NAMES)
    if options.protocol == "pbt":
        param_space, tune_config = _pbt_config(options, space, benchmarks[0])
    if options.resume:
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=tune.RunConfig(
            name=options.experiment_name, storage_path=storage.resolve(options.storage_path),
            # PBT copies other trials' checkpoints: keep enough of them that none is gone when it does.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if options.protocol != "pbt" else 4),
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0 if options.verbose <= 1 else options.verbose - 1, callbacks=callbacks))
    results = tuner.fit()
    record = read_selection(results)
    if options.protocol == "pbt" and results.num_terminated + results.num_errors < len(results):
        record = None
    done = len(record["choices"]) if record else 0
    if results.num_errors == 0 and done < benchmarks[0].n_tasks:
        raise SearchInterrupted(f"search {options.experiment_name} interrupted after {done} of {benchmarks[0].n_tasks} "
                                f"tasks; nothing exported. Continue it with the same flags and --name "
                                f"{options.experiment_name} --resume")
    return results


def _pbt_config(options: SearchOptions, space: SearchSpace, benchmark: Benchmark):
    """Tune's param space (the trials' first centres) and PopulationBasedTraining, which at every task
    copies a top quarter trial's checkpoint into a bottom quarter one and mutates its centre."""
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raycl.methods import get_method
    from raycl.selection import per_member_space

    searched = per_member_space(space, get_method(options.method).Config).dimensions
    if not searched:
        raise RayclError(f"--protocol pbt needs per-member hyperparameters to search in the space of {options.method}")
    domains = {}
    for dim in searched:
        if dim.kind == "choice":
            domains[dim.name] = tune.choice(list(dim.values))
        elif dim.kind == "int":
            domains[dim.name] = tune.lograndint(dim.low, dim.high + 1) if dim.log else tune.randint(dim.low, dim.high + 1)
        else:
            domains[dim.name] = (tune.loguniform if dim.kind == "loguniform" else tune.uniform)(dim.low, dim.high)
    bounds = {d.name: (d.low, d.high) for d in searched if d.kind != "choice"}

    def within_bounds(config: dict) -> dict:  # Tune's perturbation multiplies without looking at the range
        for name, (low, high) in bounds.items():
            config[name] = type(config[name])(min(max(config[name], low), high))
        return config

    # Synchronous: every trial reaches the task before any exploits, so which trial copies which does not
    # depend on how fast each ran, and a search reruns the same.
    scheduler = PopulationBasedTraining(time_attr=TASK, metric=OBJECTIVE, mode="max", perturbation_interval=1,
                                        hyperparam_mutations=domains, custom_explore_fn=within_bounds, synch=True)
    # Reused actors: an exploit restores another trial's checkpoint into the same process instead of
    # starting a new one at every task.
    return domains, tune.TuneConfig(num_samples=options.samples, scheduler=scheduler, reuse_actors=True,
                                    max_concurrent_trials=options.max_concurrent,
                                    search_alg=BasicVariantGenerator(random_state=options.search_seed), **TRIAL_NAMES)


def init_ray(options: SearchOptions) -> None:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Trials checkpoint after every task by design; Tune's warning about frequent snapshots is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": options.dashboard, "log_to_driver": options.verbose > 1,
              "configure_logging": True, "logging_level": logging.WARNING}
    if options.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    from ray.job_config import JobConfig

    kwargs["job_config"] = JobConfig(metadata={"job_name": options.job_name})
    explicit_address = options.address not in (None, "auto")
    # Ray only looks for a token by itself for a local cluster; a token handed over in the
    # environment is meant for the cluster at --address.
    if explicit_address and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_MODE"] = "token"
        from ray._raylet import Config

        Config.initialize("")  # Ray read the mode when it was imported
    try:
        context = ray.init(address=options.address, **kwargs)
    except (ConnectionError, RuntimeError) as exc:
        if not _is_authentication_error(exc):
            raise
        raise RayclError(
            f"the Ray cluster at {options.address} wants its authentication token: set RAY_AUTH_TOKEN to it, or "
            "RAY_AUTH_TOKEN_PATH to a file holding it (`ray get-auth-token` on the head node prints it)") from None
    if options.dashboard and context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)
        if token_auth_enabled():
            print("  the cluster uses token authentication: the page asks for its token, which "
                  "`ray get-auth-token` prints", flush=True)


def _is_authentication_error(exc: BaseException | None) -> bool:
    from ray.exceptions import AuthenticationError

    while exc is not None:
        # Ray's GCS client error carries the authentication failure only in its message.
        if isinstance(exc, AuthenticationError) or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def token_auth_enabled() -> bool:
    """Whether this process talks to Ray with token authentication (Ray has no public call for it)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled
    except ImportError:
        return False
    return is_token_auth_enabled()


def run_search(options: SearchOptions) -> SearchReport | SelectionReport:
    """Search, write its outputs, evaluate the winner (``--final-eval-seeds``) and print the summary.
    Returns a stream protocol's :class:`raycl.tune.export.SearchReport`, a per-task protocol's
    :class:`raycl.tune.export_schedule.SelectionReport`; both name the config kept ``best_config``."""
    options.validate()
    space = prepare_space(options)
    benchmarks = prepare_benchmarks(options)
    benchmark = benchmarks[0]
    if options.start_from and not options.resume:
        from raycl.tune.start_from import with_start_point

        options = with_start_point(options, space, benchmark)
    _check_experiment_folder(options)
    init_ray(options)
    if not options.wait_for_resources:
        # A trial asking for more GPU than any node has would wait for Ray to place it forever.
        check_cluster_has_gpus(options.gpus_per_trial)
    if options.per_task:
        from raycl.tune.export_schedule import export_selection, print_selection_summary

        options = dataclasses.replace(options, population=1)  # auto: one path, its candidates a population

        report = export_selection(_run_per_task(options, space, benchmarks), options, space, benchmark)
        report.final_eval = final_evaluation(options, report.best_config)
        print_selection_summary(report, options, benchmark)
        return report
    population_reason = None
    even = options.population == AUTO
    if options.population == AUTO:
        every_size = dataclasses.replace(options, samples=options.samples * len(options.buffer_sizes))
        size, population_reason = cohort_size(every_size, trial_slots(options), convolutional=benchmark.model != "mlp")
        options = dataclasses.replace(options, population=size)
    from raycl.tune.export import export_search, print_summary
    from raycl.tune.trackers import search_trackers

    trackers = search_trackers(options, space, benchmark.n_tasks)
    try:
        if options.table:
            from raycl.tune.export_table import export_table_search, print_table_summary

            spaces = {size: prepare_space(dataclasses.replace(options, buffer_size=size))
                      for size in options.buffer_sizes}
            _fit_promotion_search(options, space, benchmarks, even, spaces, trackers)
            table = export_table_search(options, space, spaces, benchmark)
            if trackers is not None:
                trackers.finish(table)
            print_table_summary(table, options, benchmark)
            return table
        if options.population > 1:
            _fit_promotion_search(options, space, benchmarks, even, trackers=trackers)
            from raycl.tune.export import export_promotion_search

            report = export_promotion_search(options, space, benchmark)
        else:
            report = export_search(_fit_stream_search(options, space, benchmarks, trackers), options, space, benchmark)
        report.final_eval = final_evaluation(options, report.best_config)
        if trackers is not None:
            trackers.finish(report)
    finally:
        if trackers is not None:
            trackers.close()
    print_summary(report, options, space, benchmark, population_reason)
    return report


def _check_experiment_folder(options: SearchOptions) -> None:
    """A resumed search needs its experiment; a new one must not overwrite one."""
    experiment = options.experiment_dir
    if options.resume:
        from ray import tune

        if not tune.Tuner.can_restore(experiment):
            raise RayclError(f"no experiment to resume at {experiment}")
    elif storage.exists(experiment):
        raise RayclError(f"experiment {experiment} exists already: pass --resume to continue it, or a new "
                         "--name")


def _stream_callbacks(options: SearchOptions, space: SearchSpace, samples: int, final_task: int, trackers,
                      journal: str | None = None) -> list:
    """A stream search's Tune callbacks: its gauges, the progress line at ``--verbose 1`` (the promotion
    form's read the prunings from its ``journal``) and the trackers."""
    from raycl.tune.progress import SearchMetrics, SearchProgress

    # --verbose 0 and 1: Tune says nothing (its older output engine is the one silent at 0) and 1
    # shows raycl's compact progress; 2 and 3 are Tune's own trial boxes and tables (its 1 and 2).
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0" if options.verbose <= 1 else "1"
    callbacks = [SearchMetrics(samples, final_task, options.experiment_name, journal=journal)]
    # Where raycl's TensorBoard tracker writes a run per configuration, Tune's own TensorBoard logger
    # would write beside it, per trial, every configuration's summary flattened (their accuracy lists as
    # histograms), at a cost that dominates the driver of a large search. Tune adds its loggers unless
    # told not to, so its JSON and CSV ones are added here.
    tensorboard = trackers is not None and trackers.writes_tensorboard
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1" if tensorboard else "0"
    if tensorboard:
        from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

        callbacks += [JsonLoggerCallback(), CSVLoggerCallback()]
    if options.verbose == 1:
        callbacks.append(SearchProgress(samples, final_task, space.searched, journal=journal))
    if trackers is not None:
        callbacks.append(trackers.callback())
    return callbacks


def _restored(experiment: str, trainable, trackers):
    """The interrupted search at ``experiment``, its trackers handed to its restored callbacks."""
    from ray import tune

    tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
    if trackers is not None:
        trackers.take_over(tuner)
    return tuner


def _run_config(options: SearchOptions, callbacks: list):
    from ray import tune

    return tune.RunConfig(
        name=options.experiment_name, storage_path=storage.resolve(options.storage_path),
        # Two, not one: after a hard kill of the driver, Tune resumes from its last snapshot of the
        # experiment, which may still name a trial's previous checkpoint.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=1),
        verbose=0 if options.verbose <= 1 else options.verbose - 1, callbacks=callbacks,
    )


def _fit_stream_search(options: SearchOptions, space: SearchSpace, benchmarks: list[Benchmark], trackers=None):
    """Run (or resume) a stream protocol's trials under Tune with the rung board, feeding
    ``trackers`` (:class:`raycl.tune.trackers.SearchTrackers`); returns Tune's results, or raises
    SearchInterrupted when the search stopped before every trial ended."""
    from ray import tune

    experiment = options.experiment_dir
    final_task = benchmarks[0].n_tasks
    rungs = search_rungs(options, final_task)
    board = None
    if rungs:
        from raycl.tune.rungs import start_service

        board = start_service(storage.join(experiment, RUNGS_FILE), rungs, options.reduction_factor, final_task)
    from raycl.tune.trainable import cl_trainable, named_trainable

    # A fresh actor per trial lets the dashboard name every trial but costs seconds (32
    # one-configuration trials of seq-digits: 34 s with reused actors, 148 s without): cohorts,
    # which are few and long, get one each; one-configuration trials share them.
    reuse_actors = options.population == 1
    trainable = named_trainable(tune.with_resources(
        tune.with_parameters(cl_trainable, benchmarks=benchmarks, method=options.method,
                             seeds=trial_seeds(options), threads=max(1, int(options.cpus_per_trial)),
                             rungs=rungs, board=board, gpus=options.gpus_per_trial, precision=options.precision),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    ), options.ray_name, per_trial=not reuse_actors)
    callbacks = _stream_callbacks(options, space, options.samples, final_task, trackers)
    if options.resume:
        tuner = _restored(experiment, trainable, trackers)
    else:
        tuner = tune.Tuner(
            trainable,
            # The searcher carries its own metric; early stopping is the trials' own, at the rung board.
            tune_config=tune.TuneConfig(
                search_alg=_make_searcher(options, space, final_task),
                num_samples=-(-options.samples // options.population),
                max_concurrent_trials=options.max_concurrent, reuse_actors=reuse_actors, **TRIAL_NAMES,
            ),
            run_config=_run_config(options, callbacks),
        )
    results = tuner.fit()
    configurations = sum(len((r.config or {}).get(COHORT) or []) for r in results)
    if results.num_terminated + results.num_errors < len(results) or configurations < options.samples:
        raise SearchInterrupted(
            f"search {options.experiment_name} interrupted with {results.num_terminated + results.num_errors} of "
            f"{len(results)} trials ended and {configurations} of {options.samples} configurations proposed; "
            f"nothing exported. Continue it with the same flags and --name {options.experiment_name} --resume"
            f" --population {options.population} (the cohort size it ran with)")
    return results


class StructureOf:
    """The key of the values a population of ``method`` shares, from a configuration's values
    (completed with the benchmark's ``defaults`` and the method's own)."""

    def __init__(self, method: str, defaults: dict):
        self.method = method
        self.defaults = dict(defaults)
        self.names = tuple(shared_hyperparameters(method))

    def __call__(self, params: dict) -> str:
        from raycl.methods import make_config
        from raycl.tune.promotion_search import structure_key

        config = make_config(self.method, params, self.defaults)
        return structure_key({name: getattr(config, name) for name in self.names})


def member_limit(options: SearchOptions, convolutional: bool) -> int:
    """The most configurations one population of a trial holds: the member limit of the device it
    trains on and of its network, scaled by its share of a GPU, divided among its seeds."""
    device = "cuda" if options.gpus_per_trial > 0 else "cpu"
    limits = CONVOLUTIONAL_MEMBER_LIMIT if convolutional else MEMBER_LIMIT
    return max(1, share_scaled_limit(limits[device], options.gpus_per_trial) // options.trial_seeds)


def _fit_promotion_search(options: SearchOptions, space: SearchSpace, benchmarks: list[Benchmark],
                          even: bool, spaces: dict[int, SearchSpace] | None = None, trackers=None) -> None:
    """Run (or resume) a stream protocol's search in the promotion form (:mod:`raycl.tune.promotion`):
    every Tune trial a job of one structure over one segment, feeding ``trackers``; raises
    SearchInterrupted when the search stopped before it ended."""
    from ray import tune

    from raycl.tune.job import job_trainable
    from raycl.tune.costs import Widths
    from raycl.tune.promotion_search import PromotionSearch
    from raycl.tune.trainable import named_trainable

    experiment = options.experiment_dir
    benchmark = benchmarks[0]
    final_task = benchmark.n_tasks
    rungs = search_rungs(options, final_task)
    slots = trial_slots(options)
    journal = storage.join(experiment, RUNGS_FILE)
    trainable = named_trainable(tune.with_resources(
        tune.with_parameters(job_trainable, benchmarks=benchmarks, method=options.method,
                             seeds=trial_seeds(options), threads=max(1, int(options.cpus_per_trial)),
                             experiment=experiment, gpus=options.gpus_per_trial, precision=options.precision),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    ), options.ray_name, per_trial=False)
    samples = options.samples * len(options.buffer_sizes)
    callbacks = _stream_callbacks(options, space, samples, final_task, trackers, journal)
    if options.resume:
        tuner = _restored(experiment, trainable, trackers)
    else:
        from raycl.tune.optuna_storage import open_storage
        from raycl.tune.sampler import make_sampler, search_sampler

        storage_db = open_storage(options.optuna_storage) if options.optuna_storage else None
        start = _start_points(options, space, spaces)
        widths = Widths(options.population, member_limit(options, benchmark.model != "mlp"), even=even)
        structure_of = StructureOf(options.method, benchmark.defaults_for(options.method))
        groups, mixable = None, False
        if spaces:  # a table: a group, a space and an Optuna study of its own per buffer size
            groups = {str(size): (DefineByRun(spaces[size]), make_sampler(options.search_seed + i, options.tpe_window))
                      for i, size in enumerate(options.buffer_sizes)}
            mixable = "buffer_size" not in structure_of.names
        settings = {"form": "promotion", "rungs": list(rungs), "reduction_factor": options.reduction_factor,
                    "final_task": final_task, "samples": options.samples, "planned_width": widths.planned,
                    "width_limit": widths.limit, "even": even, "slots": slots, "trial_seeds": options.trial_seeds,
                    "groups": list(groups or [""]), "mixable": mixable}
        searcher = PromotionSearch(
            space=DefineByRun(space), metric=OBJECTIVE, mode="max",
            sampler=search_sampler(options), storage=storage_db,
            study_name=options.experiment_name, final_task=final_task, samples=options.samples, rungs=rungs,
            reduction_factor=options.reduction_factor, widths=widths, slots=slots, seeds=options.trial_seeds,
            structure_of=structure_of, journal=journal, settings=settings,
            points_to_evaluate=start, audit_fraction=options.audit_fraction,
            audit_seed=options.search_seed, groups=groups, mixable=mixable)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                # Jobs, not configurations: at most one per configuration and segment.
                num_samples=samples * (len(rungs) + 1) + 1,
                # One job per free slot: a job is decided when a slot can start it, never ahead.
                max_concurrent_trials=slots, reuse_actors=True, **TRIAL_NAMES,
            ),
            run_config=_run_config(options, callbacks),
        )
    results = tuner.fit()
    from raycl.tune.journal import read_journal

    events = read_journal(journal)
    if not any(e.get("event") == "end" for e in events) or results.num_terminated + results.num_errors < len(results):
        proposed = sum(1 for e in events if e.get("event") == "config")
        raise SearchInterrupted(
            f"search {options.experiment_name} interrupted with {proposed} of {samples} configurations "
            f"proposed; nothing exported. Continue it with the same flags and --name {options.experiment_name} "
            f"--resume --population {options.population} (the cohort size it ran with)")


def _start_points(options: SearchOptions, space: SearchSpace,
                  spaces: dict[int, SearchSpace] | None) -> list[dict] | dict[str, list[dict]]:
    """The first configurations to try, as their searched values: a list, or in a table of buffer sizes
    a list per size (a point naming its ``buffer_size`` goes to that size alone, one naming none to
    every size)."""
    def searched(point: dict, where: SearchSpace) -> dict:
        return {k: v for k, v in point.items() if k in set(where.searched)}

    if not spaces:
        return [p for p in (searched(point, space) for point in options.start_points) if p]
    return {str(size): [p for p in (searched(point, spaces[size]) for point in options.start_points
                                    if point.get("buffer_size", size) == size) if p]
            for size in options.buffer_sizes}


def final_evaluation(options: SearchOptions, config: dict | None) -> dict | None:
    """The search's last step: ``config`` retrained on ``--final-eval-seeds`` seeds and tested (None
    without a config or without the flag)."""
    if config is None or not options.final_eval_seeds:
        return None
    from raycl.tune.final_eval import evaluate_seeds

    return evaluate_seeds(options, config)
