"""After a search of a paper's table (``--buffer-size 200,500,5120``): every size classified and
exported as if searched alone (its winner, best-args entry, mammoth entry, final evaluation), one
trials table with the size in a column, and a summary with a row per size."""

from __future__ import annotations

import dataclasses

from raycl import storage
from raycl.data import Benchmark
from raycl.tune.export import SearchReport, TrialRecord, collect_promotion, export_records, trial_rows
from raycl.tune.outputs import write_table
from raycl.tune.tables import format_table, short_value
from raycl.vocabulary import ENDED_STATUSES, TRIALS_FILE


@dataclasses.dataclass
class TableReport:
    """What a table search found: a :class:`SearchReport` per buffer size, and the search's slot use."""

    reports: dict[int, SearchReport]
    parquet_path: str
    usage: dict | None = None

    @property
    def best_config(self) -> dict | None:
        """Every size's winner, by size; None unless every size has one."""
        configs = {size: r.best_config for size, r in self.reports.items()}
        return None if any(c is None for c in configs.values()) else configs

    @property
    def trials(self) -> list[TrialRecord]:
        return [t for r in self.reports.values() for t in r.trials]


def size_of(record: TrialRecord) -> int:
    return int(record.config["buffer_size"])


def export_table_search(options, space, spaces: dict[int, object], benchmark: Benchmark) -> TableReport:
    """Classify every configuration of a table search and write its outputs: per size what a search of
    that size alone writes (best-args and mammoth entries, its rung signal under its own name), then
    the one trials table of every size, the space (``space``, the size left open) and the rung signal
    over every size."""
    from raycl.tune.final_eval import evaluate_seeds

    records, usage = collect_promotion(options, benchmark.n_tasks)
    reports, rows = {}, []
    for size in options.buffer_sizes:
        alone = dataclasses.replace(options, buffer_size=size, name=options.experiment_name)
        mine = [r for r in records if size_of(r) == size]
        report = export_records(mine, alone, spaces[size], benchmark, write_table=False)
        if report.best is not None and options.final_eval_seeds:
            report.final_eval = evaluate_seeds(alone, report.best_config)
        reports[size] = report
        context = {"method": options.method, "dataset": options.dataset, "protocol": options.protocol,
                   "protocol_tasks": options.protocol_tasks if options.protocol == "first-task" else None,
                   "experiment": options.experiment_name, "buffer_size": size}
        rows += trial_rows(mine, context)
    table_path = options.parquet or storage.join(options.experiment_dir, TRIALS_FILE)
    write_table(table_path, rows)
    from raycl.tune import rung_signal
    from raycl.tune.outputs import write_signal, write_space

    write_space(options, space)  # every size's values, the size itself searched as a list
    from raycl.tune.rungs import search_rungs

    rungs = search_rungs(options, benchmark.n_tasks)  # every size's configurations together, for the report
    write_signal(options, benchmark.n_tasks, rungs, rung_signal.rung_signal(records, rungs))
    for report in reports.values():
        report.parquet_path = table_path
    return TableReport(reports, table_path, usage)


def print_table_summary(report: TableReport, options, benchmark: Benchmark) -> None:
    setting = benchmark.settings[0]
    out = [f"\nsearch {options.experiment_name}: {options.method} on {options.dataset}, protocol {options.protocol}, "
           f"a table of {len(report.reports)} buffer sizes x {options.samples} configurations"
           + (f" in {report.usage['jobs']} jobs of up to {options.population}" if report.usage else "")]
    if report.usage and report.usage["slot_use"] is not None:
        out.append(f"  slot use {100 * report.usage['slot_use']:.0f}% ({report.usage['task_trainings']} member-tasks "
                   f"trained); the last job ran alone for {report.usage['tail_s']:.1f} s")
    params = sorted({k for r in report.reports.values() if r.best for k in r.best.config} - {"buffer_size"})
    header = ["buffer", *(s for s in ENDED_STATUSES), "best", "objective", *params]
    if options.final_eval_seeds:
        header.insert(header.index("objective") + 1, f"test {setting}")
    lines = []
    for size, r in report.reports.items():
        line = [str(size), *(str(r.counts[s]) for s in ENDED_STATUSES)]
        if r.best is None:
            line += ["-", "-"] + (["-"] if options.final_eval_seeds else []) + ["-"] * len(params)
        else:
            line += [r.best.trial_id, f"{r.best.objective:.2f}"]
            if options.final_eval_seeds:
                test = (r.final_eval or {}).get("test", {}).get(setting)
                line.append(f"{test['mean']:.2f} ± {test['std']:.2f}" if test else "-")
            line += [short_value(r.best.config.get(p)) for p in params]
        lines.append(line)
    out.append(format_table(header, lines))
    paths = {str(r.best_args_path) for r in report.reports.values() if r.best_args_path}
    if paths:
        out.append(f"best args: {', '.join(sorted(paths))} (an entry per buffer size)")
    missing = [str(s) for s, r in report.reports.items() if r.best is None]
    if missing:
        out.append(f"  no configuration of buffer size {', '.join(missing)} completed every task: no best-args "
                   "entry for it")
    out.append(f"trials table: {report.parquet_path}")
    out.append(f"experiment: {options.experiment_dir}")
    print("\n".join(out), flush=True)

