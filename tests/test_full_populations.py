"""Searches in full populations (``--population`` P > 1 or auto): jobs of one structure over one
segment, survivors of several jobs promoted together, every decision in ``rungs.jsonl``, Optuna told
the truth per configuration, and a search killed in the middle of a promotion resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import kill_processes_mentioning
from test_tune import flatten, search, space_file

REPO = Path(__file__).resolve().parents[1]


def journal(experiment_dir) -> list[dict]:
    from raycl.tune.journal import read_journal

    return read_journal(str(Path(experiment_dir) / "rungs.jsonl"))


def assert_promotion_decisions_hold(experiment_dir, rows):
    """The experiment's journal against its trials table: replayed, it gives every configuration the
    status the table has; every job trained configurations of one structure over one segment, each
    configuration each segment once, in order; a configuration was promoted from a rung only from
    the top 1/eta of the scores recorded there when its job started (or audited); every configuration
    in the final top 1/eta of a rung went on; and the scores the rungs compared are the objectives
    the table holds."""
    from raycl.tune.costs import Widths
    from raycl.tune.promotion import WAITING, PromotionScheduler

    events = journal(experiment_dir)
    settings = events[0]
    assert settings["event"] == "search" and events[-1]["event"] == "end"
    eta, final = settings["reduction_factor"], settings["final_task"]
    replayed = PromotionScheduler(settings["rungs"], final, eta, settings["samples"], Widths(1, 1),
                                  groups=settings["groups"], mixable=settings["mixable"])
    replayed.replay(events[1:])
    by_id = {r["trial_id"]: r for r in rows}
    assert set(by_id) == set(replayed.configs)
    for config in replayed.configs.values():
        status = "pruned" if config.status == WAITING else str(config.status)
        assert by_id[config.id]["status"] == status, config
        assert by_id[config.id]["jobs"] == config.jobs
    scores: dict[tuple[str, int], dict[str, float]] = {}  # (group, rung) -> configuration -> score
    segments = {}
    for event in events:
        if event["event"] == "job":
            structures = {replayed.configs[c].structure for c in event["configs"]}
            assert structures == {event["structure"]}
            for config in event["configs"]:
                assert segments.get(config, 0) == event["start"]  # continues where it stopped
                segments[config] = event["end"]
                if event["start"] > 0:
                    recorded = scores[replayed.configs[config].group, event["start"]]
                    ranked = sorted(recorded, key=lambda c: -recorded[c])
                    top = ranked[: max(1, len(ranked) // eta)]
                    assert config in top or by_id[config]["audit"], (config, event)
        elif event["event"] == "result":
            for config, outcome in event["outcomes"].items():
                if outcome["score"] is not None and outcome["tasks"] < final:
                    scores.setdefault((replayed.configs[config].group, outcome["tasks"]), {})[config] = outcome["score"]
                    objective = by_id[config]["objective_by_task"][outcome["tasks"] - 1]
                    assert 0 <= objective - outcome["score"] <= 0.0101
    for (_, rung), recorded in scores.items():
        ranked = sorted(recorded, key=lambda c: -recorded[c])
        for config in ranked[: max(1, len(ranked) // eta)]:
            assert by_id[config]["tasks_trained"] > rung or by_id[config]["status"] == "diverged"
    return events


def test_full_populations_tell_optuna_every_configuration_and_export_one_row_each(tmp_path, ray_cluster):
    import optuna

    from raycl.files import load_best_args

    space = space_file(tmp_path, "derpp", {"lr": {"choice": [1.0e30, 0.1, 0.03, 0.003]},
                                           "minibatch_size": {"choice": [10, 32]},
                                           "alpha": {"uniform": [0.1, 1.0]}, "beta": {"uniform": [0.1, 1.0]}})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # The first configuration asked diverges: it must fail alone, its job going on.
    report = search(tmp_path, samples=10, population=4, space_path=space, buffer_size=50, optuna_storage=storage,
                    name="full", grace_period=1, reduction_factor=2, start_points=[{"lr": 1.0e30}],
                    final_eval_seeds=2, audit_fraction=0.2)
    rows = pq.read_table(report.parquet_path).to_pylist()
    assert len(rows) == 10 and len({r["trial_id"] for r in rows}) == 10
    events = assert_promotion_decisions_hold(tmp_path / "exp" / "full", rows)
    jobs = [e for e in events if e["event"] == "job"]
    assert max(len(j["configs"]) for j in jobs) == 4 and any(j["start"] > 0 for j in jobs)
    promoted = [r for r in rows if len(r["jobs"]) > 1]
    assert promoted and all(len(r["trials"]) == len(r["jobs"]) for r in rows)
    # Member states are kept while a configuration waits and deleted once nothing reads them.
    assert not list((tmp_path / "exp" / "full" / "members").rglob("*.pt"))
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("completed", "pruned", "diverged")}
    assert sum(map(len, by_status.values())) == 10
    assert by_status["diverged"] and {r["config.lr"] for r in by_status["diverged"]} == {1.0e30}
    assert all(r["tasks_trained"] == 1 and "diverged" in r["error"] for r in by_status["diverged"])
    assert all(r["tasks_trained"] == 5 for r in by_status["completed"])
    assert by_status["pruned"] and all(r["tasks_trained"] in (1, 2, 4) for r in by_status["pruned"])
    assert [t.audit for t in report.trials] == [r["audit"] for r in rows] and any(r["audit"] for r in rows)
    assert all(len(r["objective_by_task"]) == r["tasks_trained"] for r in by_status["completed"] + by_status["pruned"])
    assert report.usage["slot_use"] is not None and 0 < report.usage["slot_use"] <= 1

    study = optuna.load_study(study_name="full", storage=storage)
    state = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
             "diverged": optuna.trial.TrialState.FAIL}
    assert len(study.trials) == 10
    for t in study.trials:
        row = next(r for r in rows if r["trial_id"] == t.user_attrs["raycl_config"])
        assert t.state == state[row["status"]] and t.params["lr"] == pytest.approx(row["config.lr"])
        if t.state != optuna.trial.TrialState.FAIL:
            assert [t.intermediate_values[k] for k in sorted(t.intermediate_values)] == \
                pytest.approx(row["objective_by_task"])
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert t.value == pytest.approx(row["objective"])

    # Test accuracy never reaches Tune's reports (what the searcher and callbacks see) or Optuna.
    for result in (tmp_path / "exp" / "full").glob("*/result.json"):
        for line in result.read_text().splitlines():
            assert not [key for key in flatten(json.loads(line)) if "test" in key.lower()], line[:500]
    for t in study.trials:
        assert not [k for k in {**t.user_attrs, **t.system_attrs} if "test" in k.lower()]

    # The report finds each configuration's matrices in its last job's file.
    from raycl.tune.report import load_experiment, trial_matrices, write_report

    experiment = load_experiment(tmp_path / "exp" / "full")
    assert len(experiment.trials) == 10
    matrices = trial_matrices(experiment, experiment.best)
    assert matrices["val"]["class_il"][-1].mean() == pytest.approx(report.best.objective)
    files = write_report(experiment.path, tmp_path / "report")
    assert {"asha.png", "matrices.png"} <= {f.name for f in files.figures}

    best = load_best_args(tmp_path / "best.yaml", "seq-digits", "derpp", 50)
    assert best["lr"] == report.best.config["lr"] and best["alpha"] == report.best.config["alpha"]
    assert report.best.objective == max(r["objective"] for r in by_status["completed"])
    assert report.final_eval["seeds"] == [0, 1]


def test_starved_configurations_are_never_promoted_past_good_ones(tmp_path, ray_cluster):
    lrs = (0.1, 0.05, 1e-6, 2e-6, 0.08, 3e-6, 0.07, 4e-6)
    space = space_file(tmp_path, "sgd", {"lr": {"choice": sorted(set(lrs))}})
    report = search(tmp_path, method="sgd", samples=8, population=2, space_path=space, max_concurrent=1,
                    name="starved", start_points=[{"lr": lr} for lr in lrs], reduction_factor=2)
    rows = pq.read_table(report.parquet_path).to_pylist()
    assert_promotion_decisions_hold(tmp_path / "exp" / "starved", rows)
    starved = [r for r in rows if r["config.lr"] < 1e-3]
    assert starved and all(r["status"] == "pruned" and r["tasks_trained"] == 1 for r in starved)
    assert any(r["status"] == "completed" for r in rows)


@pytest.mark.parametrize("table", [(), ("10", "20", "40")], ids=["one search", "a table of three sizes"])
def test_a_search_killed_hard_in_the_middle_of_a_promotion_resumes_keeping_every_decision(tmp_path, table):
    """kill -9 of the driver (and of its local Ray cluster) while a promoted job trains; --resume: every
    configuration once in the table, every decision recorded before the kill kept, none taken twice;
    for a table of buffer sizes, each size's rows too."""
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # its processes are found by this folder
    storage, samples = tmp_path / "exp", 12 if not table else 6
    method = ["--method", "sgd"] if not table else ["--method", "er", "--buffer-size", ",".join(table)]
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), *method, "--samples", str(samples),
           "--population", "2", "--max-concurrent", "1", "--grace-period", "1", "--reduction-factor", "2",
           "--storage-path", str(storage), "--name", "hard", "--best-args", str(tmp_path / "best.yaml"),
           "--n-epochs", "30", "--verbose", "0"]  # tasks of about a second: the kill lands inside one
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    path = storage / "hard" / "rungs.jsonl"

    def promotion_running():
        if not path.is_file():
            return None
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        finished = {e["job"] for e in lines if e["event"] == "result"}
        running = [e for e in lines if e["event"] == "job" and e["start"] > 0 and e["id"] not in finished]
        return lines if running else None

    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        deadline = time.time() + 240
        before = None
        while before is None and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            before = promotion_running()
        assert before is not None and proc.poll() is None, proc.poll() is None or proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        kill_processes_mentioning(ray_tmp)
        assert proc.returncode == -signal.SIGKILL and not (storage / "hard" / "trials.parquet").exists()
        killed = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]

        resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    rows = pq.read_table(storage / "hard" / "trials.parquet").to_pylist()
    total = samples * max(1, len(table))
    assert len(rows) == total and len({r["trial_id"] for r in rows}) == total
    for size in table:
        assert sum(r["buffer_size"] == int(size) and r["config.buffer_size"] == int(size) for r in rows) == samples
    events = assert_promotion_decisions_hold(storage / "hard", rows)
    assert events[:len(killed)] == killed  # what was decided before the kill stands, first
    jobs = [e for e in events if e["event"] == "job"]
    assert len({e["id"] for e in jobs}) == len(jobs)
    trained = [(c, e["start"]) for e in jobs for c in e["configs"]]
    assert len(trained) == len(set(trained))  # no configuration trained a segment twice
    results = [e["job"] for e in events if e["event"] == "result"]
    assert sorted(results) == sorted(e["id"] for e in jobs)


def test_a_table_of_buffer_sizes_is_searched_each_as_if_alone(tmp_path, ray_cluster):
    """--buffer-size 10,40: each size its own configurations, rung records and winner, a best-args and a
    mammoth entry per size, one table with the size in a column, the summary a row per size."""
    from raycl.files import load_best_args
    from raycl.tune.mammoth import read_model_config

    report = search(tmp_path, method="er", samples=4, population=2, buffer_size=[10, 40], fixed={"n_epochs": 1},
                    name="table", export_format="mammoth", optuna_storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    rows = pq.read_table(report.parquet_path).to_pylist()
    assert sorted(r["buffer_size"] for r in rows) == [10] * 4 + [40] * 4
    assert all(r["config.buffer_size"] == r["buffer_size"] for r in rows)
    assert_promotion_decisions_hold(tmp_path / "exp" / "table", rows)  # compared within their size only
    assert set(report.reports) == {10, 40}
    for size, alone in report.reports.items():
        assert alone.best is not None and alone.best.config["buffer_size"] == size
        assert load_best_args(tmp_path / "best.yaml", "seq-digits", "er", size)["lr"] == alone.best.config["lr"]
        assert read_model_config(tmp_path / "models" / "config" / "er.yaml", "seq-digits", "er", size)["lr"] == \
            alone.best.config["lr"]
        assert alone.best.objective == max(r["objective"] for r in rows if r["buffer_size"] == size
                                           and r["status"] == "completed")
    from raycl.tune.report import write_report

    page = write_report(tmp_path / "exp" / "table", tmp_path / "report").page.read_text()
    assert "<h2>Buffer sizes</h2>" in page and all(f"<td>{size}</td>" in page for size in (10, 40))
    import optuna

    for size in (10, 40):  # a study of its own per size
        study = optuna.load_study(study_name=f"table-{size}", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
        assert len(study.trials) == 4 and all(t.params.get("buffer_size", size) == size for t in study.trials)
