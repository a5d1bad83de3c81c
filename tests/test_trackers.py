"""Experiment trackers: one run per configuration in MLflow (a real server), W&B (offline run files)
and TensorBoard; a tracker that is down, slow or refuses; a resumed search."""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from conftest import ray_address
from test_tune import assert_short_trial_folders

# The trackers' own tests need their packages, the extras raycl[mlflow] and raycl[wandb] (both in [dev]).
trackers_installed = pytest.mark.skipif(
    importlib.util.find_spec("mlflow") is None or importlib.util.find_spec("wandb") is None,
    reason="the mlflow and wandb extras (pip install -e '.[dev]')")

REPO = Path(__file__).resolve().parents[1]


# ----- an MLflow server, and a gate in front of it ------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def up(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def mlflow_server(folder: Path, port: int | None = None):
    """A real ``mlflow server`` on 127.0.0.1 (sqlite store in ``folder``), in its own process group;
    yields (its URI, a function that stops it)."""
    port = port or free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts")],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)

    try:
        deadline = time.time() + 180
        while not up(uri):
            assert proc.poll() is None and time.time() < deadline, "the MLflow server did not start"
            time.sleep(0.5)
        yield uri, stop
    finally:
        stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as (uri, _):
        yield uri


class Gate:
    """An HTTP forwarder in front of a tracker: ``mode`` "up" forwards every request, "refuse"
    answers 503, "hang" holds requests until released (a slow tracker)."""

    def __init__(self, target: str):
        self.mode = "up"
        self.held = threading.Event()  # a request is being held
        self.release = threading.Event()
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if gate.mode == "hang":
                    gate.held.set()
                    gate.release.wait(60)
                if gate.mode != "up":
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                request = urllib.request.Request(target + self.path, data=body or None, method=self.command,
                                                 headers={"Content-Type": self.headers.get("Content-Type", "")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        status, data, kind = answer.status, answer.read(), answer.headers.get("Content-Type")
                except urllib.error.HTTPError as error:
                    status, data, kind = error.code, error.read(), error.headers.get("Content-Type")
                self.send_response(status)
                self.send_header("Content-Type", kind or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ----- reading what the trackers wrote -------------------------------------------------------------
def mlflow_runs(uri: str, experiment: str) -> tuple[object, list, object]:
    """(the search's parent run, its configuration runs, the client)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("raycl.run") == "search"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return parents[0], children, client


def _records(path: Path):
    """The protobuf records of a W&B run file (LevelDB log blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, chunks = 7, []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or its last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def wandb_runs(folder: Path) -> dict[str, dict]:
    """Every offline run under ``folder`` (its segments merged by run id): name, group, job type,
    config, tags, history {step: metrics}, summary, exit code, and the number of segments."""
    runs: dict[str, dict] = {}

    def key(item):
        return item.key or "/".join(item.nested_key)

    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        run = None
        for record in _records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                if run is None:
                    run = runs.setdefault(record.run.run_id, {"history": {}, "summary": {}, "config": {}, "tags": [],
                                                              "exit": None, "segments": 0, "steps_logged": []})
                    run["segments"] += 1
                run.update(name=record.run.display_name or run.get("name"), group=record.run.run_group,
                           job_type=record.run.job_type or run.get("job_type"))
                run["tags"] = list(record.run.tags) or run["tags"]
                run["config"].update({key(i): json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "history":
                items = {key(i): json.loads(i.value_json) for i in record.history.item}
                step = items.pop("_step")
                run["steps_logged"].append(step)
                run["history"][step] = {k: v for k, v in items.items() if not k.startswith("_")}
            elif kind == "summary":
                run["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update
                                       if key(i) and not key(i).startswith("_")})
            elif kind == "config":
                run["config"].update({key(i): json.loads(i.value_json) for i in record.config.update})
            elif kind == "exit":
                run["exit"] = record.exit.exit_code
    return runs


def tensorboard_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of the TensorBoard event files in ``folder`` (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


# ----- the adapter ---------------------------------------------------------------------------------
def test_a_result_becomes_one_event_per_configuration_named_by_its_id():
    from raycl.tune.trackers import config_events
    from raycl.vocabulary import AUDIT, COHORT, ConfigRecord

    record = ConfigRecord(tasks=2, metrics={"objective": 80.0, "val_loss": 0.5, "val_class_il": 80.0,
                                            "val_class_il_task1": 90.0, "val_class_il_task2": 70.0,
                                            "val_task_il_task1": 99.0, "val_task_il_task2": 97.0, "rung_score": 79.9})
    pruned = ConfigRecord(status="pruned", tasks=1, metrics={"objective": 50.0, "val_class_il_task1": 50.0})
    trial_config = {COHORT: [{"lr": 0.1}, {"lr": 0.2}], AUDIT: [False, True]}
    result = {"task": 2, "configs": {"0": record.summary(), "1": pruned.summary()}}
    first, second = config_events("abc", trial_config, result)
    assert (first.config, first.trial, first.task, first.status, first.params) == ("abc-0", "abc", 2, "running",
                                                                                   {"lr": 0.1})
    assert first.metrics == {"objective": 80.0, "val_loss": 0.5, "val_class_il": 80.0, "val_class_il_task1": 90.0,
                             "val_class_il_task2": 70.0, "val_task_il": 98.0, "val_task_il_task1": 99.0,
                             "val_task_il_task2": 97.0}
    assert (second.config, second.status, second.audit, second.ended) == ("abc-1", "pruned", True, True)
    # A configuration alone in its trial is named by the trial; a summary naming its configuration wins
    # (one that trains in several trials keeps its id).
    assert config_events("abc", {COHORT: [{"lr": 0.1}]}, {"configs": {"0": record.summary()}})[0].config == "abc"
    named = {**record.summary(), "id": "cfg-7", "config": {"lr": 0.3}}
    event = config_events("def", trial_config, {"configs": {"1": named}})[0]
    assert (event.config, event.trial, event.params) == ("cfg-7", "def", {"lr": 0.3})
    # A trial whose configurations are listed by id (each with its values and audit mark), its result's
    # summaries keyed by those ids, nested or as Tune flattens them.
    job = {"job": {"configs": [{"id": "c3", "params": {"lr": 0.4}, "audit": True}, {"id": "c9", "params": {}}]}}
    flat = {"task": 2, "configs/c3/status": "running", "configs/c3/task": 2, "configs/c3/objective": 70.0}
    event, = config_events("ghi", job, flat)
    assert (event.config, event.trial, event.params, event.audit, event.metrics) == ("c3", "ghi", {"lr": 0.4}, True,
                                                                                  {"objective": 70.0})


@trackers_installed
def test_tracker_flags_are_checked():
    from raycl.errors import RayclError
    from raycl.tune.trackers import TrackerSpec, check_trackers, parse_tracker

    assert parse_tracker("mlflow:http://127.0.0.1:5000") == TrackerSpec("mlflow", "http://127.0.0.1:5000")
    assert parse_tracker("wandb") == TrackerSpec("wandb")
    for bad, message in (("comet", "unknown tracker 'comet'"), ("mlflow:", "nothing after the colon"),
                         ("wandb", "given twice")):
        with pytest.raises(RayclError, match=message):
            check_trackers([bad, bad] if message == "given twice" else [bad])
    from raycl.tune.options import SearchOptions

    with pytest.raises(RayclError, match="--tracker applies to the stream protocols .*, not to --protocol chf"):
        SearchOptions(method="der", protocol="chf", trackers=("wandb",)).validate()


# ----- a search ------------------------------------------------------------------------------------
def search(tmp_path, **kwargs):
    from raycl.tune.options import SearchOptions
    from raycl.tune.search import run_search

    options = dict(method="er", dataset="seq-digits", samples=16, population=8, buffer_size=50,
                   storage_path=str(tmp_path / "exp"), best_args=str(tmp_path / "best.yaml"), verbose=0,
                   fixed={"n_epochs": 1})
    options.update(kwargs)
    return run_search(SearchOptions(**options))


@trackers_installed
def test_a_population_search_has_one_run_per_configuration_in_mlflow_wandb_and_tensorboard(
        tmp_path, ray_cluster, server, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"method": "er", "params": {"lr": {"choice": [1.0e30, 0.1, 0.03, 0.003]},
                                                                "minibatch_size": 10}}))
    # The first configuration diverges, so every status is there: diverged, pruned, completed.
    report = search(tmp_path, name="tracked", space_path=str(space), start_points=[{"lr": 1.0e30}],
                    grace_period=1, reduction_factor=2, audit_fraction=0.2,
                    trackers=(f"mlflow:{server}", "wandb:raycl-test"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "tracker" in r.getMessage()]
    rows = {r["trial_id"]: r for r in pq.read_table(report.parquet_path).to_pylist()}
    assert len(rows) == 16 and {r["status"] for r in rows.values()} == {"completed", "pruned", "diverged"}
    # The table has masked Class-IL beside Class-IL and Task-IL (seq-digits is class-incremental).
    for row in rows.values():
        if row["status"] == "completed":
            assert row["test_class_il"] <= row["test_masked_class_il"] <= row["test_task_il"]
        if row["status"] != "diverged":
            assert row["val_class_il"] <= row["val_masked_class_il"] <= row["val_task_il"]
            assert row["val_masked_class_il_task1"] == row["val_task_il_task1"]

    parent, children, client = mlflow_runs(server, "tracked")
    assert parent.info.status == "FINISHED" and parent.data.tags["raycl.method"] == "er"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"trials.parquet", "best.yaml"}
    assert parent.data.metrics["best_objective"] == pytest.approx(report.best.objective)
    assert sorted(r.info.run_name for r in children) == sorted(rows)
    mlflow_status = {"completed": "FINISHED", "pruned": "KILLED", "diverged": "FAILED"}
    for run in children:
        row, tags = rows[run.info.run_name], run.data.tags
        assert tags["raycl.status"] == row["status"] and run.info.status == mlflow_status[row["status"]]
        assert (tags["raycl.dataset"], tags["raycl.buffer_size"], tags["raycl.protocol"]) == ("seq-digits", "50",
                                                                                             "seen-tasks")
        # A configuration trains in a job per segment (the Tune trials that list it), the first its cohort.
        assert tags["raycl.trials"].split(",") == list(row["trials"]) and tags["raycl.cohort"] == row["cohort"]
        assert tags["raycl.audit"] == str(row["audit"]).lower()
        assert float(run.data.params["lr"]) == pytest.approx(row["config.lr"])
        history = client.get_metric_history(run.info.run_id, "objective")
        if row["status"] == "diverged":  # it diverged during its first task: no metrics
            assert history == []
            continue
        # One step per task trained, each the objective the trials table has for it.
        assert [m.step for m in history] == list(range(1, row["tasks_trained"] + 1))
        assert [m.value for m in history] == pytest.approx(row["objective_by_task"])
        assert len(client.get_metric_history(run.info.run_id, "val_class_il_task1")) == row["tasks_trained"]
        # Test accuracy for the completed ones only, logged after the search.
        test = run.data.metrics.get("test_class_il")
        assert (test is not None) == (row["status"] == "completed")
        if test is not None:
            assert test == pytest.approx(row["test_class_il"])

    runs = wandb_runs(tmp_path)
    searches = [r for r in runs.values() if r["job_type"] == "search"]
    configurations = {r["name"]: r for r in runs.values() if r["job_type"] == "configuration"}
    assert len(searches) == 1 and sorted(configurations) == sorted(rows)
    assert {r["group"] for r in runs.values()} == {searches[0]["group"]}
    assert searches[0]["summary"]["best_objective"] == pytest.approx(report.best.objective)
    for name, run in configurations.items():
        row = rows[name]
        assert run["summary"]["status"] == row["status"] and row["status"] in run["tags"]
        assert run["exit"] == (1 if row["status"] == "diverged" else 0)
        assert run["config"]["lr"] == pytest.approx(row["config.lr"])
        assert run["config"]["raycl"]["trials"] == list(row["trials"]) and run["config"]["raycl"]["method"] == "er"
        assert run["config"]["raycl"]["cohort"] == row["cohort"]
        steps = [] if row["status"] == "diverged" else list(range(1, row["tasks_trained"] + 1))
        assert run["steps_logged"] == steps
        assert [run["history"][s]["objective"] for s in steps] == pytest.approx(row["objective_by_task"])
        assert ("test_class_il" in run["summary"]) == (row["status"] == "completed")

    # Tune's trial folders, one per job: <trial id>_<number>_<n>configs.
    jobs = {trial for row in rows.values() for trial in row["trials"]}
    for name in assert_short_trial_folders(tmp_path / "exp" / "tracked", len(jobs)):
        assert re.fullmatch(r"([0-9a-f]{8})_\d+_(\d+)configs?", name) and name[:8] in jobs, name
    folders = {p.name: p for p in (tmp_path / "exp" / "tracked" / "tensorboard").iterdir()}
    assert sorted(folders) == sorted(rows)
    for name, folder in folders.items():
        scalars = tensorboard_scalars(folder)
        row = rows[name]
        steps = [] if row["status"] == "diverged" else list(range(1, row["tasks_trained"] + 1))
        assert sorted(scalars.get("objective", {})) == steps
        assert ("test_class_il" in scalars) == (row["status"] == "completed")


@trackers_installed
def test_a_tracker_stopped_mid_search_costs_one_warning_and_the_search_finishes(tmp_path, ray_cluster):
    from mlflow.tracking import MlflowClient

    with mlflow_server(tmp_path / "mlflow") as (uri, stop):
        cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "er", "--samples", "16", "--population",
               "8", "--max-concurrent", "1", "--buffer-size", "50", "--n-epochs", "2", "--address", ray_address(),
               "--storage-path", str(tmp_path / "exp"), "--name", "stopped", "--best-args", str(tmp_path / "best.yaml"),
               "--tracker", f"mlflow:{uri}", "--verbose", "0"]
        proc = subprocess.Popen(cmd, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        client, deadline = MlflowClient(uri), time.time() + 240
        # Stop the server once it holds the first cohort's first task.
        while proc.poll() is None and time.time() < deadline:
            experiment = client.get_experiment_by_name("stopped")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if any(r.data.metrics.get("objective") is not None for r in runs):
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the search ended before the server was stopped"
        stop()
        out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    warnings = [line for line in (out + err).splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "tracker mlflow" in warnings[0], warnings
    rows = pq.read_table(tmp_path / "exp" / "stopped" / "trials.parquet").to_pylist()
    assert len(rows) == 16 and "best args:" in out


# ----- down, slow, refusing; back again; a resumed search -----------------------------------------
def _report(tmp_path, configs: dict[str, tuple[str, list[float]]]):
    """A finished search's report of ``configs`` (id -> status, objective by task), with its files."""
    from raycl.tune.export import SearchReport, TrialRecord

    records = [TrialRecord(trial_id=name, status=status, config={"lr": 0.1}, objective=by_task[-1],
                           tasks_trained=len(by_task), objective_by_task=by_task,
                           last_metrics={"objective": by_task[-1], "val_loss": 0.3}, error=None,
                           test={"class_il": [80.0, 70.0]} if status == "completed" else None,
                           cohort=name.split("-")[0], cohort_member=int(name.split("-")[1]))
               for name, (status, by_task) in configs.items()]
    (tmp_path / "trials.parquet").write_bytes(b"table")
    (tmp_path / "best.yaml").write_text("{}\n")
    return SearchReport(trials=records, best=records[0], counts={"completed": 1, "pruned": 1},
                        task_fraction=0.8, best_args_path=tmp_path / "best.yaml",
                        parquet_path=str(tmp_path / "trials.parquet"))


def _events(trial: str, tasks: range, statuses=("running", "running")):
    """The configuration events of trial ``trial``'s results after each of ``tasks``."""
    from raycl.tune.trackers import config_events
    from raycl.vocabulary import COHORT, ConfigRecord

    events = []
    for task in tasks:
        summaries = {str(i): ConfigRecord(status=statuses[i] if task == tasks[-1] else "running", tasks=task,
                                          metrics={"objective": 90.0 - task, "val_loss": 0.1 * task,
                                                   **{f"val_class_il_task{j}": 90.0 for j in range(1, task + 1)}}
                                          ).summary() for i in range(2)}
        events += config_events(trial, {COHORT: [{"lr": 0.1}, {"lr": 0.2}]}, {"task": task, "configs": summaries})
    return events


def _trackers(tmp_path, uri, stalled_after: float = 30.0):
    from raycl.tune.trackers import SearchInfo, SearchTrackers, TrackerSpec

    info = SearchInfo(experiment="gated", experiment_dir=str(tmp_path / "exp"), method="er", dataset="seq-digits",
                      buffer_size=50, protocol="seen-tasks", samples=2, population=2, final_task=5)
    specs = (TrackerSpec("mlflow", uri), TrackerSpec("wandb", "raycl-test"),
             TrackerSpec("tensorboard", str(tmp_path / "exp" / "tensorboard")))
    return SearchTrackers(specs, info, stalled_after=stalled_after)


def _wait_for(condition, seconds: float = 60.0) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline
        time.sleep(0.1)


@trackers_installed
def test_a_tracker_down_then_back_completes_its_runs_and_a_resumed_search_logs_no_task_twice(
        tmp_path, server, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    gate = Gate(server)
    try:
        # The search runs two tasks while MLflow refuses, then is interrupted.
        gate.mode = "refuse"
        trackers = _trackers(tmp_path, gate.uri)
        trackers.submit(_events("c1", range(1, 3)))
        mlflow_worker = trackers.workers[0]
        _wait_for(lambda: mlflow_worker.warned)
        trackers.close()
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "tracker mlflow" in warnings[0] and "503" in warnings[0], warnings
        saved = json.loads((tmp_path / "exp" / "trackers.json").read_text())["trackers"]
        assert not saved[f"mlflow:{gate.uri}"]["runs"] and saved["wandb:raycl-test"]["runs"]["c1-0"]["steps"] == [1, 2]

        # Resumed, MLflow back: its trials report task 2 again (their checkpoint), then 3 and 4; one
        # configuration is pruned at 4, the other completes after the search has ended it at 5.
        gate.mode = "up"
        caplog.clear()
        trackers = _trackers(tmp_path, gate.uri)
        trackers.submit(_events("c1", range(2, 5), statuses=("running", "pruned")))
        trackers.finish(_report(tmp_path, {"c1-0": ("completed", [89.0, 88.0, 87.0, 86.0, 85.0]),
                                           "c1-1": ("pruned", [89.0, 88.0, 87.0, 86.0])}))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        gate.close()
    parent, children, client = mlflow_runs(server, "gated")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "objective")]
        tasks = 5 if run.info.run_name == "c1-0" else 4
        assert sorted(steps) == list(range(1, tasks + 1))  # every task once: task 1 caught up at the end
        assert run.data.tags["raycl.status"] == ("completed" if tasks == 5 else "pruned")
    runs = {r["name"]: r for r in wandb_runs(tmp_path).values() if r["job_type"] == "configuration"}
    assert sorted(runs) == ["c1-0", "c1-1"]
    for name, run in runs.items():
        assert run["segments"] == 2  # the same run, resumed by the resumed search
        assert run["steps_logged"] == list(range(1, 6 if name == "c1-0" else 5))
        # Task 3 and 4 came live (every metric), task 5 from the finished search (its objective and last metrics).
        assert "val_class_il_task3" in run["history"][3]
    search_runs = [r for r in wandb_runs(tmp_path).values() if r["job_type"] == "search"]
    assert len(search_runs) == 1 and search_runs[0]["segments"] == 2
    assert sorted(tensorboard_scalars(tmp_path / "exp" / "tensorboard" / "c1-0")["objective"]) == [1, 2, 3, 4, 5]


@trackers_installed
def test_a_slow_tracker_never_holds_the_search_and_is_given_up_at_the_end(tmp_path, server, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "300")  # the gate, not the client, decides how long
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    gate = Gate(server)
    gate.mode = "hang"
    try:
        trackers = _trackers(tmp_path, gate.uri, stalled_after=2.0)
        trackers.submit(_events("s1", range(1, 3)))  # returns at once: the worker holds the call
        assert gate.held.wait(60)
        trackers.submit(_events("s1", range(3, 4)))
        trackers.close()  # gives up on the tracker that does nothing, not on the others
        assert not trackers.workers[0].finished.is_set() and trackers.workers[1].finished.is_set()
    finally:
        gate.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "tracker mlflow" in warnings[0] and "did nothing" in warnings[0], warnings
    assert sorted(tensorboard_scalars(tmp_path / "exp" / "tensorboard" / "s1-0")["objective"]) == [1, 2, 3]


@trackers_installed
def test_a_resumed_search_continues_its_configurations_runs(tmp_path, ray_cluster):
    # Six jobs of four one after the other, interrupted in the second: the rest train after the resume.
    storage, samples = tmp_path / "exp", 24
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "er", "--samples", str(samples),
           "--population", "4", "--max-concurrent", "1", "--buffer-size", "50", "--n-epochs", "15",
           "--protocol", "end-of-training", "--address", ray_address(), "--storage-path", str(storage),
           "--name", "resumed", "--best-args", str(tmp_path / "best.yaml"), "--tracker", "wandb:raycl-test",
           "--verbose", "0"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    record = storage / "resumed" / "trackers.json"

    def steps_logged() -> list[int]:
        """The last task each configuration's W&B run has logged, as the search records it."""
        try:
            runs = json.loads(record.read_text())["trackers"]["wandb:raycl-test"]["runs"]
        except (OSError, ValueError, KeyError):
            return []
        return [max(entry["steps"], default=0) for entry in runs.values()]

    try:
        # Interrupt once the first job has trained every task and the second has begun.
        deadline = time.time() + 240
        while not (steps_logged().count(5) >= 4 and len(steps_logged()) > 4) and time.time() < deadline \
                and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None and steps_logged().count(5) >= 4, proc.poll() is None or proc.stdout.read()
        os.killpg(proc.pid, signal.SIGINT)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output[-3000:]

    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not [line for line in (resumed.stdout + resumed.stderr).splitlines() if "warning: tracker" in line]
    rows = {r["trial_id"]: r for r in pq.read_table(storage / "resumed" / "trials.parquet").to_pylist()}
    runs = {r["name"]: r for r in wandb_runs(tmp_path).values() if r["job_type"] == "configuration"}
    assert sorted(runs) == sorted(rows) and len(rows) == samples
    for name, run in runs.items():
        # One run per configuration, every task logged once, live (every metric at every task).
        assert run["steps_logged"] == list(range(1, 6)), (name, run["steps_logged"])
        assert all("val_loss" in run["history"][step] for step in range(1, 6))
        assert run["summary"]["status"] == rows[name]["status"] == "completed"
    assert any(run["segments"] > 1 for run in runs.values())  # the second job's, resumed


def test_trial_names_are_short_and_led_by_the_trial_s_id():
    from types import SimpleNamespace

    from raycl.tune.trial_names import trial_name

    cohort = SimpleNamespace(trial_id="0d82b94e", experiment_tag="2_audit=False_False,cohort=lr_0.1" + "x" * 200,
                             config={"cohort": [{"lr": 0.1}] * 8, "audit": [False] * 8})
    assert trial_name(cohort) == "0d82b94e_2_8configs"
    job = SimpleNamespace(trial_id="a1b2c3d4", experiment_tag="11_job=...", config={"job": {"configs": [{"id": "c1"}]}})
    assert trial_name(job) == "a1b2c3d4_11_1config"
    selection = SimpleNamespace(trial_id="ab12c_00003", experiment_tag="3_lr=0.1", config={"lr": 0.1})
    assert trial_name(selection) == "ab12c_00003_3"
    assert len(trial_name(SimpleNamespace(trial_id="f" * 100, experiment_tag="", config={}))) == 60


def test_tensorboard_holds_no_file_open_and_appends_each_configurations_steps_to_one_event_file(tmp_path):
    """Thousands of configurations wait at rungs in a large search: TensorBoard keeps no file open
    between writes, and every task of a configuration, written one configuration after another,
    lands in that configuration's one event file; after a crash cut a record in half, a resumed
    search's backend cuts the torn record and goes on in the same file."""
    pytest.importorskip("tensorboardX")
    import os

    from raycl.tune.trackers.events import SearchInfo
    from raycl.tune.trackers.queue import ConfigUpdate, Runs
    from raycl.tune.trackers.tensorboard import TensorboardBackend
    from raycl.vocabulary import Status

    def backend_for(runs):
        backend = TensorboardBackend(str(tmp_path / "tb"))
        backend.open(SearchInfo("s", str(tmp_path), "er", "seq-digits", 50, "seen-tasks", 6, 2, 3), runs)
        return backend

    def write(backend, runs, config, task):
        status = Status.COMPLETED if task == 3 else Status.RUNNING
        backend.write([ConfigUpdate(config, ["t0"], {"lr": 0.1}, "t0", False, status,
                                    {task: {"objective": 10.0 * task}})], runs)

    runs = Runs({}, threading.Lock())
    backend = backend_for(runs)
    configs = [f"c{i}" for i in range(6)]
    for task in (1, 2):  # every configuration's task, one after another
        for config in configs:
            write(backend, runs, config, task)
            assert not [p for p in Path(f"/proc/{os.getpid()}/fd").iterdir()
                        if str(tmp_path / "tb") in os.path.realpath(p)]
    torn = next((tmp_path / "tb" / "c0").glob("events.out.tfevents.*"))
    torn.write_bytes(torn.read_bytes() + torn.read_bytes()[-30:][:17])  # a crash in the middle of a record
    backend = backend_for(runs)  # the search resumed
    for config in configs:
        write(backend, runs, config, 3)
    backend.close(runs)
    for config in configs:
        assert tensorboard_scalars(tmp_path / "tb" / config)["objective"] == {1: 10.0, 2: 20.0, 3: 30.0}
        assert len(list((tmp_path / "tb" / config).glob("events.out.tfevents.*"))) == 1
