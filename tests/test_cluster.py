"""A search on a real Ray cluster of two nodes on this machine: trials spread over both, and a node
killed mid-search whose trials resume on the survivor from their last task checkpoint; clusters
with token authentication."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import kill_processes_mentioning, processes_mentioning

REPO = Path(__file__).resolve().parents[1]

# How often the head checks its nodes and how many missed checks mark one dead. Ray's defaults (3000
# ms, 5 misses, 10000 ms timeout) marked a killed raylet's node dead after 15.0 s here; these after 1.0 s.
HEALTH_CHECKS = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                 "health_check_timeout_ms": 1000, "health_check_failure_threshold": 3}


@pytest.fixture
def cluster():
    """A head and one worker node of one CPU each, stopped by the processes this test started."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "_system_config": HEALTH_CHECKS})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    cluster.shutdown()


def tune_cmd(cluster, tmp_path, *args):
    return [sys.executable, str(REPO / "launch" / "tune.py"), "--address", cluster.address,
            "--storage-path", str(tmp_path / "exp"), "--name", "spread", "--best-args", str(tmp_path / "best.yaml"),
            "--verbose", "0", *args]


def node_ids(cluster):
    (worker,) = cluster.worker_nodes
    return cluster.head_node.node_id, worker.node_id


def results(folder: Path) -> dict[str, list[dict]]:
    """Every trial's reported results so far, by trial folder name (lines still being written skipped)."""
    out = {}
    for path in folder.glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
        out[path.parent.name] = rows
    return out


def test_trials_spread_over_two_nodes_and_the_report_is_written(cluster, tmp_path):
    # Two jobs needing one CPU each: both are placed when the search starts, and each node has one CPU,
    # so they land one on each node. Actors are reused from job to job, so each job trains for seconds,
    # long enough for the second node's actor to start before the first job ends.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(tune_cmd(cluster, tmp_path, "--method", "sgd", "--samples", "4", "--population", "2",
                                   "--n-epochs", "150", "--protocol", "end-of-training"),
                          env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pq.read_table(tmp_path / "exp" / "spread" / "trials.parquet").to_pylist()
    assert len(rows) == 4 and len({r["cohort"] for r in rows}) == 2
    assert {r["node_id"] for r in rows} == set(node_ids(cluster))
    assert all(r["node_ip"] for r in rows)
    assert "on 2 nodes" in proc.stdout
    assert (tmp_path / "best.yaml").is_file()
    report = subprocess.run([sys.executable, str(REPO / "launch" / "report.py"), str(tmp_path / "exp" / "spread")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (tmp_path / "exp" / "spread" / "report" / "index.html").is_file()


def test_a_lost_node_s_trials_resume_on_the_survivor_from_their_last_task(cluster, tmp_path):
    head, worker = node_ids(cluster)
    samples = 6
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(tune_cmd(cluster, tmp_path, "--method", "sgd", "--samples", str(samples),
                                     "--population", "1", "--n-epochs", "200", "--protocol", "end-of-training"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "exp" / "spread"
    deadline = time.time() + 300
    victim = None
    while victim is None and time.time() < deadline and proc.poll() is None:
        snapshot = results(folder)
        finished = [name for name, rows in snapshot.items() if rows and rows[-1]["task"] == 5]
        for name, rows in snapshot.items():
            # A victim with two tasks or more to go (seconds of training each, so it is still running
            # when it is killed a moment later), once some other trial has finished.
            if finished and rows and rows[-1]["node_id"] == worker and 1 <= rows[-1]["task"] <= 3:
                victim, before = name, snapshot
        time.sleep(0.2)
    assert victim, proc.poll() is None or proc.stdout.read()
    # The node dies as a machine would: its raylet and the trial's worker process at once (a worker
    # can outlive its raylet for a while and go on training).
    (worker_node,) = cluster.worker_nodes
    os.kill(worker_node.all_processes["raylet"][0].process.pid, signal.SIGKILL)
    os.kill(before[victim][-1]["pid"], signal.SIGKILL)
    killed_at = time.time()

    noticed = resumed_at = None
    while proc.poll() is None and time.time() < killed_at + 400:
        now = time.time()
        if noticed is None and any((folder / victim).glob("error*")):
            noticed = now - killed_at  # Tune has recorded the trial's failure
        if resumed_at is None and any(r["node_id"] == head for r in results(folder).get(victim, [])):
            resumed_at = now - killed_at
        time.sleep(0.1)
    out, _ = proc.communicate(timeout=60)
    elapsed = time.time() - killed_at
    assert proc.returncode == 0, out[-3000:]
    after = results(folder)
    # Every report carries a checkpoint, so the trial went on from the task after its last report on
    # the lost node (it may have reported once more between the snapshot and the kill), on the survivor.
    nodes = [r["node_id"] for r in after[victim]]
    moved = nodes.index(head)
    assert nodes[:moved] == [worker] * moved and nodes[moved:] == [head] * (len(nodes) - moved)
    assert [r["task"] for r in after[victim]] == list(range(1, 6))
    finished = [name for name, rows in before.items() if name != victim and rows and rows[-1]["task"] == 5]
    assert finished
    for name in finished:
        assert after[name] == before[name]  # a finished trial was not run again
    table = pq.read_table(folder / "trials.parquet").to_pylist()
    assert len(table) == samples and all(r["status"] == "completed" for r in table)
    assert (tmp_path / "best.yaml").is_file()
    print(f"node killed with trial {victim} at task {after[victim][moved - 1]['task']}: failure recorded after "
          f"{noticed} s, first task on the survivor reported after {resumed_at} s, search ended after {elapsed:.1f} s")


# ----- token authentication ----------------------------------------------------------------------

TOKEN = "raycltesttoken0123456789abcdef01"


def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def token_cluster(tmp_path):
    """A one-node cluster started by ``ray start`` with token authentication, its processes stopped
    by id (``ray stop`` would stop every Ray cluster on the host)."""
    # Unix socket paths are short: the session folder lives directly under /tmp.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "HOME": str(tmp_path)}
    # `ray start` needs a port number; another process may take a free one before Ray binds it, so a
    # start that fails is tried again on another port.
    for attempt in range(3):
        port = unused_port()
        started = subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=1",
                                  "--include-dashboard=false", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
                                 env=env, capture_output=True, text=True, timeout=120)
        if started.returncode == 0:
            break
        kill_processes_mentioning(temp_dir)
    assert started.returncode == 0, started.stderr[-2000:]
    yield f"127.0.0.1:{port}"
    kill_processes_mentioning(temp_dir)
    deadline = time.time() + 30
    while processes_mentioning(temp_dir) and time.time() < deadline:
        time.sleep(0.2)
    shutil.rmtree(temp_dir, ignore_errors=True)


def client_env(tmp_path, **token):
    """A shell that has never seen the cluster's token (no RAY_AUTH_MODE, an empty home)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    (tmp_path / "home").mkdir(exist_ok=True)
    return {**env, "HOME": str(tmp_path / "home"), **token}


def test_address_of_a_token_cluster_needs_the_token_and_says_where_it_goes(token_cluster, tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--address", token_cluster, "--method", "sgd",
           "--samples", "2", "--n-epochs", "1", "--storage-path", str(tmp_path / "exp"),
           "--best-args", str(tmp_path / "best.yaml"), "--verbose", "0"]
    # Ray retries a refused connection once a second, 20 times by default; 3 are enough here.
    refused = subprocess.run(cmd, env=client_env(tmp_path, RAY_gcs_server_port_wait_time_s="3"), capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode == 2
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the Ray cluster at") and "RAY_AUTH_TOKEN " in last and "RAY_AUTH_TOKEN_PATH" in last
    assert "Traceback" not in refused.stderr

    wrong = subprocess.run(cmd, env=client_env(tmp_path, RAY_AUTH_TOKEN="not" + TOKEN[3:],
                                               RAY_gcs_server_port_wait_time_s="3"),
                           capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("error: the Ray cluster at")

    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    for name, token in (("a", {"RAY_AUTH_TOKEN": TOKEN}), ("b", {"RAY_AUTH_TOKEN_PATH": str(token_file)})):
        ok = subprocess.run([*cmd, "--name", name], env=client_env(tmp_path, **token), capture_output=True,
                            text=True, timeout=300)
        assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
        assert len(pq.read_table(tmp_path / "exp" / name / "trials.parquet")) == 2


def test_dashboard_of_a_token_cluster_says_how_to_get_the_token_without_printing_it(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--dashboard", "--method", "sgd", "--samples", "1",
           "--n-epochs", "1", "--storage-path", str(tmp_path / "exp"), "--best-args", str(tmp_path / "best.yaml"),
           "--verbose", "0"]
    env = client_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Ray dashboard: http://127.0.0.1:" in proc.stdout and "`ray get-auth-token`" in proc.stdout
    assert TOKEN not in proc.stdout + proc.stderr
