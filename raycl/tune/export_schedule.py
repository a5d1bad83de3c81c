"""After a per-task search: the schedule into best-args, one table row per (task, candidate), a summary.
What is written goes through :mod:`raycl.tune.outputs`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from raycl.data import Benchmark
from raycl.tune.outputs import plain_config, provenance, write_outputs
from raycl.tune.tables import final_eval_line, format_table, short_value


@dataclasses.dataclass
class SelectionReport:
    """What a per-task search chose: ``best_config``, the schedule (the best-args config, whose per-task
    values are lists), and each task's candidates with their evidence. It has no ``best`` record: that
    name is a stream search's winning configuration (:class:`raycl.tune.export.SearchReport`)."""

    choices: list
    best_config: dict
    trainings: int
    train_s: float
    test: dict
    best_args_path: Path
    parquet_path: str
    final_eval: dict | None = None


def schedule_config(base: dict, choices: list) -> dict:
    """The best-args config of a per-task search: a value, or a list of one value per task where the
    choices differ between tasks."""
    from raycl.selection import schedule_of

    config = dict(base)
    for name, values in schedule_of(choices).items():
        config[name] = values[0] if len(set(values)) == 1 else list(values)
    return plain_config(config)


def selection_rows(choices: list, context: dict) -> list[dict]:
    rows = []
    for choice in choices:
        for index, candidate in enumerate(choice.candidates):
            row = {"task": choice.task + 1, "candidate": index, "phase": candidate.phase,
                   "chosen": index == choice.chosen, "current_task_val": candidate.current,
                   "seen_tasks_val": candidate.seen, "diverged": candidate.diverged,
                   "optuna_trial": candidate.number, **context}
            row.update({f"config.{k}": float(v) for k, v in candidate.values.items()})
            row.update({f"evidence.{k}": float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
                        for k, v in choice.evidence.items()})
            rows.append(row)
    return rows


def export_selection(results, options, space, benchmark: Benchmark) -> SelectionReport:
    """The choices of a per-task search's ``results``, and the search's outputs written."""
    from raycl.errors import RayclError
    from raycl.tune.per_task import read_selection

    record = read_selection(results)
    if record is None:
        errors = [str(r.error).strip().splitlines()[-1] for r in results if r.error is not None]
        raise RayclError(f"the per-task search ended without a record{': ' + errors[0] if errors else ''}")
    choices = record["choices"]
    base = {d.name: d.values[0] for d in space.dimensions if d.kind == "fixed"}
    config = schedule_config(base, choices)
    context = {"method": options.method, "dataset": options.dataset, "protocol": options.protocol,
               "experiment": options.experiment_name}
    rows = []
    for trial in record["trials"]:  # one for chf and the proposal protocols; PBT's every trial's lineage
        rows += selection_rows(trial["choices"], {**context, "trial_id": trial.get("trial_id"),
                                                  "winner": trial is record})
    chosen = choices[-1].winner
    specific = {
        "objective": round(chosen.seen, 4),
        "objective_name": f"mean val {benchmark.settings[0]} accuracy over the tasks seen, of the chosen path (%)",
        "per_task": [{"task": c.task + 1, "chosen": plain_config(c.values),
                      "evidence": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.evidence.items()},
                      "candidates": len(c.candidates)} for c in choices],
        "trainings": record["trainings"],
    }
    if options.protocol == "chf":
        specific["chf"] = dataclasses.asdict(options.chf_settings)
    else:
        specific["candidates_per_task"] = options.candidates
    trainings = record["trainings"]
    if options.protocol == "pbt":  # every trial's candidates, the work before an exploit included
        trainings = int(sum(r.metrics_dataframe["candidates"].sum() for r in results if r.metrics_dataframe is not None
                            and "candidates" in r.metrics_dataframe))
        specific.update(trainings=trainings, trial_id=record.get("trial_id"), trials=options.samples)
    written = write_outputs(options, space, rows, (config, provenance(options, space, **specific)))
    return SelectionReport(choices=choices, best_config=config, trainings=trainings, train_s=record["train_s"],
                           test=record.get("test", {}), best_args_path=written.best_args_path,
                           parquet_path=written.table_path)


def print_selection_summary(report: SelectionReport, options, benchmark: Benchmark) -> None:
    setting = benchmark.settings[0]
    out = [f"\nsearch {options.experiment_name}: {options.method} on {options.dataset}, protocol {options.protocol}: "
           f"hyperparameters chosen per task, {report.trainings} task-trainings "
           f"({report.trainings / benchmark.n_tasks:.1f} candidates a task), {report.train_s:.1f} s training"]
    names = sorted({k for c in report.choices for k in c.values})
    rows = []
    for c in report.choices:
        chosen = c.winner
        extra = ""
        if "A*" in c.evidence:
            extra = f"A* {c.evidence['A*']:.2f}" + (f", threshold {c.evidence['threshold']:.2f}, {c.evidence['decays']} "
                                                     "decays" if "threshold" in c.evidence else "")
        rows.append([str(c.task + 1), *[short_value(c.values.get(n)) for n in names], f"{chosen.current:.2f}",
                     f"{chosen.seen:.2f}", str(len(c.candidates)), extra])
    out.append(format_table(["task", *names, "val task", "val seen", "candidates", "evidence"], rows))
    if report.test:
        out.append(f"chosen path, test {setting} after the last task: {sum(report.test[setting]) / len(report.test[setting]):.2f}")
    out.append(f"best args (the schedule): {report.best_args_path}")
    if report.final_eval and "test" in report.final_eval:
        out.append(final_eval_line(report.final_eval, "the schedule"))
    out.append(f"candidates table: {report.parquet_path}")
    out.append(f"experiment: {options.experiment_dir}")
    print("\n".join(out), flush=True)
