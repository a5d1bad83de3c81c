"""After a stream search: classify every configuration, and what the search writes (the trials table,
the best-args entry and its provenance, the rung signal, through :mod:`raycl.tune.outputs`); the
summary it prints."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from raycl import storage
from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.tune import rung_signal
from raycl.tune.outputs import plain_config, provenance, write_outputs
from raycl.tune.rungs import describe_rungs, search_rungs
from raycl.tune.space import edge_warnings
from raycl.tune.tables import config_table, final_eval_line, short_value
from raycl.vocabulary import (COHORT, COHORT_FILE, ENDED_STATUSES, OBJECTIVE, RUNGS_FILE, SIGNAL_FILE, ConfigRecord,
                              Status, config_id, ended_status)

log = logging.getLogger(__name__)

STATUSES = ENDED_STATUSES


@dataclasses.dataclass
class TrialRecord:
    """One configuration of a search (a trial with ``--population 1``, else one of a cohort)."""

    trial_id: str
    status: str
    config: dict
    objective: float | None
    tasks_trained: int
    objective_by_task: list[float]
    last_metrics: dict
    test: dict | None
    error: str | None
    cohort: str = ""
    cohort_member: int = 0
    audit: bool = False  # exempt from early stopping (--audit-fraction)
    trials: list[str] = dataclasses.field(default_factory=list)  # every Tune trial it trained in
    jobs: list[str] = dataclasses.field(default_factory=list)  # the promotion form's jobs it trained in


@dataclasses.dataclass
class SearchReport:
    """What a stream search found. ``best`` is the winning configuration's record (None when none
    completed); ``best_config``, as on :class:`raycl.tune.export_schedule.SelectionReport`, is the
    config its best-args entry holds."""

    trials: list[TrialRecord]
    best: TrialRecord | None
    counts: dict[str, int]
    task_fraction: float
    best_args_path: Path | None
    parquet_path: str
    mammoth_config_path: Path | None = None  # --export-format mammoth
    final_eval: dict | None = None
    rungs: tuple[int, ...] = ()
    signal: list[rung_signal.RungSignal] = dataclasses.field(default_factory=list)
    edge: list[str] = dataclasses.field(default_factory=list)
    usage: dict | None = None  # the promotion form's slot use and tail (search_usage)

    @property
    def best_config(self) -> dict | None:
        return None if self.best is None else self.best.config


def _read_records(result) -> list[ConfigRecord] | None:
    if result.checkpoint is None:
        return None
    try:
        with result.checkpoint.as_directory() as folder:
            path = Path(folder) / COHORT_FILE  # written by the trainable's checkpoints
            return [ConfigRecord(**r) for r in json.loads(path.read_text())] if path.is_file() else None
    except Exception as exc:  # an unreadable checkpoint must not sink the export of the others
        log.warning("could not read the configurations' records of %s: %s", result.path, exc)
        return None


def collect_trials(results, final_task: int) -> list[TrialRecord]:
    """One record per configuration of every cohort trial."""
    records = []
    for result in results:
        metrics = dict(result.metrics or {})
        cohort = str(metrics.get("trial_id") or Path(result.path).name)
        configs = list((result.config or {}).get(COHORT) or [])
        stored = _read_records(result) or [ConfigRecord() for _ in configs]
        error = None if result.error is None else str(result.error).strip().splitlines()[-1][:500]
        for index, (config, record) in enumerate(zip(configs, stored)):
            status = ended_status(record.status, record.tasks, final_task, errored=error is not None)
            last = {**record.metrics, **{k: metrics[k] for k in ("node_id", "node_ip") if k in metrics}}
            records.append(TrialRecord(
                trial_id=config_id(cohort, index, len(configs)), status=status, config=dict(config),
                objective=None if status in (Status.ERRORED, Status.DIVERGED) or OBJECTIVE not in record.metrics
                else float(record.metrics[OBJECTIVE]),
                tasks_trained=record.tasks, objective_by_task=list(record.objective_by_task), last_metrics=last,
                test=record.test if status == Status.COMPLETED else None,
                error=error if status == Status.ERRORED else record.reason, cohort=cohort, cohort_member=index,
                audit=record.audit,
            ))
    return records


def trial_rows(records: list[TrialRecord], context: dict) -> list[dict]:
    """The trials table: one row per configuration."""
    params = sorted({k for r in records for k in r.config})
    metric_names = sorted({k for r in records for k in r.last_metrics
                           if k.startswith("val_") or k.startswith(f"{OBJECTIVE}_")})
    settings = sorted({k for r in records if r.test for k in r.test})
    rows = []
    for r in records:
        row = {"trial_id": r.trial_id, "status": r.status, "objective": r.objective,
               "tasks_trained": r.tasks_trained, "objective_by_task": r.objective_by_task, "error": r.error,
               "cohort": r.cohort, "cohort_member": r.cohort_member, "audit": r.audit,
               "trials": r.trials or [r.cohort], "jobs": r.jobs,
               "node_id": r.last_metrics.get("node_id"), "node_ip": r.last_metrics.get("node_ip")}
        row.update(context)
        for p in params:
            value = r.config.get(p)
            row[f"config.{p}"] = None if value is None else str(value) if isinstance(value, str) else float(value)
        for m in metric_names:
            value = r.last_metrics.get(m)
            row[m] = None if value is None else float(value)
        for s in settings:
            row[f"test_{s}"] = float(sum(r.test[s]) / len(r.test[s])) if r.test and s in r.test else None
            row[f"test_{s}_by_task"] = r.test.get(s) if r.test else None
        rows.append(row)
    return rows


def _format_table(records: list[TrialRecord], params: list[str], limit: int = 5) -> str:
    top = records[:limit]
    return config_table(["trial", "objective", "tasks"], [[r.trial_id, f"{r.objective:.2f}", str(r.tasks_trained)]
                                                          for r in top], [r.config for r in top], params)


def collect_promotion(options, final_task: int) -> tuple[list[TrialRecord], dict]:
    """One record per configuration of a search in the promotion form, from its journal (every
    decision) and its jobs' files (what each configuration scored, where it trained); and the
    search's slot use (:func:`search_usage`)."""
    from raycl.tune.job import read_job
    from raycl.tune.journal import read_journal
    from raycl.tune.costs import Widths
    from raycl.tune.promotion import WAITING, PromotionScheduler

    events = read_journal(storage.join(options.experiment_dir, RUNGS_FILE))
    settings = next((e for e in events if e.get("event") == "search"), {})
    scheduler = PromotionScheduler(settings.get("rungs", ()), final_task, settings.get("reduction_factor", 4),
                                   settings.get("samples", options.samples), Widths(1, 1),
                                   seeds=settings.get("trial_seeds", 1), groups=settings.get("groups", [""]),
                                   mixable=settings.get("mixable", False))
    scheduler.replay(e for e in events if e.get("event") != "search")
    jobs = {job: read_job(options.experiment_dir, job) for job in scheduler.jobs}
    trials = {e["job"]: e.get("trial") for e in events if e.get("event") == "result"}
    records = []
    for config in scheduler.configs.values():
        stored, where = ConfigRecord(audit=config.audit), {}
        for job in reversed(config.jobs):
            found = (jobs.get(job) or {}).get("records", {}).get(config.id)
            if found is not None:
                stored, where = ConfigRecord(**found), {k: jobs[job].get(k) for k in ("node_id", "node_ip")}
                break
        status = Status.PRUNED if config.status == WAITING else Status(config.status)
        first = config.jobs[0] if config.jobs else ""
        born = scheduler.jobs[first].configs.index(config.id) if first else 0
        records.append(TrialRecord(
            trial_id=config.id, status=status, config=dict(config.params),
            objective=None if status in (Status.ERRORED, Status.DIVERGED) or OBJECTIVE not in stored.metrics
            else float(stored.metrics[OBJECTIVE]),
            tasks_trained=stored.tasks, objective_by_task=list(stored.objective_by_task),
            last_metrics={**stored.metrics, **where}, test=stored.test if status == Status.COMPLETED else None,
            error=stored.reason if status == Status.DIVERGED else "its job failed" if status == Status.ERRORED else None,
            cohort=trials.get(first) or first, cohort_member=born, audit=config.audit,
            trials=[trials.get(j) or j for j in config.jobs], jobs=list(config.jobs)))
    return records, search_usage([j for j in jobs.values() if j])


def search_usage(jobs: list[dict]) -> dict:
    """How full the populations were and how the search ended: ``slot_use``, the member-tasks trained
    over the planned width x the tasks each job trained; ``task_trainings``, member-tasks;
    ``tail_s``, the seconds the job that ended last ran alone."""
    trained = sum(j["members"] * (j["end"] - j["start"]) for j in jobs)
    planned = sum(j["planned"] * (j["end"] - j["start"]) for j in jobs)
    tail = 0.0
    if jobs:
        last = max(jobs, key=lambda j: j["ended"])
        others = [j["ended"] for j in jobs if j is not last]
        tail = max(0.0, last["ended"] - max([last["started"], *others]))
    return {"slot_use": trained / planned if planned else None, "task_trainings": trained, "tail_s": tail,
            "jobs": len(jobs)}


def export_promotion_search(options, space, benchmark: Benchmark) -> SearchReport:
    """Classify every configuration of a search in the promotion form and write the search's outputs."""
    records, usage = collect_promotion(options, benchmark.n_tasks)
    report = export_records(records, options, space, benchmark)
    report.usage = usage
    return report


def export_search(results, options, space, benchmark: Benchmark) -> SearchReport:
    """Classify every configuration of a stream search's ``results`` and write the search's outputs."""
    report = export_records(collect_trials(results, benchmark.n_tasks), options, space, benchmark)
    report.usage = results_usage(results, options.population * options.trial_seeds)
    return report


def results_usage(results, planned: int) -> dict:
    """:func:`search_usage` of a search of one configuration per trial (``planned`` members: its seeds),
    from Tune's results: the tasks each trial trained, when it started and ended."""
    jobs = []
    for result in results:
        metrics = dict(result.metrics or {})
        ended, took = metrics.get("timestamp"), metrics.get("time_total_s")
        tasks = int(metrics.get("task") or 0)
        if ended is None or took is None or not tasks:
            continue
        jobs.append({"members": planned, "planned": planned, "start": 0, "end": tasks,
                     "started": float(ended) - float(took), "ended": float(ended)})
    return search_usage(jobs)


def export_records(records: list[TrialRecord], options, space, benchmark: Benchmark,
                   write_table: bool = True) -> SearchReport:
    """Write the outputs of a stream search whose configurations are ``records`` (one buffer size of a
    table search without its table: ``write_table`` False, its rung signal in a file of its own)."""
    final_task = benchmark.n_tasks
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    completed = sorted((r for r in records if r.status == Status.COMPLETED), key=lambda r: -r.objective)
    best = completed[0] if completed else None
    tasks_trained = sum(r.tasks_trained for r in records)
    task_fraction = tasks_trained / max(1, len(records) * final_task)
    protocol_tasks = options.protocol_tasks if options.protocol == "first-task" else None
    context = {"method": options.method, "dataset": options.dataset, "protocol": options.protocol,
               "protocol_tasks": protocol_tasks, "experiment": options.experiment_name}
    rungs = search_rungs(options, final_task)
    signal = rung_signal.rung_signal(records, rungs)
    kept = None
    if best is not None:
        kept = (plain_config(best.config), provenance(
            options, space, objective=round(best.objective, 4),
            objective_name=f"mean val {benchmark.settings[0]} accuracy over seen tasks (%)",
            protocol_tasks=protocol_tasks, samples=options.samples, trial_id=best.trial_id,
            trial_seeds=options.trial_seeds, population=options.population,
            trial_data_seeds=options.trial_data_seeds if options.trial_seeds > 1 else None))
    trained = None
    if kept is not None and options.export_format == "mammoth":  # mammoth needs every argument spelt out
        trained = dataclasses.asdict(make_config(options.method, kept[0], benchmark.defaults_for(options.method)))
    signal_name = SIGNAL_FILE if write_table else SIGNAL_FILE.replace(".json", f"-b{options.buffer_size}.json")
    written = write_outputs(options, space, trial_rows(records, context) if write_table else None, kept,
                            (final_task, rungs, signal), trained_config=trained, signal_name=signal_name)
    return SearchReport(trials=records, best=best, counts=counts, task_fraction=task_fraction,
                        best_args_path=written.best_args_path, parquet_path=written.table_path,
                        mammoth_config_path=written.mammoth_config_path, rungs=rungs,
                        signal=signal, edge=edge_warnings(space, best.config) if best is not None else [])


def print_summary(report: SearchReport, options, space, benchmark: Benchmark,
                  population_reason: str | None = None) -> None:
    cohorts = len({r.cohort for r in report.trials})
    trained = (f"{len(report.trials)} configurations in {cohorts} cohorts of up to {options.population}"
               if options.population > 1 else f"{len(report.trials)} trials")
    if report.usage is not None:
        trained = (f"{len(report.trials)} configurations in {report.usage['jobs']} jobs of up to "
                   f"{options.population}")
    nodes = {r.last_metrics.get("node_id") for r in report.trials} - {None}
    out = [f"\nsearch {options.experiment_name}: {options.method} on {options.dataset}, protocol "
           f"{options.protocol}, {trained}" + (f", on {len(nodes)} nodes" if len(nodes) > 1 else "")]
    if population_reason:
        unit = "jobs" if report.usage is not None else "cohorts"
        out.append(f"  {unit} of up to {options.population} ({population_reason})")
    out.append("  " + ", ".join(f"{report.counts[s]} {s}" for s in STATUSES)
               + (f"; {sum(r.audit for r in report.trials)} audited (never stopped early)"
                  if options.audit_fraction else ""))
    out.append(f"  tasks trained / (configurations x tasks) = {report.task_fraction:.3f}")
    if report.usage is not None and report.usage["slot_use"] is not None:
        unit = "job" if options.population > 1 else "trial"
        out.append(f"  slot use {100 * report.usage['slot_use']:.0f}% ({report.usage['task_trainings']} member-tasks "
                   f"trained); the last {unit} ran alone for {report.usage['tail_s']:.1f} s")
    out.append(f"  early stopping: {describe_rungs(options, benchmark.n_tasks)}")
    for signal in report.signal:
        out.append(f"    {rung_signal.describe(signal)}")
    for signal in report.signal:
        if signal.weak:
            out.append(f"  {rung_signal.weak_warning(signal)}")
    unjudged = rung_signal.unjudged_note(report.signal)
    if unjudged:
        out.append(f"    {unjudged}")
    if report.best is None:
        out.append("  no trial completed every task: no best-args written")
    else:
        b = report.best
        spread = b.last_metrics.get(f"{OBJECTIVE}_std")
        over = f" ± {spread:.2f} over {options.trial_seeds} seeds" if options.trial_seeds > 1 and spread is not None \
            else ""
        out.append(f"best trial {b.trial_id}: objective {b.objective:.2f}{over}")
        out.append("  config: " + ", ".join(f"{k}={short_value(v)}" for k, v in sorted(b.config.items())))
        completed = sorted((r for r in report.trials if r.status == Status.COMPLETED), key=lambda r: -r.objective)
        out.append("top configurations (completed trials, by objective):")
        out.append(_format_table(completed, space.searched, limit=5))
        out.append(f"best args: {report.best_args_path}")
        if report.mammoth_config_path:
            out.append(f"mammoth configuration (--model_config best): {report.mammoth_config_path}")
        for line in report.edge:
            out.append(f"  edge of the space: {line}")
    if report.final_eval and "test" in report.final_eval:
        out.append(final_eval_line(report.final_eval, "the best config"))
    out.append(f"trials table: {report.parquet_path}")
    out.append(f"experiment: {options.experiment_dir}  (tensorboard --logdir {options.experiment_dir})")
    print("\n".join(out), flush=True)
