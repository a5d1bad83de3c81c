"""The search: spaces, an end-to-end search on seq-digits, ASHA, divergence, resume, export."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import kill_processes_mentioning, ray_address
from raycl.errors import RayclError
from raycl.tune.space import load_space, parse_space

REPO = Path(__file__).resolve().parents[1]


# ----- search spaces ---------------------------------------------------------------------------
def test_shipped_spaces_are_valid_for_every_dataset():
    from raycl.data import BENCHMARK_NAMES

    for path in sorted((REPO / "search_spaces").glob("*.yaml")):
        for dataset in BENCHMARK_NAMES:
            space = load_space(path.stem, dataset)
            assert space.searched, path


@pytest.mark.parametrize("doc, message", [
    ({"params": {"lrr": {"loguniform": [0.01, 0.1]}}}, "unknown hyperparameter for method 'derpp' 'lrr'.*allowed: alpha"),
    ({"params": {"lr": {"logunifrom": [0.01, 0.1]}}}, "unknown distribution 'logunifrom'; allowed: loguniform"),
    ({"params": {"lr": {"uniform": [0.1, 0.1]}}}, "empty range"),
    ({"params": {"lr": {"loguniform": [0.0, 0.1]}}}, "log scale needs low > 0"),
    ({"params": {"minibatch_size": {"choice": [10, "many"]}}}, "'minibatch_size'.*must be an int.*got 'many'"),
    ({"params": {"minibatch_size": {"uniform": [1, 10]}}}, "uniform needs a float hyperparameter"),
    ({"params": {"alpha": {"choice": []}}}, "choice needs a non-empty list"),
    ({"parms": {}}, "unknown key 'parms'.*allowed: datasets, method, params"),
    ({"params": {}, "datasets": {"seq-mnsit": {}}}, "unknown dataset 'seq-mnsit'"),
    ({"params": {}, "datasets": {"perm-mnist": {"betta": 1.0}}}, "'betta'.*datasets.perm-mnist"),
    ({"params": {"beta": {"uniform": [0, 1], "when": {"alpha": 1.0}}}}, "depends on 'alpha'"),
    ({"method": "er", "params": {}}, "search space for method 'er', not 'derpp'"),
])
def test_bad_spaces_give_one_clear_error(doc, message):
    with pytest.raises(RayclError, match=message):
        parse_space(doc, "derpp", "seq-mnist", "space.yaml")


def test_dataset_override_and_conditions():
    doc = {"params": {"lr": {"loguniform": [0.01, 0.3]}, "minibatch_size": {"choice": [10, 128]},
                      "alpha": {"uniform": [0.1, 1.0], "when": {"minibatch_size": 128}}},
           "datasets": {"perm-mnist": {"minibatch_size": 128}}}
    space = parse_space(doc, "derpp", "perm-mnist", "s.yaml")
    assert space.to_dict()["minibatch_size"] == 128
    import optuna

    from raycl.tune.space import DefineByRun

    seq = parse_space(doc, "derpp", "seq-mnist", "s.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        fixed = DefineByRun(seq)(trial)
        params = {**trial.params, **fixed}
        assert ("alpha" in params) == (params["minibatch_size"] == 128)
        seen.add(params["minibatch_size"])
        study.tell(trial, 1.0)
    assert seen == {10, 128}


def test_a_space_written_out_reads_back_the_same():
    doc = {"params": {"lr": {"loguniform": [0.01, 0.3]}, "minibatch_size": {"choice": [10, 128]},
                      "alpha": {"uniform": [0.1, 1.0], "when": {"minibatch_size": 128}}, "beta": 0.5}}
    space = parse_space(doc, "derpp", "seq-mnist", "s.yaml")
    again = parse_space({"method": "derpp", "params": space.to_dict()}, "derpp", "seq-mnist", "again.yaml")
    assert again.dimensions == space.dimensions


# ----- searches --------------------------------------------------------------------------------
def search(tmp_path, **kwargs):
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import run_search

    defaults = dict(method="derpp", dataset="seq-digits", samples=6, storage_path=str(tmp_path / "exp"),
                    best_args=str(tmp_path / "best.yaml"), verbose=0, fixed={"n_epochs": 2})
    defaults.update(kwargs)
    return run_search(SearchOptions(**defaults))


def assert_rung_decisions_hold(experiment_dir, rows):
    """The experiment's rungs.jsonl against its trials table: every configuration stopped at a rung was
    judged there and not kept, every completed one was kept at every rung it passed, none was judged
    twice at a rung, and judging the recorded scores again, cohort by cohort in the recorded order,
    gives the recorded decisions (so they followed ASHA's rule across the whole search)."""
    from raycl.tune.rungs import RungBoard, read_board

    board = read_board(str(Path(experiment_dir) / "rungs.jsonl"))
    events = {(e.rung, e.config): e for e in board.events}
    assert len(events) == len(board.events)
    for row in rows:
        judged = [e for (rung, config), e in events.items() if config == row["trial_id"]]
        passed = [r for r in board.rungs if r < row["tasks_trained"]]
        assert sorted(e.rung for e in judged if e.kept) == passed, row
        if row["status"] == "pruned":
            assert [e.rung for e in judged if not e.kept] == [row["tasks_trained"]], row
        else:
            assert all(e.kept for e in judged), row
        assert all(e.audit == bool(row["audit"]) for e in judged)
        # What the rung judged is the validation objective (tie-broken by at most 0.01 of val loss).
        assert all(0 <= row["objective_by_task"][e.rung - 1] - e.score <= 0.0101 for e in judged)
    again = RungBoard(board.rungs, board.reduction_factor, board.final_task)
    for call in sorted({e.call for e in board.events}):
        batch = [e for e in board.events if e.call == call]
        decided = again.judge(batch[0].rung, {e.config: e.score for e in batch}, [e.config for e in batch if e.audit])
        assert decided == {e.config: e.kept for e in batch}
    return board


def assert_short_trial_folders(experiment_dir, trials: int) -> list[str]:
    """Every trial folder Tune wrote in ``experiment_dir`` is named by its trial's id first, in at most
    60 characters; there are ``trials`` of them. Their names."""
    names = []
    for params in Path(experiment_dir).glob("*/params.json"):
        folder = params.parent
        trial_id = json.loads((folder / "result.json").read_text().splitlines()[0])["trial_id"]
        assert folder.name.startswith(f"{trial_id}_") and len(folder.name) <= 60, folder.name
        names.append(folder.name)
    assert len(names) == trials, names
    return sorted(names)


def flatten(doc, prefix=""):
    """Every key path of a nested mapping, 'a/b/c'."""
    out = []
    for key, value in doc.items():
        out.append(prefix + str(key))
        if isinstance(value, dict):
            out.extend(flatten(value, prefix + str(key) + "/"))
    return out


def space_file(tmp_path, method, params):
    path = tmp_path / f"{method}-space.yaml"
    path.write_text(yaml.safe_dump({"method": method, "params": params}))
    return str(path)


def test_search_exports_best_args_and_one_parquet_row_per_trial(tmp_path, ray_cluster):
    # tf32 trains as fp32 on CPUs: the numbers are fp32's, the provenance says what was asked for.
    report = search(tmp_path, buffer_size=100, final_eval_seeds=2, precision="tf32")
    table = pq.read_table(report.parquet_path).to_pylist()
    assert len(table) == 6 and len({r["trial_id"] for r in table}) == 6
    assert {r["status"] for r in table} <= {"completed", "pruned"}
    assert all(r["protocol"] == "seen-tasks" for r in table)
    best = max((r for r in table if r["status"] == "completed"), key=lambda r: r["objective"])
    assert best["trial_id"] == report.best.trial_id
    # Completed trials carry test accuracy (for the record), pruned ones do not.
    assert all((r["test_class_il"] is not None) == (r["status"] == "completed") for r in table)

    data = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())
    entry = data["seq-digits"]["derpp"][100]
    assert entry["config"]["buffer_size"] == 100 and entry["config"]["n_epochs"] == 2
    assert entry["provenance"]["protocol"] == "seen-tasks" and entry["provenance"]["samples"] == 6
    assert entry["provenance"]["objective"] == pytest.approx(report.best.objective, abs=1e-3)
    assert "lr" in entry["provenance"]["search_space"]["params"]
    assert entry["provenance"]["precision"] == "tf32"
    assert report.final_eval["seeds"] == [0, 1] and report.final_eval["precision"] == "tf32"
    assert 0 < report.final_eval["test"]["class_il"]["mean"] <= 100

    # A second search into the same file keeps the first entry.
    search(tmp_path, method="er", samples=2, buffer_size=100, name="second")
    data = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())
    assert set(data["seq-digits"]) == {"derpp", "er"} and data["seq-digits"]["er"][100]["provenance"]["precision"] == "fp32"
    assert data["seq-digits"]["derpp"][100] == entry

    # launch/train.py replays the exported configuration.
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), "--method", "derpp",
                           "--load-best-args", str(tmp_path / "best.yaml"), "--threads", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"lr={entry['config']['lr']}" in proc.stderr


def test_trial_seeds_train_every_configuration_on_several_seeds(tmp_path, ray_cluster):
    import math

    report = search(tmp_path, method="er", samples=3, buffer_size=50, trial_seeds=2, name="seeds",
                    protocol="end-of-training")
    rows = pq.read_table(report.parquet_path).to_pylist()
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows)
    for r in rows:
        per_seed = [r["objective_seed0"], r["objective_seed1"]]
        assert r["objective"] == pytest.approx(sum(per_seed) / 2)
        assert r["objective_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
        assert per_seed[0] != per_seed[1] and not math.isnan(r["objective_std"])
    data = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())
    provenance = data["seq-digits"]["er"][50]["provenance"]
    assert provenance["trial_seeds"] == 2 and provenance["trial_data_seeds"] == "vary"

    # A seed that diverges makes its configuration's trial diverged; the search goes on.
    space = space_file(tmp_path, "sgd", {"lr": {"choice": [0.1, 1.0e30]}})
    report = search(tmp_path, method="sgd", samples=4, space_path=space, trial_seeds=2, name="nan-seeds",
                    protocol="end-of-training")
    assert {t.config["lr"] for t in report.trials if t.status == "diverged"} == {1.0e30}
    assert report.best.config["lr"] == 0.1


def test_asha_stops_clear_losers_and_tells_optuna_pruned(tmp_path, ray_cluster):
    import optuna

    space = space_file(tmp_path, "sgd", {"lr": {"choice": [1e-6, 0.1]}})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    # One trial at a time, so every configuration reaches a rung after the ones before it.
    report = search(tmp_path, method="sgd", samples=10, space_path=space, reduction_factor=2, max_concurrent=1,
                    optuna_storage=storage, name="asha")
    rows = pq.read_table(report.parquet_path).to_pylist()
    board = assert_rung_decisions_hold(tmp_path / "exp" / "asha", rows)
    assert board.rungs == (1, 2, 4)  # --grace-period auto: SGD has no stability mechanism to wait for
    pruned = [t for t in report.trials if t.status == "pruned"]
    assert pruned and all(t.config["lr"] == 1e-6 for t in pruned)  # the stopped ones are the losers
    assert all(t.status == "completed" for t in report.trials if t.config["lr"] == 0.1)
    # A starved configuration goes on only where no good one was recorded at the rung before it.
    first_good = min((e.call for e in board.events if e.rung == 1 and e.score > 50), default=None)
    for trial in report.trials:
        if trial.config["lr"] == 1e-6:
            call = next(e.call for e in board.events if e.config == trial.trial_id and e.rung == 1)
            assert (trial.status == "pruned") == (first_good is not None and call > first_good)
    assert report.task_fraction < 1.0
    study = optuna.load_study(study_name="asha", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.PRUNED) == len(pruned)
    assert states.count(optuna.trial.TrialState.COMPLETE) == report.counts["completed"]


def test_a_search_starts_from_mammoth_s_arguments_and_hands_its_winner_back_in_mammoth_s_format(
        tmp_path, ray_cluster, caplog):
    import logging

    import optuna

    from raycl.tune.mammoth import read_model_config

    # mammoth's models/config/derpp.yaml format, with a section for raycl's seq-digits.
    start = tmp_path / "mammoth" / "models" / "config" / "derpp.yaml"
    start.parent.mkdir(parents=True)
    start.write_text("seq-cifar100:\n  dataset_config: xder\n  500:\n    alpha: 0.3\n    beta: 0.5\n    lr: 0.03\n"
                     "    model: derpp\nseq-digits:\n  batch_size: 32\n  200:\n    alpha: 0.2\n    beta: 1.0\n"
                     "    lr: 0.03\n    minibatch_size: 128\n    model: derpp\n    n_epochs: 1\n    optim_wd: 0.0005\n")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    with caplog.at_level(logging.WARNING, logger="raycl.tune.start_from"):
        report = search(tmp_path, samples=3, buffer_size=200, fixed={"n_epochs": 1}, protocol="end-of-training",
                        start_from=str(start), export_format="mammoth", optuna_storage=storage, name="from-mammoth")
    from_file = {"lr": 0.03, "minibatch_size": 128, "alpha": 0.2, "beta": 1.0}
    first = optuna.load_study(study_name="from-mammoth", storage=storage).trials[0]
    assert first.params == from_file
    assert {**from_file, "buffer_size": 200, "n_epochs": 1} in [t.config for t in report.trials]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "batch_size (32: not searched, the search trains with 10)" in warnings[0]
    assert "optim_wd (0.0005: no raycl hyperparameter of derpp)" in warnings[0]

    # The winner, every hyperparameter as it trained, beside the best-args file in mammoth's layout.
    assert report.mammoth_config_path == tmp_path / "models" / "config" / "derpp.yaml"
    exported = read_model_config(report.mammoth_config_path, "seq-digits", "derpp", 200)
    assert exported == {**report.best.config, "batch_size": 10, "optimizer": "sgd"}

    # A cohort starts from raycl's own best-args file: its first configuration is the winner's.
    storage = f"sqlite:///{tmp_path / 'cohort.db'}"
    cohort = search(tmp_path, samples=2, population=2, buffer_size=200, fixed={"n_epochs": 1},
                    protocol="end-of-training", start_from=str(tmp_path / "best.yaml"), optuna_storage=storage,
                    name="from-raycl", best_args=str(tmp_path / "cohort.yaml"))
    first = optuna.load_study(study_name="from-raycl", storage=storage).trials[0]
    assert first.params == {k: report.best.config[k] for k in from_file}
    assert cohort.trials[0].config == report.best.config and cohort.trials[0].cohort == cohort.trials[1].cohort


def test_diverging_trial_is_marked_and_the_search_goes_on(tmp_path, ray_cluster):
    space = space_file(tmp_path, "sgd", {"lr": {"choice": [0.1, 1.0e30]}})
    report = search(tmp_path, method="sgd", samples=6, space_path=space, name="nan", protocol="end-of-training")
    diverged = [t for t in report.trials if t.status == "diverged"]
    assert diverged and all(t.config["lr"] == 1.0e30 for t in diverged)
    assert report.counts["completed"] >= 1 and report.best.config["lr"] == 0.1
    assert report.counts["diverged"] == len(diverged)
    rows = pq.read_table(report.parquet_path).to_pylist()
    assert sum(r["status"] == "diverged" for r in rows) == len(diverged)


def test_existing_experiment_needs_resume_and_bad_options_are_clear(tmp_path, ray_cluster):
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import run_search

    with pytest.raises(RayclError, match="unknown protocol 'final'; allowed: chf, current-task, end-of-training, "
                                         "first-task, pbt, seen-tasks, seen-tasks-val"):
        run_search(SearchOptions(method="sgd", protocol="final"))
    with pytest.raises(RayclError, match="--buffer-size does not apply to method 'sgd'"):
        run_search(SearchOptions(method="sgd", buffer_size=10, storage_path=str(tmp_path)))
    with pytest.raises(RayclError, match="no experiment to resume"):
        run_search(SearchOptions(method="sgd", name="nothing", resume=True, storage_path=str(tmp_path)))
    with pytest.raises(RayclError, match="--resume needs --name"):
        run_search(SearchOptions(method="sgd", resume=True, storage_path=str(tmp_path)))
    with pytest.raises(RayclError, match="exceeds the 5 tasks"):
        run_search(SearchOptions(method="sgd", protocol="first-task", protocol_tasks=9, storage_path=str(tmp_path)))
    with pytest.raises(RayclError, match="--optuna-storage sqlite:////nonexistent/folder/o.db: cannot open"):
        run_search(SearchOptions(method="sgd", name="db", storage_path=str(tmp_path),
                                 optuna_storage="sqlite:////nonexistent/folder/o.db"))
    (tmp_path / "taken").mkdir()
    with pytest.raises(RayclError, match="exists already: pass --resume"):
        run_search(SearchOptions(method="sgd", name="taken", storage_path=str(tmp_path)))


def test_first_task_protocol_trains_only_k_tasks_and_the_final_evaluation_the_whole_stream(tmp_path, ray_cluster):
    table = tmp_path / "elsewhere" / "k2.parquet"
    report = search(tmp_path, method="sgd", samples=2, protocol="first-task", protocol_tasks=2, name="k2",
                    final_eval_seeds=1, parquet=str(table))
    assert all(t.tasks_trained <= 2 for t in report.trials) and report.best is not None
    data = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())
    assert data["seq-digits"]["sgd"][0]["provenance"]["protocol"] == "first-task"
    # Searched on two tasks, tested on all five.
    matrix = report.final_eval["test"]["class_il"]["matrix_mean"]
    assert len(matrix) == 5 and all(v is not None for v in matrix[-1])
    # --parquet puts the trials table where it says, and nowhere else.
    rows = pq.read_table(table).to_pylist()
    assert len(rows) == 2 and report.parquet_path == str(table)
    assert not (tmp_path / "exp" / "k2" / "trials.parquet").exists()


def test_a_trial_that_errors_is_recorded_as_errored_and_the_search_goes_on(tmp_path, ray_cluster):
    import optuna

    # A-GEM projects one flat SGD gradient: with Adam its trials raise when they start.
    space = space_file(tmp_path, "agem", {"optimizer": {"choice": ["sgd", "adam"]}, "lr": 0.05})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    report = search(tmp_path, method="agem", samples=4, space_path=space, name="errors", protocol="end-of-training",
                    optuna_storage=storage, max_concurrent=1, fixed={"n_epochs": 1},
                    start_points=[{"optimizer": o} for o in ("adam", "sgd", "adam", "sgd")])
    by_optimizer = {o: [t for t in report.trials if t.config["optimizer"] == o] for o in ("sgd", "adam")}
    assert len(by_optimizer["adam"]) == 2 and all(t.status == "errored" for t in by_optimizer["adam"])
    assert all("optimizer must be 'sgd'" in t.error for t in by_optimizer["adam"])
    assert all(t.status == "completed" for t in by_optimizer["sgd"]) and report.best.config["optimizer"] == "sgd"
    assert report.counts["errored"] == 2
    study = optuna.load_study(study_name="errors", storage=storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert all(t.params["optimizer"] == "adam" for t in study.trials if t.state.name == "FAIL")


def test_tune_cli_flags_are_checked():
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "launch" / "tune.py"), *args], capture_output=True,
                              text=True, timeout=120)

    proc = run("--method", "derpp", "--space", "/nonexistent.yaml")
    assert proc.returncode == 2 and "file not found: /nonexistent.yaml" in proc.stderr
    proc = run("--method", "er", "--beta", "0.5")
    assert proc.returncode == 2 and "--beta does not apply to method 'er'" in proc.stderr
    proc = run("--method", "vibb")
    assert proc.returncode == 2 and "unknown method 'vibb'" in proc.stderr
    assert "Traceback" not in proc.stderr
    help_text = run("--help-all").stdout
    for flag in ("--samples", "--protocol", "--grace-period", "--cpus-per-trial", "--gpus-per-trial", "--address",
                 "--storage-path", "--resume", "--dashboard", "--optuna-storage", "--final-eval-seeds",
                 "--wait-for-resources", "--precision"):
        assert flag in help_text


def test_interrupted_search_resumes_without_repeating_finished_trials(tmp_path, ray_cluster):
    # One configuration per trial; a cohort search interrupted and resumed is the rung-records test's.
    storage = tmp_path / "exp"
    population, samples = 1, 8
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--dataset", "seq-digits",
           "--samples", str(samples), "--population", str(population), "--max-concurrent", "1",
           "--address", ray_address(), "--storage-path", str(storage), "--name", "stop", "--best-args", str(tmp_path / "best.yaml"),
           "--protocol", "end-of-training", "--n-epochs", "3", "--verbose", "0"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)

    def finished_trials():
        done = {}
        for result in storage.glob("stop/*/result.json"):
            lines = result.read_text().splitlines()
            if lines and '"task": 5' in lines[-1]:
                done[result.parent.name] = len(lines)
        return done

    # Tune copies trial folders into the storage path while it runs, so a file read mid-copy can
    # look unfinished: the snapshot kept is the one that met the condition, never a second read.
    deadline = time.time() + 240
    before = finished_trials()
    while len(before) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        before = finished_trials()
    assert len(before) >= 2 and proc.poll() is None, proc.poll() is None or proc.stdout.read()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
    output = proc.communicate(timeout=120)[0]
    # It was still running: it says it was interrupted, and what it had not finished is still to do.
    assert proc.returncode == 130 and "interrupted" in output, output[-3000:]
    assert len(finished_trials()) < samples // population

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = pq.read_table(storage / "stop" / "trials.parquet").to_pylist()
    assert len(rows) == samples and all(r["status"] == "completed" for r in rows)
    assert len({r["cohort"] for r in rows}) == samples // population
    after = {}
    for result in storage.glob("stop/*/result.json"):
        after[result.parent.name] = len(result.read_text().splitlines())
    for name, lines in before.items():
        assert after[name] == lines  # a finished trial was not run again


def test_a_search_killed_hard_resumes_from_its_last_snapshot(tmp_path):
    """kill -9 of the driver (and of its local Ray cluster with it): no clean shutdown, no last
    snapshot; --resume continues from the last one Tune wrote, which may name a trial's previous
    checkpoint (the reason two are kept)."""
    import shutil
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # its processes are found by this folder
    storage, samples = tmp_path / "exp", 8
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--samples", str(samples),
           "--population", "1", "--max-concurrent", "1", "--storage-path", str(storage), "--name", "hard",
           "--best-args", str(tmp_path / "best.yaml"), "--protocol", "end-of-training", "--n-epochs", "3",
           "--verbose", "0"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmp}
    try:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        deadline = time.time() + 240
        before = {}
        while len(before) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
            before = {r.parent.name: len(r.read_text().splitlines()) for r in storage.glob("hard/*/result.json")
                      if '"task": 5' in (r.read_text().splitlines() or [""])[-1]}
        assert len(before) >= 2 and proc.poll() is None, proc.poll() is None or proc.stdout.read()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        kill_processes_mentioning(ray_tmp)  # Ray's processes in their own sessions, if any
        assert proc.returncode == -signal.SIGKILL and not (storage / "hard" / "trials.parquet").exists()

        resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        kill_processes_mentioning(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    rows = pq.read_table(storage / "hard" / "trials.parquet").to_pylist()
    assert len(rows) == samples and all(r["status"] == "completed" and r["tasks_trained"] == 5 for r in rows)
    for result in storage.glob("hard/*/result.json"):
        tasks = [json.loads(line)["task"] for line in result.read_text().splitlines()]
        assert sorted(set(tasks)) == [1, 2, 3, 4, 5] and tasks == sorted(tasks), (result.parent.name, tasks)
        if result.parent.name in before:
            assert len(tasks) == before[result.parent.name]  # a finished trial was not run again


def test_rung_records_survive_an_interrupted_search_and_its_resume(tmp_path, ray_cluster):
    from raycl.tune.rungs import read_board

    storage = tmp_path / "exp"
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--dataset", "seq-digits",
           "--samples", "12", "--population", "1", "--max-concurrent", "1", "--grace-period", "1",
           "--reduction-factor", "2", "--address", ray_address(), "--storage-path", str(storage), "--name", "rungs",
           "--best-args", str(tmp_path / "best.yaml"), "--n-epochs", "3", "--verbose", "0",
           "--optuna-storage", f"sqlite:///{tmp_path / 'optuna.db'}"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    rungs_file = storage / "rungs" / "rungs.jsonl"
    deadline = time.time() + 240
    before = None
    while time.time() < deadline and proc.poll() is None:
        board = read_board(str(rungs_file)) if rungs_file.is_file() else None
        if board is not None and len({e.call for e in board.events}) >= 3:
            before = board.events
            break
        time.sleep(0.2)
    assert before is not None and proc.poll() is None, proc.poll() is None or proc.stdout.read()
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    # Interrupted before it ended: it says so and exports nothing.
    assert proc.returncode == 130 and "interrupted" in output and "--resume" in output, output[-3000:]
    assert "--population 1 (the cohort size it ran with)" in output
    assert not (storage / "rungs" / "trials.parquet").exists() and not (tmp_path / "best.yaml").exists()

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    rows = pq.read_table(storage / "rungs" / "trials.parquet").to_pylist()
    assert len(rows) == 12
    board = assert_rung_decisions_hold(storage / "rungs", rows)
    # The resumed board started from the file: what was decided before the interruption stands, first.
    assert board.events[:len(before)] == before and len(board.events) > len(before)
    assert "early stopping: rungs after tasks 1, 2, 4" in resumed.stdout
    # The Optuna study in the database went on too: one trial per configuration, each told once.
    import optuna

    study = optuna.load_study(study_name="rungs", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 12
    state = {"completed": "COMPLETE", "pruned": "PRUNED"}
    by_lr = {round(t.params["lr"], 12): t.state.name for t in study.trials}
    assert by_lr == {round(r["config.lr"], 12): state[r["status"]] for r in rows}


def test_default_experiment_names_carry_the_buffer_size_only_where_there_is_a_buffer():
    from raycl.tune.options import SearchOptions

    assert SearchOptions(method="derpp").experiment_name == "derpp-seq-digits-b500"
    assert SearchOptions(method="er", dataset="rot-mnist", buffer_size=200).experiment_name == "er-rot-mnist-b200"
    assert SearchOptions(method="vib", dataset="seq-mnist").experiment_name == "vib-seq-mnist"
    assert SearchOptions(method="vib", name="mine").experiment_name == "mine"


def test_fixed_values_reach_the_space_as_their_declared_types():
    # Given as text (as a command line gives them), they must not reach trials or best-args as text.
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import prepare_space

    space = prepare_space(SearchOptions(method="derpp", buffer_size=200, fixed={"lr": "0.2", "minibatch_size": "32"}))
    fixed = {d.name: d.values[0] for d in space.dimensions if d.kind == "fixed"}
    assert fixed["lr"] == 0.2 and type(fixed["lr"]) is float
    assert fixed["minibatch_size"] == 32 and type(fixed["minibatch_size"]) is int
    assert fixed["buffer_size"] == 200
    with pytest.raises(RayclError, match="'lr' must be a float"):
        prepare_space(SearchOptions(method="derpp", fixed={"lr": "fast"}))


def test_progress_counts_configurations_and_reports_the_best_completed():
    import io

    from raycl.tune.progress import SearchProgress

    out = io.StringIO()
    progress = SearchProgress(samples=6, final_task=5, searched=["lr"], stream=out, interval=0, table_interval=0)

    class Trial:
        def __init__(self, trial_id, lrs):
            self.trial_id, self.config = trial_id, {"cohort": [{"lr": lr} for lr in lrs]}

    cohort, solo = Trial("aaaa", [0.1, 0.2, 0.3, 0.4]), Trial("bbbb", [0.5])
    for trial in (cohort, solo):
        progress.on_trial_start(0, [], trial)
    # Tune hands callbacks flattened results: configs/<index>/<key>.
    progress.on_trial_result(0, [], cohort, {"configs/0/status": "pruned", "configs/0/task": 1,
                                             "configs/1/status": "diverged", "configs/1/task": 1,
                                             "configs/2/status": "running", "configs/2/task": 1,
                                             "configs/2/objective": 80.0,
                                             "configs/3/status": "completed", "configs/3/task": 5,
                                             "configs/3/objective": 91.5})
    progress.on_trial_result(0, [], solo, {"configs/0/status": "running", "configs/0/task": 2,
                                           "configs/0/objective": 95.0})
    progress.show()
    line = out.getvalue().splitlines()[-1]
    assert "3/6 configurations finished (1 completed, 1 pruned, 1 diverged), 2 running" in line
    assert "best 91.50 (aaaa-3)" in line and "left" in line
    assert "aaaa-3" in out.getvalue().splitlines()[1] and "0.4" in out.getvalue()  # the top table
    progress.on_trial_complete(0, [], solo)  # ASHA stopped it after task 2
    progress.on_trial_complete(0, [], cohort)
    assert progress.counts() == {"completed": 1, "running": 0, "pruned": 3, "diverged": 1, "errored": 0}


def test_default_output_is_a_few_status_lines_and_the_summary(tmp_path, ray_cluster):
    def run(verbose):
        cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--samples", "4", "--population",
               "2", "--address", ray_address(), "--storage-path", str(tmp_path / f"v{verbose}"),
               "--best-args", str(tmp_path / "best.yaml"),
               "--n-epochs", "1", "--verbose", str(verbose)]
        proc = subprocess.run(cmd, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    for verbose in (0, 1):
        out = run(verbose)
        assert "search sgd-seq-digits: sgd on seq-digits" in out and "best args:" in out
        for tune_line in ("View detailed results", "Trial status", "started with configuration", "A new study"):
            assert tune_line not in out
        status = [line for line in out.splitlines() if "configurations finished" in line]
        if verbose == 0:
            assert not status
        else:
            assert status and status[-1].startswith("[") and "4/4 configurations finished" in status[-1]
            assert len(out.splitlines()) < 40


def test_rungs_start_where_the_method_s_stability_mechanism_acts():
    from raycl.tune.options import SearchOptions
    from raycl.tune.rungs import describe_rungs, search_rungs

    assert search_rungs(SearchOptions(method="derpp"), 5) == (2,)  # replay acts from task 2
    assert search_rungs(SearchOptions(method="derpp", dataset="rot-mnist"), 20) == (2, 8)
    assert search_rungs(SearchOptions(method="ewc"), 5) == (2,)
    assert search_rungs(SearchOptions(method="sgd"), 5) == (1, 4)  # nothing to wait for
    assert search_rungs(SearchOptions(method="derpp", grace_period=1), 5) == (1, 4)
    assert search_rungs(SearchOptions(method="derpp", grace_period=3, reduction_factor=2), 20) == (3, 6, 12)
    assert search_rungs(SearchOptions(method="derpp", protocol="end-of-training"), 5) == ()
    assert "rungs after task 2 (--grace-period auto: task 2 is the first" in describe_rungs(SearchOptions(method="der"), 5)


def test_population_auto_gives_every_trial_slot_two_cohorts_within_the_member_limit():
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import MEMBER_LIMIT, cohort_size

    assert cohort_size(SearchOptions(method="derpp", samples=32), slots=2)[0] == 8
    assert cohort_size(SearchOptions(method="derpp", samples=64), slots=2)[0] == 16
    size, why = cohort_size(SearchOptions(method="vib", samples=200), slots=2)
    assert size == MEMBER_LIMIT["cpu"] and "200 samples / (2 x 2 trial slots) = 50, capped" in why
    assert cohort_size(SearchOptions(method="vib", samples=200, trial_seeds=2), slots=2)[0] == MEMBER_LIMIT["cpu"] // 2
    assert cohort_size(SearchOptions(method="vib", samples=2000, gpus_per_trial=1), slots=4)[0] == 250
    assert cohort_size(SearchOptions(method="vib", samples=6), slots=8)[0] == 1
    size, why = cohort_size(SearchOptions(method="derpp", dataset="seq-cifar10", samples=200), 2, convolutional=True)
    assert size == 1 and "stacked convolutional network is no faster per member" in why
    assert cohort_size(SearchOptions(method="derpp", samples=200, gpus_per_trial=1), 2, convolutional=True)[0] == 16
    size, why = cohort_size(SearchOptions(method="gem", samples=200), slots=2)
    assert size == 1 and "gem has no vectorised form" in why
    SearchOptions(method="derpp", protocol="chf", population="auto").validate()  # auto is one path there


@pytest.mark.parametrize("options, message", [
    ({"samples": 0}, "--samples must be at least 1, got 0"),
    ({"reduction_factor": 1}, "--reduction-factor must be at least 2, got 1"),
    ({"protocol_tasks": 0}, "--protocol-tasks must be at least 1"),
    ({"final_eval_seeds": -1}, "--final-eval-seeds must be at least 0"),
    ({"trial_seeds": 0}, "--trial-seeds must be at least 1"),
    ({"population": 0}, "--population must be at least 1"),
    ({"cpus_per_trial": 0}, "--cpus-per-trial must be > 0"),
    ({"gpus_per_trial": -1}, "--gpus-per-trial must be >= 0"),
    ({"trial_data_seeds": "some"}, "unknown trial data seeds 'some'; allowed: same, vary"),
    ({"dataset": "seq-mnst"}, "unknown dataset 'seq-mnst'"),
    ({"method": "dre"}, "unknown method 'dre'"),
    ({"grace_period": "soon"}, "--grace-period must be a whole number or auto, got 'soon'"),
    ({"grace_period": 0}, "--grace-period must be at least 1"),
    ({"population": "many"}, "--population must be a whole number or auto"),
    ({"audit_fraction": 1.5}, "--audit-fraction must be between 0 and 1, got 1.5"),
    ({"buffer_size": [200, 200]}, "--buffer-size: a list of different sizes of at least 1, got 200,200"),
    ({"buffer_size": [200, 500], "protocol": "chf"}, "a list of sizes is searched by the stream protocols.*not by "
                                                       "--protocol chf"),
    ({"buffer_size": [200, 500], "protocol": "pbt"}, "not by --protocol pbt"),
    ({"buffer_size": [200, 500], "population": 1}, "a list of sizes is searched in full populations: --population "
                                                     "auto .* not 1"),
    ({"buffer_size": [200, 500], "population": "auto", "start_from": "best.yaml"}, "--start-from takes one buffer size"),
])
def test_bad_early_stopping_options_are_one_clear_error(options, message):
    from raycl.tune.options import SearchOptions

    with pytest.raises(RayclError, match=message):
        SearchOptions(**{"method": "derpp", **options}).validate()


def test_trial_data_seeds_vary_gives_every_seed_its_own_split_and_same_one_for_all():
    import numpy as np

    from raycl.tune.options import SearchOptions
    from raycl.tune.search import prepare_benchmarks

    from raycl.data import load_benchmark

    vary = prepare_benchmarks(SearchOptions(method="sgd", trial_seeds=3, data_seed=4))
    for offset, benchmark in enumerate(vary):  # seed i draws with data seed 4 + i
        assert np.array_equal(benchmark.tasks[0].val_x, load_benchmark("seq-digits", seed=4 + offset).tasks[0].val_x)
    assert not np.array_equal(vary[0].tasks[0].val_x, vary[1].tasks[0].val_x)
    same = prepare_benchmarks(SearchOptions(method="sgd", trial_seeds=3, data_seed=4, trial_data_seeds="same"))
    assert len(same) == 1 and np.array_equal(same[0].tasks[0].val_x, vary[0].tasks[0].val_x)
    # A cohort pairs seed i of every configuration with benchmark i, or all with the one.
    from raycl.cohort import Cohort

    cohort = Cohort([{"lr": 0.1, "n_epochs": 1}] * 2, vary, "sgd", [0, 1, 2])
    assert cohort.population.member_data == [0, 1, 2, 0, 1, 2]
    assert Cohort([{"lr": 0.1, "n_epochs": 1}] * 2, same, "sgd", [0, 1, 2]).population.member_data == [0] * 6
