"""After a per-task search: the schedule into best-args, one table row per (task, candidate), a summary."""

from __future__ import annotations

import dataclasses
import datetime
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import raycl
from raycl import storage
from raycl.data import Benchmark
from raycl.files import save_best_args
from raycl.tune.export import SPACE_FILE, final_eval_line, format_table, plain_config, short_value


@dataclasses.dataclass
class SelectionReport:
    """What a per-task search chose: the schedule (a best-args config whose per-task values are lists)
    and each task's candidates with their evidence."""

    choices: list
    config: dict
    trainings: int
    train_s: float
    test: dict
    best_args_path: Path
    parquet_path: str
    final_eval: dict | None = None

    @property
    def best(self) -> dict:
        return self.config


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
    from raycl.errors import RayclError
    from raycl.tune.per_task import read_selection

    record = read_selection(results)
    if record is None:
        errors = [str(r.error).strip().splitlines()[-1] for r in results if r.error is not None]
        raise RayclError(f"the per-task search ended without a record{': ' + errors[0] if errors else ''}")
    choices = record["choices"]
    base = {d.name: d.values[0] for d in space.dimensions if d.kind == "fixed"}
    config = schedule_config(base, choices)
    experiment = options.experiment_dir
    context = {"method": options.method, "dataset": options.dataset, "protocol": options.protocol,
               "experiment": options.experiment_name}
    parquet_path = options.parquet or storage.join(experiment, "trials.parquet")
    sink = io.BytesIO()
    rows = []
    for trial in record["trials"]:  # one for chf and the proposal protocols; PBT's every trial's lineage
        rows += selection_rows(trial["choices"], {**context, "trial_id": trial.get("trial_id"),
                                                  "winner": trial is record})
    pq.write_table(pa.Table.from_pylist(rows), sink)
    storage.write_bytes(parquet_path, sink.getvalue())
    storage.write_bytes(storage.join(experiment, SPACE_FILE), yaml.safe_dump(
        {"method": options.method, "params": space.to_dict()}, sort_keys=False).encode())
    best_args_path = Path(options.best_args or f"best_args/{options.dataset}.yaml")
    chosen = choices[-1].winner
    provenance = {
        "protocol": options.protocol, "objective": round(chosen.seen, 4),
        "objective_name": f"mean val {benchmark.settings[0]} accuracy over the tasks seen, of the chosen path (%)",
        "per_task": [{"task": c.task + 1, "chosen": plain_config(c.values),
                      "evidence": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in c.evidence.items()},
                      "candidates": len(c.candidates)} for c in choices],
        "trainings": record["trainings"], "search_space": {"source": space.source, "params": space.to_dict()},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "raycl_version": raycl.__version__, "experiment": str(experiment), "seed": options.seed,
        "search_seed": options.search_seed, "val_fraction": options.val_fraction, "data_seed": options.data_seed,
        "samples_per_task": options.samples_per_task, "precision": options.precision,
    }
    if options.protocol == "chf":
        provenance["chf"] = dataclasses.asdict(options.chf_settings)
    else:
        provenance["candidates_per_task"] = options.candidates
    trainings = record["trainings"]
    if options.protocol == "pbt":  # every trial's candidates, the work before an exploit included
        trainings = int(sum(r.metrics_dataframe["candidates"].sum() for r in results if r.metrics_dataframe is not None
                            and "candidates" in r.metrics_dataframe))
        provenance["trainings"] = trainings
        provenance["trial_id"] = record.get("trial_id")
        provenance["trials"] = options.samples
    save_best_args(best_args_path, options.dataset, options.method, config, provenance)
    report = SelectionReport(choices=choices, config=config, trainings=trainings,
                             train_s=record["train_s"], test=record.get("test", {}), best_args_path=best_args_path,
                             parquet_path=parquet_path)
    if options.final_eval_seeds:
        from raycl.tune.final_eval import evaluate_seeds

        report.final_eval = evaluate_seeds(options, config)
    print_selection_summary(report, options, benchmark)
    return report


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
