"""A search's outputs and machinery at many configurations: the progress line's running counts, the
report's sampled figures and importances, and launch/benchmark.py --search-scale."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from raycl.vocabulary import JOB, Status

REPO = Path(__file__).resolve().parents[1]


# ----- the progress line -----------------------------------------------------------------------------------
def recount(tally) -> tuple[dict, list]:
    """The counts and the ranking as the progress line computed them before: from every record."""
    counts = {s: 0 for s in (Status.COMPLETED, Status.RUNNING, Status.PRUNED, Status.DIVERGED, Status.ERRORED)}
    for status, *_ in tally.configs.values():
        counts[status] += 1
    done = [(objective, key) for key, (status, _, objective, _) in tally.configs.items()
            if status == Status.COMPLETED and objective is not None]
    return counts, sorted(done, key=lambda item: -item[0])


class Job:
    def __init__(self, name, configs):
        self.trial_id = name
        self.config = {JOB: {"configs": [{"id": c, "params": {"lr": i / 10}} for i, c in enumerate(configs)]}}


def test_the_progress_lines_running_counts_and_ranking_are_a_recount_at_every_step(tmp_path):
    from raycl.tune.progress import SearchTally

    rng = random.Random(0)
    journal = tmp_path / "rungs.jsonl"
    journal.write_text("")
    tally = SearchTally(samples=60, final_task=5, journal=str(journal))
    names = [f"c{i}" for i in range(60)]
    most = {}
    for step in range(400):
        configs = rng.sample(names, 4)
        job = Job(f"j{step}", configs)
        what = rng.random()
        if what < 0.3:
            tally.on_trial_start(0, [], job)
        elif what < 0.8:  # results: any status, objectives that tie, that change, that are missing
            tally.on_trial_result(0, [], job, {"task": 5, "configs": {c: {
                "status": rng.choice([Status.RUNNING, Status.COMPLETED, Status.COMPLETED, Status.DIVERGED]),
                "task": rng.choice([2, 5]), "objective": rng.choice([None, 50.0, 60.0, rng.uniform(0, 100)])}
                for c in configs}})
        elif what < 0.9:
            (tally.on_trial_complete if rng.random() < 0.8 else tally.on_trial_error)(0, [], job)
        else:  # the scheduler prunes a configuration that waits at its rung
            with journal.open("a") as stream:
                stream.write(json.dumps({"event": "pruned", "id": rng.choice(names), "rung": 2}) + "\n")
        kept = tally.counts()  # reads the journal's new decisions first
        counts, ranking = recount(tally)
        assert kept == counts
        assert [(objective, key) for objective, key, _ in tally.completed()] == ranking
        assert [key for _, key, _ in tally.completed(3)] == [key for _, key in ranking[:3]]
        most = {status: max(count, most.get(status, 0)) for status, count in counts.items()}
    assert min(most.values()) > 2  # every status was reached, and left, many times over


def test_a_journal_in_object_storage_is_read_at_most_every_few_seconds_and_at_the_end(monkeypatch):
    """And segment by segment (raycl.tune.journal): a segment filled up is read once, and the
    events that went on in the next one are read from there."""
    from types import SimpleNamespace

    from raycl import storage
    from raycl.tune import journal as journal_module
    from raycl.tune import progress

    location = "s3://bucket/search/rungs.jsonl"
    clock, reads, parts = [0.0], [], {}  # segment -> its lines
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    monkeypatch.setattr(storage, "is_uri", lambda where: str(where).startswith("s3://"))
    monkeypatch.setattr(storage, "read_bytes", lambda where: reads.append(where) or "".join(parts[where]).encode())
    monkeypatch.setattr(journal_module, "segments", lambda where: sorted(parts))
    tally = progress.SearchTally(samples=4, final_task=5, journal=location)
    tally.on_trial_start(0, [], Job("j0", ["a", "b", "c", "d"]))

    def prune(config):  # two events a segment
        if not parts or len(parts[max(parts)]) == 2:
            parts[f"{location}.part-{len(parts):05d}"] = []
        parts[max(parts)].append(json.dumps({"event": "pruned", "id": config, "rung": 2}) + "\n")

    prune("a")
    assert tally.counts()[Status.PRUNED] == 1 and len(reads) == 1
    prune("b")
    clock[0] = progress.REMOTE_JOURNAL_INTERVAL / 2
    assert tally.counts()[Status.PRUNED] == 1 and len(reads) == 1  # not yet read again
    clock[0] = progress.REMOTE_JOURNAL_INTERVAL * 1.1
    assert tally.counts()[Status.PRUNED] == 2 and len(reads) == 2
    prune("c")
    prune("d")  # the second segment: read from its start
    tally.on_experiment_end([])
    assert tally.counts()[Status.PRUNED] == 4  # the search ended: read at once
    assert reads[2:] == [f"{location}.part-00000", f"{location}.part-00001"]
    clock[0] = progress.REMOTE_JOURNAL_INTERVAL * 2.2
    tally.counts()
    assert reads[4:] == [f"{location}.part-00001"]  # a full segment is not read again


# ----- the report ------------------------------------------------------------------------------------------
def synthetic_experiment(tmp_path, configurations: int, seed: int = 0):
    """An experiment of ``configurations`` as the report reads it (no files): a quarter completed."""
    from raycl.tune.report import Experiment, Trial

    rng = random.Random(seed)
    trials = []
    for i in range(configurations):
        completed = i % 4 == 0
        curve = [rng.uniform(40, 100) for _ in range(5 if completed else 2)]
        config = {"lr": 10 ** rng.uniform(-4, -1), "alpha": rng.uniform(0, 1), "batch": rng.choice([10, 32])}
        row = {"trial_id": f"c{i}", "tasks_trained": len(curve), "objective_by_task": curve, "objective": curve[-1]}
        trials.append(Trial(trial_id=f"c{i}", status=Status.COMPLETED if completed else Status.PRUNED,
                            objective=curve[-1], config=config, row=row, history=[], folder=None, order=(i,)))
    return Experiment(path=tmp_path, trials=trials, method="derpp", dataset="seq-digits", settings=("class_il",),
                      n_tasks=5, rungs=(2,))


def test_the_asha_figure_draws_a_fixed_sample_of_each_status_and_counts_every_configuration(tmp_path, monkeypatch):
    from matplotlib.collections import LineCollection

    from raycl.tune.report import search_figures

    drawn = []
    monkeypatch.setattr(search_figures, "save_png", lambda fig, path: drawn.append(fig) or path)
    monkeypatch.setattr(search_figures, "MAX_CURVES", 30)
    experiment = synthetic_experiment(tmp_path, 200)
    for _ in range(2):
        search_figures.plot_asha(experiment, tmp_path / "asha.png")
    curves = []
    for fig in drawn:
        left, right = fig.axes
        collections = [c for c in left.collections if isinstance(c, LineCollection)]
        curves.append([[tuple(map(tuple, s)) for s in c.get_segments()] for c in collections])
        assert "at most 30 configurations of each status" in left.get_title()
        assert [round(bar.get_height()) for bar in right.patches[:5]] == [200, 200, 50, 50, 50]
    assert curves[0] == curves[1]  # the same sample every time
    assert sorted(len(c) for c in curves[0]) == [30, 30]  # 50 completed, 150 pruned: 30 of each drawn


def test_curve_sample_keeps_everything_below_its_limit_and_the_order_above():
    from raycl.tune.report.search_figures import curve_sample

    items = list(range(100))
    assert curve_sample(items, limit=100) == items
    sample = curve_sample(items, limit=10, seed=3)
    assert len(sample) == 10 and sample == sorted(sample) and sample == curve_sample(items, limit=10, seed=3)


def test_importances_are_measured_on_a_seeded_sample_of_the_completed_trials(tmp_path, monkeypatch):
    import optuna
    import optuna.importance

    from raycl.tune.report import study as study_module

    seen = []

    def importances(study, evaluator=None, **kwargs):
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        seen.append(sorted(t.value for t in complete))
        return {"lr": 1.0}

    monkeypatch.setattr(sys.modules["optuna.importance"], "get_param_importances", importances)
    experiment = synthetic_experiment(tmp_path, 400)  # 100 completed
    assert study_module.param_importances(experiment, limit=40) == {"lr": 1.0}
    study_module.param_importances(experiment, limit=40)
    study_module.param_importances(experiment, limit=200)
    everything = sorted(t.objective for t in experiment.completed)
    assert len(seen[0]) == 40 and seen[0] == seen[1] and set(seen[0]) <= set(everything)
    assert seen[2] == everything


# ----- launch/benchmark.py --search-scale ------------------------------------------------------------------
def test_search_scale_splits_a_searchs_cost_per_configuration(tmp_path):
    """Optuna and the rung decisions measured here; trial overhead and training read from the folder
    of a search (made up here: two slots, jobs of known seconds)."""
    experiment = tmp_path / "search"
    (experiment / "jobs").mkdir(parents=True)
    events = [{"event": "search", "form": "promotion", "slots": 2}]
    events += [{"event": "config", "id": f"c{i}", "params": {"lr": 0.1}} for i in range(40)]
    (experiment / "rungs.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    jobs = [(0.0, 10.0, [2.0, 3.0]), (1.0, 6.0, [1.0]), (10.5, 21.0, [4.0, 4.0, 1.0])]
    for index, (started, ended, seconds) in enumerate(jobs):
        (experiment / "jobs" / f"j{index}.json").write_text(json.dumps(
            {"job": f"j{index}", "started": started, "ended": ended, "seconds": seconds}))
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "benchmark.py"), "--search-scale", "40",
                           "--scale-experiment", str(experiment)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {line.split("  ")[0].strip(): line.split() for line in proc.stdout.splitlines() if "  " in line}
    # training: 15 s over 40 configurations; overhead: 2 slots x 21 s span - 15 s = 27 s.
    assert lines["training"][1:3] == ["15.00", "375.00"]
    assert lines["trial overhead"][2:4] == ["27.00", "675.00"]
    rungs = lines["rung decisions"]
    calls, jobs = int(rungs[rungs.index("calls") - 1]), int(rungs[rungs.index("jobs") - 1])
    assert float(lines["Optuna"][1]) > 0 and calls > jobs >= 40 / 16  # the simulated search ran to its end
    assert "TPE window 300" in proc.stdout and "40 configurations (sgd on seq-digits)" in proc.stdout


# ----- --optuna-storage --------------------------------------------------------------------------------------
def a_study(storage):
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(direction="maximize", storage=storage, study_name="s",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(6):
        trial = study.ask()
        trial.suggest_float("lr", 1e-3, 1e-1, log=True)
        trial.report(float(i), 1)
        if i % 2:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, float(i))
    return study


def test_a_journal_file_keeps_the_study_as_a_database_does(tmp_path):
    import optuna

    from raycl.tune.optuna_storage import open_storage

    written = a_study(open_storage(str(tmp_path / "optuna.log")))
    read = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "optuna.log")))
    assert isinstance(read._storage, optuna.storages.JournalStorage)
    assert [(t.state, t.value, t.intermediate_values, t.params) for t in read.trials] == \
           [(t.state, t.value, t.intermediate_values, t.params) for t in written.trials]
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in read.trials) == 3


def test_a_sqlite_study_is_written_ahead_also_once_unpickled_and_opens_as_usual(tmp_path):
    import pickle

    import optuna
    import sqlalchemy

    from raycl.tune.optuna_storage import open_storage

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = open_storage(url)
    a_study(storage)
    for opened in (storage, pickle.loads(pickle.dumps(storage))):
        with opened.engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(sqlalchemy.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    plain = optuna.load_study(study_name="s", storage=url)  # as optuna-dashboard opens it
    assert len(plain.trials) == 6


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    from raycl.errors import RayclError
    from raycl.tune.optuna_storage import open_storage

    with pytest.raises(RayclError, match="its folder .* does not exist") as journal:
        open_storage(str(tmp_path / "missing" / "optuna.log"))
    with pytest.raises(RayclError, match="cannot open the database") as database:
        open_storage(f"sqlite:///{tmp_path / 'missing' / 'optuna.db'}")
    assert "\n" not in str(journal.value) + str(database.value)
