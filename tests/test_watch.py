"""Watching a search: the Ray dashboard names the search's job and its trials while it runs, and the
node's metrics endpoint carries the search's progress for Prometheus."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_lists_the_search_job_and_its_trial_actors_while_it_runs(tmp_path):
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "sgd", "--samples", "6", "--population", "2",
           "--storage-path", str(tmp_path / "exp"), "--name", "watched", "--best-args", str(tmp_path / "best.yaml"),
           "--n-epochs", "200", "--dashboard", "--verbose", "1"]
    # Long enough (about 15 s of jobs) for Ray's metrics and the actors' logs to be read while it runs
    # on a busy machine: the polls below stop as soon as everything has been seen.
    # Ray exports metrics every 10 s by default; every second here, so the search is seen running.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_metrics_report_interval_ms": "1000"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, url = [], None
    for line in proc.stdout:
        lines.append(line)
        match = re.match(r"Ray dashboard: (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    assert url, "".join(lines)

    # The dashboard is served by the search's own local cluster, so every answer comes while it runs.
    jobs, trial_actors, gauges, logged = [], [], [], []
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (jobs and trial_actors and gauges and logged):
        try:
            jobs = [j for j in get_json(f"{url}/api/jobs/") if "watched" in (j.get("metadata") or {}).get("job_name", "")]
            actors = get_json(f"{url}/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
            # Trial actors are reused from job to job (a fresh one costs seconds): named after the search,
            # each says in its log which trial and job it ran.
            trial_actors = [a for a in actors if a["class_name"] == "CohortTrial"
                            and a.get("repr_name") == "raycl watched"]
            for actor in trial_actors:
                with urllib.request.urlopen(f"{url}/api/v0/logs/file?actor_id={actor['actor_id']}&suffix=out",
                                            timeout=10) as response:
                    logged += re.findall(r"trial \w+: job\d+", response.read().decode(errors="replace"))
            port = get_json(f"{url}/nodes?view=summary")["data"]["summary"][0]["raylet"]["metricsExportPort"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                gauges = [line for line in response.read().decode().splitlines()
                          if line.startswith("ray_raycl_configurations{") and 'experiment="watched"' in line]
        except (OSError, KeyError, IndexError):  # the dashboard's API starts a moment after its URL is printed
            pass
        time.sleep(1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, "".join(lines) + out
    assert jobs and jobs[0]["metadata"]["job_name"] == "raycl watched: sgd on seq-digits, 6 samples, cohorts of 2"
    assert trial_actors, f"no trial actor named after its search in {actors}"
    assert logged, "no trial actor's log names the trials and jobs it ran"
    # Every gauge line read is one poll's view of the 6 configurations: its counts add up to them.
    values = {re.search(r'status="(\w+)"', line).group(1): float(line.rsplit(" ", 1)[1]) for line in gauges}
    assert set(values) == {"completed", "pruned", "diverged", "errored", "running", "pending"}, gauges
    assert sum(values.values()) == 6, gauges


class FakeGauge:
    """Stands in for ray.util.metrics.Gauge: keeps the last value set per tag set."""

    made = []

    def __init__(self, name, description, tag_keys):
        self.name, self.values = name, {}
        FakeGauge.made.append(self)

    def set(self, value, tags):
        self.values[tuple(sorted(tags.items()))] = value


def test_search_metrics_follow_every_result_not_only_the_first(monkeypatch):
    import ray.util.metrics

    from raycl.tune.progress import SearchMetrics

    monkeypatch.setattr(ray.util.metrics, "Gauge", FakeGauge)
    FakeGauge.made.clear()
    metrics = SearchMetrics(samples=4, final_task=5, experiment="x", interval=0)

    class Trial:
        def __init__(self, trial_id, n):
            self.trial_id, self.config = trial_id, {"cohort": [{"lr": 0.1}] * n}

    def counts():
        configurations = next(g for g in FakeGauge.made if g.name == "raycl_configurations")
        return {dict(k)["status"]: v for k, v in configurations.values.items()}

    def best():
        return next(g for g in FakeGauge.made if g.name == "raycl_best_objective").values.get((("experiment", "x"),))

    cohort = Trial("aaaa", 3)
    metrics.on_trial_start(0, [], cohort)
    metrics.on_step_end(0, [])
    assert counts()["running"] == 3 and counts()["pending"] == 1 and best() is None
    metrics.on_trial_result(0, [], cohort, {"configs/0/status": "pruned", "configs/0/task": 2,
                                            "configs/1/status": "running", "configs/1/task": 2,
                                            "configs/1/objective": 80.0, "configs/2/status": "running",
                                            "configs/2/task": 2, "configs/2/objective": 70.0})
    metrics.on_step_end(0, [])
    assert counts()["pruned"] == 1 and counts()["running"] == 2
    metrics.on_trial_result(0, [], cohort, {"configs/1/status": "completed", "configs/1/task": 5,
                                            "configs/1/objective": 91.0, "configs/2/status": "diverged",
                                            "configs/2/task": 3})
    metrics.on_trial_complete(0, [], cohort)
    metrics.on_trial_start(0, [], Trial("bbbb", 1))
    metrics.on_step_end(0, [])
    assert counts() == {"completed": 1, "pruned": 1, "diverged": 1, "errored": 0, "running": 1, "pending": 0}
    assert best() == 91.0
