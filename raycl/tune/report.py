"""A finished search as PNG figures and one HTML page, from the experiment folder's own files.

Reads ``trials.parquet`` (written by :mod:`raycl.tune.export`), each trial's Ray ``result.json``
(one line per task report) and the best trial's last checkpoint (``matrices.json``, else
``test.json``), so it works on an experiment copied from a cluster. Nothing is trained, nothing
is fetched. Figures are drawn on :class:`matplotlib.figure.Figure` objects, which render with
the Agg backend without touching pyplot's global state.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from raycl.tune.space import edge_warnings

from raycl import storage
from raycl.errors import RayclError
from raycl.files import atomic_write_bytes, atomic_write_text
from raycl.tune import rung_signal
from raycl.tune.export import SPACE_FILE
from raycl.tune.trainable import MATRICES_FILE, OBJECTIVE

log = logging.getLogger(__name__)

PAGE = "index.html"
TOP = 10
STATUS_COLORS = {"completed": "tab:blue", "pruned": "tab:gray", "diverged": "tab:red", "errored": "black"}


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

    @property
    def completed(self) -> list[Trial]:
        """Completed trials, best first."""
        done = [t for t in self.trials if t.status == "completed" and t.objective is not None]
        return sorted(done, key=lambda t: -t.objective)

    @property
    def best(self) -> Trial | None:
        done = self.completed
        return done[0] if done else None

    @property
    def params(self) -> list[str]:
        """Searched hyperparameters: those that take more than one value across trials."""
        names = sorted({k for t in self.trials for k in t.config})
        return [n for n in names if len({_key(t.config.get(n)) for t in self.trials if n in t.config}) > 1]


@dataclasses.dataclass
class ReportFiles:
    page: Path
    figures: list[Path]
    notes: list[str]


# ----- reading ------------------------------------------------------------------------------------
def _key(value):
    return round(value, 12) if isinstance(value, float) else value


def _read_history(folder: Path) -> list[dict]:
    path = folder / "result.json"
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
    for result in sorted(path.glob("*/result.json")):
        history = _read_history(result.parent)
        trial_id = next((r["trial_id"] for r in history if "trial_id" in r), None)
        if trial_id is None:
            match = re.search(r"_([0-9a-f]{8})_", result.parent.name)
            trial_id = match.group(1) if match else result.parent.name
        found[str(trial_id)] = (result.parent, history)
    return found


def _trial_number(folder: Path | None) -> int:
    match = re.search(r"_[0-9a-f]{8}_(\d+)", folder.name) if folder else None
    return int(match.group(1)) if match else 0


REPORT_INPUTS = ("trials.parquet", SPACE_FILE, "result.json", MATRICES_FILE, rung_signal.SIGNAL_FILE)


def load_experiment(path: str | Path) -> Experiment:
    """The experiment at ``path``; RayclError when it holds no ``trials.parquet``."""
    path = Path(path).expanduser().resolve()
    table_path = path / "trials.parquet"
    if not table_path.is_file():
        raise RayclError(f"{path} is not a finished raycl experiment: no trials.parquet in it "
                         "(launch/tune.py writes one when a search ends)")
    rows = pq.read_table(table_path).to_pylist()
    if not rows:
        raise RayclError(f"{table_path} holds no trials")
    folders = _trial_folders(path)
    trials = []
    for index, row in enumerate(rows):
        config = {k[len("config."):]: v for k, v in row.items() if k.startswith("config.") and v is not None}
        # A configuration's Ray folder is its cohort's (the trial that trained it).
        folder, history = folders.get(str(row.get("cohort") or row["trial_id"]), (None, []))
        objective = row.get("objective")
        objective = None if objective is None or math.isnan(objective) else float(objective)
        # Completion order: the time of the last report, then Tune's trial number, then table order.
        finished = history[-1].get("timestamp", 0) if history else 0
        trials.append(Trial(trial_id=str(row["trial_id"]), status=str(row["status"]), objective=objective,
                            config=config, row=row, history=history, folder=folder,
                            order=(finished, _trial_number(folder), index)))
    settings = tuple(sorted({m[len("val_"):-len("_task1")] for r in rows for m in r
                             if m.startswith("val_") and m.endswith("_task1")}))
    # The objective is the benchmark's first setting: put the setting whose mean equals it first.
    for setting in settings:
        if all(r.get(f"val_{setting}") == r.get("objective") for r in rows if r.get("status") == "completed"):
            settings = (setting, *[s for s in settings if s != setting])
            break
    task_columns = [re.fullmatch(r"val_.+_task(\d+)", m) for r in rows for m in r]
    n_tasks = max([int(r.get("tasks_trained") or 0) for r in rows]
                  + [int(m.group(1)) for m in task_columns if m])
    signal_path = path / rung_signal.SIGNAL_FILE
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


def trial_matrices(experiment: Experiment, trial: Trial) -> dict[str, dict[str, np.ndarray]]:
    """split -> setting -> T x T accuracy matrix (NaN where not evaluated) for one trial.

    From the last checkpoint's ``matrices.json`` when there is one; otherwise the validation
    rows are rebuilt from the trial's task reports and the test row from the Parquet table.
    """
    t = experiment.n_tasks
    member = int(trial.row.get("cohort_member") or 0)
    checkpoint = _last_checkpoint(trial)
    if checkpoint is not None and (checkpoint / MATRICES_FILE).is_file():
        stored = json.loads((checkpoint / MATRICES_FILE).read_text())
        # One entry per configuration of the cohort (experiments from before cohorts: one trial's).
        stored = stored if "val" in stored else stored[str(member)]
        return {split: {s: np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
                        for s, rows in by_setting.items()} for split, by_setting in stored.items()}
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


# ----- figures ------------------------------------------------------------------------------------
def _save(fig: Figure, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_history(experiment: Experiment, path: Path) -> Path:
    trials = sorted(experiment.trials, key=lambda t: t.order)
    fig = Figure(figsize=(7.5, 4), layout="constrained")
    ax = fig.add_subplot()
    best, running = -math.inf, []
    for n, trial in enumerate(trials, start=1):
        if trial.status == "completed" and trial.objective is not None:
            best = max(best, trial.objective)
        running.append(best if best > -math.inf else np.nan)
    for status, marker in (("completed", "o"), ("pruned", "x"), ("diverged", "v"), ("errored", "s")):
        points = [(n, t.objective_by_task[-1] if t.objective_by_task else 0.0)
                  for n, t in enumerate(trials, start=1) if t.status == status]
        if points:
            label = "pruned (objective on the tasks it saw)" if status == "pruned" else status
            ax.scatter(*zip(*points), marker=marker, color=STATUS_COLORS[status], label=label, zorder=3)
    ax.step(range(1, len(trials) + 1), running, where="post", color="tab:orange", label="running best")
    ax.set_xlabel("trial, in completion order")
    ax.set_ylabel(f"objective: mean val {experiment.settings[0]} acc. (%)")
    ax.set_title(f"Search history: {experiment.method} on {experiment.dataset}, {len(trials)} trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def plot_asha(experiment: Experiment, path: Path) -> Path:
    t = experiment.n_tasks
    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for trial in experiment.trials:
        curve = trial.objective_by_task
        if not curve:
            continue
        color = STATUS_COLORS.get(trial.status, "black")
        alpha = 0.9 if trial.status == "completed" else 0.5
        left.plot(range(1, len(curve) + 1), curve, color=color, alpha=alpha, lw=1)
        if trial.status != "completed":
            left.scatter([len(curve)], [curve[-1]], marker="x", color=color, zorder=3)
    best = experiment.best
    if best is not None:
        curve = best.objective_by_task
        left.plot(range(1, len(curve) + 1), curve, color="tab:orange", lw=2.5, label=f"best ({best.trial_id})")
        left.legend(fontsize=8, loc="lower left")
    left.set_xlabel("tasks trained (the rungs' time)")
    left.set_ylabel("objective (%)")
    left.set_title("Objective after each task; x = stopped there (at a rung) or diverged")
    left.set_xticks(range(1, t + 1, max(1, t // 10)))
    left.grid(alpha=0.3)

    reached = [sum(tr.tasks_trained >= k for tr in experiment.trials) for k in range(1, t + 1)]
    stopped = [sum(tr.tasks_trained == k and tr.status != "completed" for tr in experiment.trials)
               for k in range(1, t + 1)]
    ks = np.arange(1, t + 1)
    right.bar(ks, reached, color="tab:blue", alpha=0.6, label="configurations that trained this task")
    right.bar(ks, stopped, color="tab:red", alpha=0.8, label="configurations stopped after this task")
    for k, (r, s) in enumerate(zip(reached, stopped), start=1):
        right.text(k, r, str(r), ha="center", va="bottom", fontsize=7)
    right.set_xlabel("task")
    right.set_ylabel("configurations")
    right.set_title("Configurations reaching each task rung")
    right.set_xticks(range(1, t + 1, max(1, t // 10)))
    right.set_ylim(0, max(reached) * 1.3 if reached else 1)
    right.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def plot_rungs(experiment: Experiment, signal: list[rung_signal.RungSignal], path: Path) -> Path:
    """Per rung: each completed configuration's objective at the rung against its final objective."""
    fig = Figure(figsize=(4.2 * len(signal), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(signal), squeeze=False)[0])
    for ax, rung in zip(axes, signal):
        for sample, color, marker in (("survivors", "tab:blue", "o"), ("audited", "tab:green", "D")):
            points = [(t.objective_by_task[rung.rung - 1], t.objective) for t in experiment.completed
                      if bool(t.row.get("audit")) == (sample == "audited") and len(t.objective_by_task) >= rung.rung]
            if points:
                label = {"survivors": "completed, survived the rungs", "audited": "completed, audited"}[sample]
                ax.scatter(*zip(*points), color=color, marker=marker, alpha=0.7, label=label)
        lines = [f"{c.sample}: rho {'n/a' if c.rho is None else f'{c.rho:+.2f}'} (n={c.n})"
                 for c in (rung.survivors, rung.audited) if c.n]
        ax.set_title(f"after task {rung.rung}: stopped {rung.stopped} of {rung.judged}\n" + "; ".join(lines),
                     fontsize=9, color="tab:red" if rung.weak else "black")
        ax.set_xlabel(f"objective after task {rung.rung} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("final objective (%)")
    fig.suptitle("Does a rung's score predict the final objective? (Spearman's rank correlation; red: weak)")
    return _save(fig, path)


def signal_table(signal: list[rung_signal.RungSignal]) -> tuple[list[str], list[list[str]]]:
    header = ["rung (after task)", "judged", "stopped", "rho survivors", "n", "rho audited", "n", "verdict"]
    rows = [[str(r.rung), str(r.judged), str(r.stopped), _fmt(r.survivors.rho), str(r.survivors.n),
             _fmt(r.audited.rho), str(r.audited.n),
             "weak" if r.weak else "too few completed" if r.evidence.n < rung_signal.MIN_COMPLETED else "informative"]
            for r in signal]
    return header, rows


def _distributions(experiment: Experiment) -> dict:
    """Optuna distributions of the searched parameters: from the experiment's search_space.yaml,
    else inferred from the values tried.

    Inferred: strings and integers with at most 8 distinct values are categorical (``choice``);
    other integers are integer ranges; floats spanning more than a factor 20 while positive are
    log-uniform, else uniform.
    """
    import optuna.distributions as d

    declared = _declared_space(experiment)
    out = {}
    for name in experiment.params:
        if name in declared:
            out[name] = declared[name]
            continue
        values = [t.config[name] for t in experiment.trials if name in t.config]
        distinct = sorted(set(values), key=str)
        if any(isinstance(v, str) for v in values):
            out[name] = d.CategoricalDistribution(tuple(str(v) for v in distinct))
        elif all(float(v).is_integer() for v in values) and len(distinct) <= 8:
            out[name] = d.CategoricalDistribution(tuple(sorted(int(v) for v in distinct)))
        elif all(float(v).is_integer() for v in values):
            out[name] = d.IntDistribution(int(min(values)), int(max(values)))
        else:
            low, high = float(min(values)), float(max(values))
            out[name] = d.FloatDistribution(low, high, log=low > 0 and high / low > 20)
    return out


def _declared_space_object(experiment: Experiment):
    """The experiment's search space from its search_space.yaml, None when it has none."""
    from raycl.tune.space import parse_space

    path = experiment.path / SPACE_FILE
    if not path.is_file():
        return None
    try:
        return parse_space(yaml.safe_load(path.read_text()), experiment.method, experiment.dataset, str(path))
    except (RayclError, yaml.YAMLError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None


def _declared_space(experiment: Experiment) -> dict:
    space = _declared_space_object(experiment)
    if space is None:
        return {}
    return {dim.name: dim.distribution() for dim in space.dimensions if dim.kind != "fixed"}


def _param_value(distribution, value):
    import optuna.distributions as d

    if isinstance(distribution, d.CategoricalDistribution):
        # The table stores numbers as floats: give back the declared choice they stand for.
        for choice in distribution.choices:
            if choice == value or (not isinstance(choice, str) and not isinstance(value, str)
                                   and float(choice) == float(value)):
                return choice
        return value
    if isinstance(distribution, d.IntDistribution):
        return int(value)
    return float(value)


def build_study(experiment: Experiment, storage: str | None = None):
    """The search's Optuna study: loaded from ``storage`` when given, else rebuilt in memory."""
    import optuna
    from optuna.trial import TrialState, create_trial

    if storage:
        return optuna.load_study(study_name=experiment.path.name, storage=storage)
    distributions = _distributions(experiment)
    study = optuna.create_study(direction="maximize", study_name=experiment.path.name)
    trials = []
    for trial in experiment.trials:
        dists = {k: v for k, v in distributions.items() if k in trial.config}
        params = {k: _param_value(v, trial.config[k]) for k, v in dists.items()}
        curve = trial.objective_by_task
        intermediate = {step: value for step, value in enumerate(curve, start=1)}
        if trial.status == "completed" and trial.objective is not None:
            trials.append(create_trial(params=params, distributions=dists, value=trial.objective,
                                       intermediate_values=intermediate))
        elif trial.status == "pruned":
            trials.append(create_trial(params=params, distributions=dists, state=TrialState.PRUNED,
                                       intermediate_values=intermediate))
        else:
            trials.append(create_trial(params=params, distributions=dists, state=TrialState.FAIL))
    study.add_trials(trials)
    return study


def param_importances(experiment: Experiment, storage: str | None = None, seed: int = 0) -> dict[str, float]:
    """fANOVA importance of each searched hyperparameter for the objective (sums to 1)."""
    import optuna

    study = build_study(experiment, storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 2:
        raise RayclError(f"hyperparameter importance needs at least 2 completed trials, found {len(complete)}")
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator))


def plot_importance(importances: dict[str, float], path: Path, n_completed: int) -> Path:
    names = list(importances)[::-1]
    fig = Figure(figsize=(6, 0.5 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    for y, n in enumerate(names):
        ax.text(importances[n], y, f" {importances[n]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("importance for the objective (fANOVA, sums to 1)")
    ax.set_title(f"Hyperparameter importance over {n_completed} completed trials")
    return _save(fig, path)


def plot_params(experiment: Experiment, names: list[str], path: Path) -> Path:
    import optuna.distributions as d

    distributions = _distributions(experiment)
    done = experiment.completed
    best = experiment.best
    fig = Figure(figsize=(3.6 * len(names), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(names), sharey=True))
    for ax, name in zip(axes, names):
        dist = distributions.get(name)
        points = [(t.config[name], t.objective) for t in done if name in t.config]
        categorical = isinstance(dist, d.CategoricalDistribution)
        if categorical:
            choices = list(dist.choices)
            xs = [choices.index(_param_value(dist, v)) for v, _ in points]
            ax.set_xticks(range(len(choices)), [str(c) for c in choices])
        else:
            xs = [float(v) for v, _ in points]
            if getattr(dist, "log", False):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.scatter(xs, [o for _, o in points], color="tab:blue", alpha=0.7)
        if best is not None and name in best.config:
            bx = choices.index(_param_value(dist, best.config[name])) if categorical else float(best.config[name])
            ax.scatter([bx], [best.objective], color="tab:orange", s=120, marker="*", zorder=3, label="best")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("objective (%)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Top hyperparameters against the objective (completed trials)")
    return _save(fig, path)


def plot_matrices(experiment: Experiment, matrices: dict, trial: Trial, path: Path) -> Path:
    settings = [s for s in experiment.settings if s in matrices.get("val", {})]
    t = experiment.n_tasks
    fig = Figure(figsize=(4.2 * 2 + 1, 3.6 * len(settings) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(settings), 2))
    for row, setting in enumerate(settings):
        for col, split in enumerate(("val", "test")):
            ax = axes[row, col]
            m = matrices.get(split, {}).get(setting, np.full((t, t), np.nan))
            image = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
            if t <= 10:
                for i in range(t):
                    for j in range(t):
                        if not math.isnan(m[i, j]):
                            ax.text(j, i, f"{m[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                    color="white" if m[i, j] < 60 else "black")
            ticks = range(0, t, max(1, t // 10))
            ax.set_xticks(ticks, [str(k + 1) for k in ticks])
            ax.set_yticks(ticks, [str(k + 1) for k in ticks])
            ax.set_xlabel("task evaluated")
            ax.set_ylabel("after training task")
            note = "" if split == "val" or np.isfinite(m[:-1]).any() else " (search tests after the last task only)"
            ax.set_title(f"{split} {setting}{note}", fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.9, label="accuracy (%)")
    fig.suptitle(f"Best trial {trial.trial_id}: accuracy matrices (blank = not evaluated)")
    return _save(fig, path)


def plot_stream(experiment: Experiment, matrices: dict, trial: Trial, path: Path) -> Path:
    import matplotlib

    setting = experiment.settings[0]
    m = matrices["val"][setting]
    t = experiment.n_tasks
    colors = matplotlib.colormaps["viridis"]
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.add_subplot()
    for j in range(t):
        rows = [i for i in range(t) if not math.isnan(m[i, j])]
        if not rows:
            continue
        color = colors(j / max(1, t - 1))
        trained = [i for i in rows if i >= j]
        ax.plot([i + 1 for i in trained], [m[i, j] for i in trained], color=color, marker=".", lw=1,
                label=f"task {j + 1}" if t <= 10 else None)
        before = [i for i in rows if i < j]
        if before:  # accuracy on a task before training it (FWT): dotted lead-in
            ax.plot([i + 1 for i in [*before, j]], [m[i, j] for i in [*before, j]], color=color, ls=":", lw=1)
    seen = [np.nanmean(m[i, : i + 1]) if np.isfinite(m[i, : i + 1]).any() else np.nan for i in range(t)]
    ax.plot(range(1, t + 1), seen, color="black", lw=2.5, label="mean over seen tasks")
    ax.set_xlabel("after training task")
    ax.set_ylabel(f"val {setting} accuracy (%)")
    ax.set_xticks(range(1, t + 1, max(1, t // 10)))
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(f"Best trial {trial.trial_id}: accuracy on each task over the stream")
    ax.legend(fontsize=7, ncol=2 if t <= 10 else 1, loc="lower left")
    return _save(fig, path)


# ----- page ---------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def top_table(experiment: Experiment, limit: int = TOP) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the top configurations: objective, test, searched params, per-task val."""
    setting = experiment.settings[0]
    params = experiment.params
    header = ["#", "trial", "objective", f"test {setting}", *params,
              *[f"val task {j}" for j in range(1, experiment.n_tasks + 1)]]
    rows = []
    for rank, trial in enumerate(experiment.completed[:limit], start=1):
        rows.append([str(rank), trial.trial_id, f"{trial.objective:.2f}",
                     _fmt(trial.row.get(f"test_{setting}")) if trial.row.get(f"test_{setting}") is None
                     else f"{trial.row[f'test_{setting}']:.2f}",
                     *[_fmt(trial.config.get(p)) for p in params],
                     *[_fmt(trial.row.get(f"val_{setting}_task{j}")) if trial.row.get(f"val_{setting}_task{j}")
                       is None else f"{trial.row[f'val_{setting}_task{j}']:.1f}"
                       for j in range(1, experiment.n_tasks + 1)]])
    return header, rows


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _page(experiment: Experiment, sections: list[tuple[str, str, Path | None]], notes: list[str],
          tables: dict[str, str] | None = None) -> str:
    counts = {s: sum(t.status == s for t in experiment.trials) for s in STATUS_COLORS}
    best = experiment.best
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>raycl report: {html.escape(experiment.path.name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right}img{max-width:100%;border:1px solid #eee}.note{color:#a33}</style></head><body>",
        f"<h1>Search report: {html.escape(experiment.path.name)}</h1>",
        f"<p>{html.escape(experiment.method)} on {html.escape(experiment.dataset)}, {len(experiment.trials)} "
        "trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()) + ". Objective: mean validation "
        f"{html.escape(experiment.settings[0])} accuracy over the tasks seen (%). "
        f"Experiment folder: <code>{html.escape(str(experiment.path))}</code></p>",
    ]
    if best is not None:
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(best.config.items()))
        parts.append(f"<p><b>Best trial {html.escape(best.trial_id)}</b>: objective {best.objective:.2f}; "
                     f"{html.escape(config)}</p>")
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for title, text, figure in sections:
        parts.append(f"<h2>{html.escape(title)}</h2><p>{text}</p>")
        if figure is not None:
            parts.append(f"<img src='{html.escape(figure.name)}' alt='{html.escape(title)}'>")
        if tables and title in tables:
            parts.append(tables[title])
    header, rows = top_table(experiment)
    parts.append(f"<h2>Top {len(rows)} configurations</h2><p>Completed trials by objective; per-task "
                 f"columns are the final validation {html.escape(experiment.settings[0])} accuracy on each "
                 "task after the last task.</p>")
    parts.append(_html_table(header, rows))
    parts.append("</body></html>")
    return "\n".join(parts)


def _per_task_report(path: Path, out_dir) -> ReportFiles | None:
    """The report of a per-task search (one table row per task and candidate), None for another."""
    from raycl.tune import report_schedule

    table = path.expanduser().resolve() / "trials.parquet"
    rows = pq.read_table(table).to_pylist() if table.is_file() else []
    if not report_schedule.is_per_task(rows):
        return None
    rows = report_schedule.winner_rows(rows)
    out = Path(out_dir) if out_dir else table.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    figure = report_schedule.plot_schedule(rows, out / "schedule.png", _save)
    page = out / PAGE
    atomic_write_text(page, report_schedule.page(table.parent.name, rows, figure, _html_table))
    return ReportFiles(page=page, figures=[figure], notes=[])


def write_report(experiment_dir: str | Path, out_dir: str | Path | None = None,
                 optuna_storage: str | None = None) -> ReportFiles:
    """Write the figures and ``index.html`` to ``out_dir`` (default ``<experiment>/report``, or
    ``./<experiment name>-report`` for an experiment in object storage such as ``s3://...``)."""
    if storage.is_uri(experiment_dir):
        location = storage.resolve(experiment_dir)
        # Only the files a report reads, not the models in the checkpoints.
        local = storage.download(location, keep=lambda relative: relative.endswith(REPORT_INPUTS))
        out_dir = out_dir or Path.cwd() / f"{storage.name(location)}-report"
        experiment_dir = local
    per_task = _per_task_report(Path(experiment_dir), out_dir)
    if per_task is not None:
        return per_task
    experiment = load_experiment(experiment_dir)
    out = Path(out_dir) if out_dir else experiment.path / "report"
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    sections: list[tuple[str, str, Path | None]] = []
    sections.append(("Search history", "Every trial's objective in the order trials finished; the orange "
                     "line is the best completed trial so far. Trials ASHA stopped early show the objective "
                     "over the fewer tasks they saw, which is not comparable with a full stream.",
                     plot_history(experiment, out / "history.png")))
    rungs_text = f" {html.escape(experiment.rungs_described)}." if experiment.rungs_described else ""
    sections.append(("Early stopping (ASHA's rule on tasks)", "Left: each configuration's objective after every "
                     "task it trained. Right: how many configurations trained each task and how many were "
                     f"stopped there.{rungs_text}", plot_asha(experiment, out / "asha.png")))
    tables = {}
    signal = experiment_signal(experiment)
    if signal:
        title = "Rung signal"
        tables[title] = _html_table(*signal_table(signal))
        sections.append((title, "For every rung, Spearman's rank correlation between a configuration's objective "
                         "at the rung and its final objective, over the configurations that completed: near 1 "
                         "the rung ranks them as the end does, near 0 stopping there is close to random. "
                         "Survivors passed every rung, a narrow selected sample that biases the correlation "
                         "low; audited configurations (--audit-fraction) were never stopped.",
                         plot_rungs(experiment, signal, out / "rungs.png")))
        for r in signal:
            if r.weak:
                notes.append(f"weak rung after task {r.rung}: {r.evidence.describe()}; move it with --grace-period")
    declared = _declared_space_object(experiment)
    if declared is not None and experiment.best is not None:
        notes.extend(edge_warnings(declared, experiment.best.config))
    completed = experiment.completed
    try:
        importances = param_importances(experiment, optuna_storage)
    except (RayclError, RuntimeError, ValueError) as exc:
        notes.append(f"no hyperparameter importance: {exc}")
        importances = {}
    if importances:
        sections.append(("Hyperparameter importance", "Optuna's fANOVA evaluator on the study (rebuilt from "
                         "the trials table unless --optuna-storage is given): how much of the objective's "
                         "variance each hyperparameter explains.",
                         plot_importance(importances, out / "importance.png", len(completed))))
    top = list(importances)[:4] or experiment.params[:4]
    if top and completed:
        sections.append(("Top hyperparameters against the objective", "Each completed trial's value of the "
                         "most important hyperparameters and its objective; the star is the best trial.",
                         plot_params(experiment, top, out / "params.png")))
    best = experiment.best
    if best is None:
        notes.append("no trial completed every task: no best-trial figures")
    else:
        matrices = trial_matrices(experiment, best)
        sections.append(("Best trial: accuracy matrices", "Row i, column j: accuracy on task j after training "
                         "task i. The search evaluates test once, after the last task, so only the test "
                         "matrix's last row is filled.",
                         plot_matrices(experiment, matrices, best, out / "matrices.png")))
        sections.append(("Best trial: accuracy on each task over the stream", "Validation accuracy on each "
                         "task (one line per task, from the task it is trained on; dotted: before it is "
                         "trained) and the mean over seen tasks, which is the objective.",
                         plot_stream(experiment, matrices, best, out / "stream.png")))
    page = out / PAGE
    atomic_write_text(page, _page(experiment, sections, notes, tables))
    figures = [f for _, _, f in sections if f is not None]
    log.info("report of %s: %s (%d figures)", experiment.path, page, len(figures))
    return ReportFiles(page=page, figures=figures, notes=notes)
