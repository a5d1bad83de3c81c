"""Reproduce a paper's table: one search per row, its winner tested over seeds, a Markdown table.

Rows (dataset, method, buffer size, published accuracy, published arguments) come from a YAML
file; the default is the DER paper's MNIST rows shipped next to this module. Each row is searched
with raycl's own search space at the paper's batch size and one epoch, the paper's arguments
tried first unless told otherwise; the winner by validation accuracy is then retrained on
``seeds`` seeds, each with its own data seed (new permutations, angles), on all of the training
data as the paper does after its grid search, and tested. Every finished row is merged into
``results.json`` at once, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import math
import time
from importlib import resources
from pathlib import Path

from raycl.data import benchmark_names
from raycl.errors import RayclError, unknown
from raycl.files import atomic_write_text, locked, read_yaml
from raycl.hparams import build_config
from raycl.methods import METHODS, get_method

SETTING_NAMES = {"class_il": "Class-IL", "masked_class_il": "masked Class-IL", "task_il": "Task-IL",
                 "domain_il": "Domain-IL"}
RESULTS_FILE = "results.json"
TABLE_FILE = "reproduction.md"
# The paper-values files shipped next to this module, by the name --paper also takes.
SHIPPED_TABLES = {"der-paper": "der_paper.yaml", "der-notebook": "der_notebook.yaml"}
ROW_KEYS = ("dataset", "method", "buffer_size", "accuracy", "task_il", "args", "batch_size", "setting", "protocol",
            "chf_drop", "final_val_fraction")


@dataclasses.dataclass(frozen=True)
class PaperRow:
    dataset: str
    method: str
    buffer_size: int | None
    accuracy: float
    setting: str
    batch_size: int
    args: dict
    task_il: float | None = None
    # How the row is searched: a stream protocol (its args tried first) or a per-task one (its args
    # fixed for the whole stream, chf with its accuracy drop); and the share of the training data
    # the winner's final evaluation holds out (0: all of it, as papers train after their search).
    protocol: str = "seen-tasks"
    chf_drop: float | None = None
    final_val_fraction: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.method}/{self.buffer_size or '-'}"

    @property
    def per_task(self) -> bool:
        from raycl.tune.options import STREAM_PROTOCOLS

        return self.protocol not in STREAM_PROTOCOLS


@dataclasses.dataclass
class PaperTable:
    source: str
    rows: list[PaperRow]
    default_methods: tuple[str, ...]
    path: str

    def select(self, patterns: list[str] | None) -> list[PaperRow]:
        """Rows whose key matches any pattern (shell-style, e.g. ``rot-mnist/*/500``); default rows if none."""
        if not patterns:
            return [r for r in self.rows if r.method in self.default_methods]
        chosen = []
        for pattern in patterns:
            matched = [r for r in self.rows if fnmatch.fnmatchcase(r.key, pattern)]
            if not matched:
                raise unknown("row", pattern, [r.key for r in self.rows])
            chosen += [r for r in matched if r not in chosen]
        return [r for r in self.rows if r in chosen]


def default_paper_file() -> Path:
    return shipped_paper_file("der-paper")


def shipped_paper_file(name: str) -> Path:
    return Path(str(resources.files("raycl.tune") / SHIPPED_TABLES[name]))


def _number(raw: dict, key: str, place: str, kind=float, required: bool = False):
    """``raw[key]`` as a ``kind`` (None when absent and not ``required``), or one line naming it."""
    if raw.get(key) is None:
        if required:
            raise RayclError(f"{place}: needs {key!r} (a number)")
        return None
    try:
        return kind(raw[key])
    except (TypeError, ValueError):
        raise RayclError(f"{place}: {key} must be a number, got {raw[key]!r}") from None


def load_paper_table(path: str | Path | None = None) -> PaperTable:
    """A paper-values file: a path, or the name of a shipped one (``der-paper``, the default;
    ``der-notebook``, the DER repository's notebook rows)."""
    path = shipped_paper_file(str(path)) if str(path) in SHIPPED_TABLES else Path(path) if path \
        else default_paper_file()
    if not path.is_file():
        raise RayclError(f"paper-values file {path} not found (or one of the shipped: {', '.join(SHIPPED_TABLES)})")
    doc = read_yaml(path)
    where = str(path)
    if not isinstance(doc, dict) or not {"source", "datasets", "rows"} <= set(doc):
        raise RayclError(f"{where}: needs the keys source, datasets and rows")
    datasets = doc["datasets"]
    if not isinstance(datasets, dict) or not isinstance(doc["rows"], list):
        raise RayclError(f"{where}: datasets must map each dataset to its setting and batch size, rows be a list")
    for name, protocol in datasets.items():
        if name not in benchmark_names():
            raise unknown("dataset", name, benchmark_names(), where=f"{where}: datasets")
        if not isinstance(protocol, dict):
            raise RayclError(f"{where}: datasets.{name} must give its setting and batch_size, not be a "
                             f"{type(protocol).__name__}")
        if protocol.get("setting") not in SETTING_NAMES:
            raise unknown("setting", protocol.get("setting"), SETTING_NAMES, where=f"{where}: datasets.{name}")
        _number(protocol, "batch_size", f"{where}: datasets.{name}", int, required=True)
    rows = []
    for i, raw in enumerate(doc["rows"]):
        place = f"{where}: rows[{i}]"
        if not isinstance(raw, dict):
            raise RayclError(f"{place}: a row is a mapping of {', '.join(ROW_KEYS)}")
        extra = set(raw) - set(ROW_KEYS)
        if extra:
            raise unknown("key", sorted(extra)[0], sorted(ROW_KEYS), where=place)
        if raw.get("dataset") not in datasets:
            raise unknown("dataset", raw.get("dataset"), datasets, where=place)
        try:  # a built-in, or a plugin's method
            get_method(str(raw.get("method")))
        except RayclError as exc:
            raise RayclError(f"{place}: {exc}") from None
        protocol = datasets[raw["dataset"]]
        row = PaperRow(dataset=raw["dataset"], method=raw["method"], buffer_size=_number(raw, "buffer_size", place, int),
                       accuracy=_number(raw, "accuracy", place, required=True),
                       setting=raw.get("setting", protocol["setting"]),
                       batch_size=_number({**protocol, **raw}, "batch_size", place, int),
                       args=raw.get("args") or {}, task_il=_number(raw, "task_il", place),
                       protocol=raw.get("protocol", "seen-tasks"), chf_drop=_number(raw, "chf_drop", place),
                       final_val_fraction=_number(raw, "final_val_fraction", place) or 0.0)
        _check_row(row, place)
        rows.append(row)
    keys = [r.key for r in rows]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate:
        raise RayclError(f"{where}: row {duplicate} appears twice")
    return PaperTable(source=" ".join(str(doc["source"]).split()), rows=rows, path=str(path),
                      default_methods=tuple(doc.get("default_methods") or METHODS))


def _check_row(row: PaperRow, place: str) -> None:
    from raycl.tune.options import PROTOCOLS

    if not isinstance(row.args, dict):
        raise RayclError(f"{place}: args must map hyperparameters to values, got {row.args!r}")
    if row.setting not in SETTING_NAMES:
        raise unknown("setting", row.setting, SETTING_NAMES, where=place)
    if row.protocol not in PROTOCOLS:
        raise unknown("protocol", row.protocol, PROTOCOLS, where=place)
    if row.chf_drop is not None and row.protocol != "chf":
        raise RayclError(f"{place}: chf_drop applies to protocol chf, not {row.protocol}")
    if not 0.0 <= row.final_val_fraction < 1.0:
        raise RayclError(f"{place}: final_val_fraction must be in [0, 1), got {row.final_val_fraction}")
    # The paper's arguments must be valid hyperparameters of raycl's method.
    build_config(get_method(row.method).Config, {**row.args, **fixed_args(row)}, owner=f"{place} ({row.key})")


def fixed_args(row: PaperRow) -> dict:
    """What the paper fixed for every configuration of the row: batch size, one epoch, the buffer
    (and for a per-task protocol, which chooses its own values task by task, the row's arguments)."""
    fixed = {**(row.args if row.per_task else {}), "batch_size": row.batch_size, "n_epochs": 1}
    if row.buffer_size is not None:
        fixed["buffer_size"] = row.buffer_size
    return fixed


@dataclasses.dataclass
class ReproduceOptions:
    out: str = "reproduction"
    rows: list[str] | None = None
    paper: str | None = None
    samples: int = 8
    seeds: int = 3
    trial_seeds: int = 1
    resume: bool = False
    paper_start: bool = True
    search_seed: int = 0
    data_root: str | None = None
    # Every row's benchmark options and backbone (as a search's --benchmark-option and --backbone).
    benchmark_options: dict = dataclasses.field(default_factory=dict)
    backbone: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # 0, a fraction in (0, 1) or 1, as a search's
    wait_for_resources: bool = False
    precision: str = "fp32"
    address: str | None = None
    verbose: int = 0


def read_results(out: Path) -> dict:
    path = out / RESULTS_FILE
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RayclError(f"{path} is not valid JSON ({exc}); move it away to start over") from None
    if not isinstance(results, dict) or not all(isinstance(r, dict) and isinstance(r.get("mean"), (int, float))
                                                and isinstance(r.get("wall_s"), (int, float))
                                                for r in results.values()):
        raise RayclError(f"{path} is not a reproduction's results (each row's key -> its result); move it away to "
                         "start over")
    return results


def save_result(out: Path, key: str, entry: dict) -> dict:
    """Merge one row's result into results.json (atomic, under a lock); returns the whole file."""
    path = out / RESULTS_FILE
    with locked(path):
        results = read_results(out)
        results[key] = entry
        atomic_write_text(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def table_of(row: PaperRow) -> tuple:
    """What rows must share to be searched together as a table of buffer sizes: everything but the
    size and the arguments tried first."""
    return (row.dataset, row.method, row.setting, row.batch_size, row.protocol, row.final_val_fraction)


def batches(rows: list[PaperRow]) -> list[list[PaperRow]]:
    """``rows`` in searches: the rows of a stream protocol that differ only in their buffer size form
    one table search (``--buffer-size 200,500,5120``), in the order of their first row; the others one
    search each."""
    out: list[list[PaperRow]] = []
    tables: dict[tuple, list[PaperRow]] = {}
    for row in rows:
        if row.per_task or row.buffer_size is None:
            out.append([row])
            continue
        if table_of(row) not in tables:
            tables[table_of(row)] = []
            out.append(tables[table_of(row)])
        tables[table_of(row)].append(row)
    return out


def experiment_name(rows: list[PaperRow]) -> str:
    sizes = ",".join(str(r.buffer_size) for r in rows) if len(rows) > 1 else str(rows[0].buffer_size or 0)
    return f"{rows[0].dataset}-{rows[0].method}-b{sizes}"


def run_rows(rows: list[PaperRow], options: ReproduceOptions, out: Path) -> dict[str, dict]:
    """One search of ``rows`` (one row, or a table of buffer sizes: :func:`batches`), its winner per row
    retrained and tested; each row's key -> its entry."""
    from ray import tune

    from raycl.tune.options import AUTO, SearchOptions
    from raycl.tune.search import run_search

    row = rows[0]
    fixed = fixed_args(row)
    fixed.pop("buffer_size", None)
    sizes = [r.buffer_size for r in rows]
    chf = {"chf_drop": row.chf_drop} if row.chf_drop is not None else {}
    starts = [{**r.args, "buffer_size": r.buffer_size} if len(rows) > 1 else dict(r.args)
              for r in rows if options.paper_start and r.args and not r.per_task]
    table = {"buffer_size": sizes, "population": AUTO} if len(rows) > 1 else {"buffer_size": row.buffer_size}
    search = SearchOptions(
        method=row.method, dataset=row.dataset, samples=options.samples, **table, fixed=fixed,
        protocol=row.protocol, **chf, start_points=starts,
        search_seed=options.search_seed,
        cpus_per_trial=options.cpus_per_trial, gpus_per_trial=options.gpus_per_trial, address=options.address,
        wait_for_resources=options.wait_for_resources, precision=options.precision,
        storage_path=str(out / "experiments"), name=experiment_name(rows),
        best_args=str(out / "best_args" / f"{row.dataset}.yaml"), final_eval_seeds=options.seeds,
        trial_seeds=options.trial_seeds,
        final_eval_vary_data=True, final_eval_val_fraction=row.final_val_fraction, data_root=options.data_root,
        benchmark_options=dict(options.benchmark_options), backbone=options.backbone,
        verbose=options.verbose,
    )
    experiment = Path(search.experiment_dir)
    search.resume = experiment.exists() and tune.Tuner.can_restore(str(experiment))
    if experiment.exists() and not search.resume:
        raise RayclError(f"{search.experiment_dir} exists but holds no search to resume; remove it or use "
                         "another --out")
    started = time.perf_counter()
    report = run_search(search)
    wall = time.perf_counter() - started
    if len(rows) == 1:
        return {row.key: _entry(row, report, wall, search)}
    keys = [r.key for r in rows]
    return {r.key: {**_entry(r, report.reports[r.buffer_size], wall, search), "table": keys} for r in rows}


def _entry(row: PaperRow, report, wall: float, search) -> dict:
    """A row's result from its search's report (of its buffer size, in a table search)."""
    from raycl.tune.outputs import plain_config

    if report.best_config is None or not report.final_eval or "test" not in report.final_eval:
        raise RayclError(f"row {row.key}: no trial completed every task "
                         f"({getattr(report, 'counts', 'no schedule')}); nothing to test")
    tested = report.final_eval["test"]
    if row.setting not in tested:
        raise unknown(f"setting of {row.dataset}", row.setting, tested, where=f"row {row.key}")
    test = tested[row.setting]
    paper_start = bool(search.start_points) and bool(row.args) and not row.per_task
    entry = {
        "dataset": row.dataset, "method": row.method, "buffer_size": row.buffer_size, "setting": row.setting,
        "protocol": row.protocol,
        "paper": row.accuracy, "mean": test["mean"], "std": test["std"], "per_seed": test["per_seed"],
        "difference": test["mean"] - row.accuracy, "seeds": report.final_eval["seeds"],
        # A table search's wall is its rows' together.
        "wall_s": round(wall, 1), "best_config": plain_config(report.best_config),
        # Every setting the benchmark reports, beside the row's own (a masked Class-IL row's Class-IL).
        "settings": {s: {"mean": v["mean"], "std": v["std"]} for s, v in tested.items()},
        "paper_start": paper_start,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if row.per_task:  # one path of per-task choices: its trainings, not sampled configurations
        entry.update(samples=report.trainings, objective=report.choices[-1].winner.seen)
    else:
        entry.update(samples=len(report.trials), objective=report.best.objective, counts=report.counts,
                     task_fraction=report.task_fraction,
                     paper_args_won=paper_start and _same_config(report.best.config, row.args))
    if "task_il" in tested and row.setting in ("class_il", "masked_class_il"):
        entry["task_il"] = tested["task_il"]["mean"]
        entry["paper_task_il"] = row.task_il
    return entry


def _same_config(config: dict, args: dict) -> bool:
    return all(k in config and math.isclose(float(config[k]), float(v), rel_tol=1e-9)
               if isinstance(v, (int, float)) and not isinstance(v, bool) else config.get(k) == v
               for k, v in args.items())


def reproduce(options: ReproduceOptions, progress=print) -> tuple[dict, str]:
    """Run the chosen rows (skipping finished ones with ``resume``); returns (results, Markdown table)."""
    if options.samples < 1 or options.seeds < 1 or options.trial_seeds < 1:
        raise RayclError(f"--samples, --seeds and --trial-seeds must be at least 1, got {options.samples}, "
                         f"{options.seeds} and {options.trial_seeds}")
    from raycl.device import PRECISIONS
    from raycl.tune.placement import check_gpus_per_trial

    check_gpus_per_trial(options.gpus_per_trial)
    if options.precision not in PRECISIONS:
        raise unknown("precision", options.precision, PRECISIONS)
    table = load_paper_table(options.paper)
    rows = table.select(options.rows)
    out = Path(options.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = read_results(out)
    done = [r.key for r in rows if r.key in results]
    if done and not options.resume:
        raise RayclError(f"{out / RESULTS_FILE} already has rows {', '.join(done)}: pass --resume to keep them "
                         "and run the rest, or choose another --out")
    started = time.perf_counter()
    number = {row.key: i for i, row in enumerate(rows, 1)}
    for batch in batches(rows):
        for row in [r for r in batch if r.key in results]:
            progress(f"[{number[row.key]}/{len(rows)}] {row.key}: done already ({results[row.key]['mean']:.2f}), "
                     "skipped")
        batch = [r for r in batch if r.key not in results]
        if not batch:
            continue
        keys = ", ".join(r.key for r in batch)
        what = f"a table of buffer sizes {', '.join(str(r.buffer_size) for r in batch)}, " if len(batch) > 1 else ""
        progress(f"[{', '.join(str(number[r.key]) for r in batch)}/{len(rows)}] {keys}: searching {what}"
                 f"{options.samples} configurations{' each' if len(batch) > 1 else ''}, then testing the winner"
                 f"{'s' if len(batch) > 1 else ''} on {options.seeds} seeds ...")
        for key, entry in run_rows(batch, options, out).items():
            results = save_result(out, key, entry)
            progress(f"[{number[key]}/{len(rows)}] {key}: paper {entry['paper']:.2f}, ours {entry['mean']:.2f} ± "
                     f"{entry['std']:.2f} ({entry['difference']:+.2f}) in {entry['wall_s']:.0f} s")
    markdown = format_table(table, rows, results, wall_s=time.perf_counter() - started)
    atomic_write_text(out / TABLE_FILE, markdown)
    return results, markdown


def format_table(table: PaperTable, rows: list[PaperRow], results: dict, wall_s: float | None = None) -> str:
    lines = [
        "| dataset | method | buffer | setting | paper | ours (mean ± std) | difference | within 1 | ≥ paper − 0.5 "
        "| samples | seeds | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for row in rows:
        r = results.get(row.key)
        if r is None:
            lines.append(f"| {row.dataset} | {row.method} | {row.buffer_size or '-'} | {SETTING_NAMES[row.setting]} "
                         f"| {row.accuracy:.2f} | not run | | | | | | |")
            continue
        total += r["wall_s"]
        lines.append(
            f"| {row.dataset} | {row.method} | {row.buffer_size or '-'} | {SETTING_NAMES[row.setting]} "
            f"| {row.accuracy:.2f} | {r['mean']:.2f} ± {r['std']:.2f} | {r['difference']:+.2f} "
            f"| {'yes' if r['difference'] >= -1 else 'no'} "
            f"| {'yes' if r['difference'] >= -0.5 else 'no'} | {r['samples']} | {len(r['seeds'])} | {r['wall_s']:.0f} |")
    lines.append("")
    for row in rows:
        r = results.get(row.key)
        others = {s: v for s, v in (r or {}).get("settings", {}).items() if s != row.setting}
        if others:
            lines.append(f"{row.key}: the same runs score " + ", ".join(
                f"{v['mean']:.2f} ± {v['std']:.2f} {SETTING_NAMES.get(s, s)}" for s, v in others.items())
                + (f" (paper Task-IL {row.task_il:.2f})" if row.task_il is not None else "") + ".")
    lines.append(f"Total wall time of the rows: {total:.0f} s ({total / 60:.1f} min)"
                 + (f"; this invocation {wall_s:.0f} s." if wall_s is not None else "."))
    lines.append(f"Paper values: {table.source}")
    held = sorted({f"{r.final_val_fraction:g}" for r in rows if r.final_val_fraction})
    lines.append("Ours: the search's choice (the configuration with the best mean validation accuracy over the "
                 "tasks seen, or a per-task protocol's schedule) retrained on "
                 + (f"the training data less the held-out share ({', '.join(held)})" if held else "all training data")
                 + ", tested, one data seed per training seed.")
    return "\n".join(lines) + "\n"
