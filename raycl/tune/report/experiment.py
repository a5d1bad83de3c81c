"""A finished search as the report reads it, from the experiment folder's own files.

Reads ``trials.parquet`` (written by :mod:`raycl.tune.export`), each trial's Ray ``result.json``
(one line per task report) and the best trial's last checkpoint (``matrices.json``), so it works
on an experiment copied from a cluster.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from raycl.errors import RayclError
from raycl.tune import rung_signal
from raycl.vocabulary import JOBS_DIR, MATRICES_FILE, OBJECTIVE, RESULT_FILE, SIGNAL_FILE, SPACE_FILE, TRIALS_FILE, Status

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Trial:
    """One trial as the report sees it: its Parquet row plus its Ray history."""

    trial_id: str
    status: str
    objective: float | None
    config: dict
    row: dict
    history: list[dict]
    folder: Path | None
    order: tuple = ()

    @property
    def tasks_trained(self) -> int:
        return int(self.row.get("tasks_trained") or 0)

    @property
    def objective_by_task(self) -> list[float]:
        values = self.row.get("objective_by_task")
        if values:
            return [float(v) for v in values]
        return [float(r[OBJECTIVE]) for r in self.history if OBJECTIVE in r]


@dataclasses.dataclass
class Experiment:
    path: Path
    trials: list[Trial]
    method: str
    dataset: str
    settings: tuple[str, ...]
    n_tasks: int
    rungs: tuple[int, ...] = ()
    rungs_described: str = ""

    # Read, not changed, once loaded: what is derived from the trials is computed once.
    @functools.cached_property
    def completed(self) -> list[Trial]:
        """Completed trials, best first."""
        done = [t for t in self.trials if t.status == Status.COMPLETED and t.objective is not None]
        return sorted(done, key=lambda t: -t.objective)

    @property
    def best(self) -> Trial | None:
        done = self.completed
        return done[0] if done else None

    @functools.cached_property
    def params(self) -> list[str]:
        """Searched hyperparameters: those that take more than one value across trials."""
        names = sorted({k for t in self.trials for k in t.config})
        return [n for n in names if len({_key(t.config.get(n)) for t in self.trials if n in t.config}) > 1]


def _key(value):
    return round(value, 12) if isinstance(value, float) else value


def _read_history(folder: Path) -> list[dict]:
    path = folder / RESULT_FILE
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a trial killed mid-write leaves a torn last line
                log.warning("skipping an unreadable line of %s", path)
    return records


def _trial_folders(path: Path) -> dict[str, tuple[Path, list[dict]]]:
    found = {}
    for result in sorted(path.glob(f"*/{RESULT_FILE}")):
        history = _read_history(result.parent)
        trial_id = next((r["trial_id"] for r in history if "trial_id" in r), None)
        if trial_id is None:
            # <id>_<number>_..., or Tune's own <trainable>_<id>_<number>_... of older experiments
            match = re.search(r"(?:^|_)([0-9a-f]{8})_", result.parent.name)
            trial_id = match.group(1) if match else result.parent.name
        found[str(trial_id)] = (result.parent, history)
    return found


def _trial_number(folder: Path | None) -> int:
    match = re.search(r"(?:^|_)[0-9a-f]{8}_(\d+)", folder.name) if folder else None
    return int(match.group(1)) if match else 0


# The files a report reads (what it fetches of an experiment in object storage).
# A search in the promotion form keeps each job's records and matrices in jobs/<job>.json.
REPORT_INPUTS = (TRIALS_FILE, SPACE_FILE, RESULT_FILE, MATRICES_FILE, SIGNAL_FILE, ".json")


def load_experiment(path: str | Path) -> Experiment:
    """The experiment at ``path``; RayclError when it holds no trials table."""
    path = Path(path).expanduser().resolve()
    table_path = path / TRIALS_FILE
    if not table_path.is_file():
        raise RayclError(f"{path} is not a finished raycl experiment: no {TRIALS_FILE} in it "
                         "(launch/tune.py writes one when a search ends)")
    table = pq.read_table(table_path)
    rows = table.to_pylist()
    columns = table.column_names  # every row has every column
    if not rows:
        raise RayclError(f"{table_path} holds no trials")
    folders = _trial_folders(path)
    trials = []
    for index, row in enumerate(rows):
        config = {k[len("config."):]: v for k, v in row.items() if k.startswith("config.") and v is not None}
        # A configuration's Ray folder is its cohort's (the trial that trained it).
        folder, history = folders.get(str(row.get("cohort") or row["trial_id"]), (None, []))
        objective = row.get(OBJECTIVE)
        objective = None if objective is None or math.isnan(objective) else float(objective)
        # Completion order: the time of the last report, then Tune's trial number, then table order.
        finished = history[-1].get("timestamp", 0) if history else 0
        trials.append(Trial(trial_id=str(row["trial_id"]), status=str(row["status"]), objective=objective,
                            config=config, row=row, history=history, folder=folder,
                            order=(finished, _trial_number(folder), index)))
    settings = tuple(sorted({m[len("val_"):-len("_task1")] for m in columns
                             if m.startswith("val_") and m.endswith("_task1")}))
    # The objective is the benchmark's first setting: put the setting whose mean equals it first.
    for setting in settings:
        if all(r.get(f"val_{setting}") == r.get(OBJECTIVE) for r in rows if r.get("status") == Status.COMPLETED):
            settings = (setting, *[s for s in settings if s != setting])
            break
    task_columns = [re.fullmatch(r"val_.+_task(\d+)", m) for m in columns]
    n_tasks = max([int(r.get("tasks_trained") or 0) for r in rows]
                  + [int(m.group(1)) for m in task_columns if m])
    signal_path = path / SIGNAL_FILE
    recorded = json.loads(signal_path.read_text()) if signal_path.is_file() else {}
    rungs = tuple(recorded.get("rungs", rung_signal.inferred_rungs(rows)))
    return Experiment(path=path, trials=trials, method=str(rows[0].get("method", "?")),
                      dataset=str(rows[0].get("dataset", "?")), settings=settings, n_tasks=n_tasks, rungs=rungs,
                      rungs_described=recorded.get("rungs_described", ""))


def experiment_signal(experiment: Experiment) -> list[rung_signal.RungSignal]:
    """The rung diagnostic of ``experiment``, from its trials table."""
    return rung_signal.rung_signal([t.row for t in experiment.trials], experiment.rungs)


def _last_checkpoint(trial: Trial) -> Path | None:
    if trial.folder is None:
        return None
    checkpoints = sorted(trial.folder.glob("checkpoint_*"))
    return checkpoints[-1] if checkpoints else None


def _matrices(stored: dict) -> dict[str, dict[str, np.ndarray]]:
    return {split: {s: np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
                    for s, rows in by_setting.items()} for split, by_setting in stored.items()}


def trial_matrices(experiment: Experiment, trial: Trial) -> dict[str, dict[str, np.ndarray]]:
    """split -> setting -> T x T accuracy matrix (NaN where not evaluated) for one trial.

    From the last checkpoint's ``matrices.json`` when there is one; otherwise the validation
    rows are rebuilt from the trial's task reports and the test row from the Parquet table.
    """
    t = experiment.n_tasks
    for job in reversed(list(trial.row.get("jobs") or [])):  # the promotion form: its last job's file
        path = experiment.path / JOBS_DIR / f"{job}.json"
        stored = json.loads(path.read_text()).get("matrices", {}).get(trial.trial_id) if path.is_file() else None
        if stored is not None:
            return _matrices(stored)
    member = int(trial.row.get("cohort_member") or 0)
    checkpoint = _last_checkpoint(trial)
    if checkpoint is not None and (checkpoint / MATRICES_FILE).is_file():
        stored = json.loads((checkpoint / MATRICES_FILE).read_text())
        # One entry per configuration of the cohort (experiments from before cohorts: one trial's).
        stored = stored if "val" in stored else stored[str(member)]
        return _matrices(stored)
    out = {"val": {}, "test": {}}
    for setting in experiment.settings:
        val = np.full((t, t), np.nan)
        for report in trial.history:
            if int(report.get("best_config", 0)) != member:  # the top-level metrics are another's
                continue
            i = int(report.get("task", 0)) - 1
            for j in range(t):
                value = report.get(f"val_{setting}_task{j + 1}")
                if 0 <= i < t and value is not None:
                    val[i, j] = value
        out["val"][setting] = val
        test = np.full((t, t), np.nan)
        last = trial.row.get(f"test_{setting}_by_task")
        if last:
            test[t - 1, : len(last)] = last
        out["test"][setting] = test
    return out
