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
           "--n-epochs", "3", "--dashboard", "--verbose", "1"]
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
    jobs, trial_actors, gauges = [], [], []
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (jobs and trial_actors and gauges):
        try:
            jobs = [j for j in get_json(f"{url}/api/jobs/") if "watched" in (j.get("metadata") or {}).get("job_name", "")]
            actors = get_json(f"{url}/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
            trial_actors = [a for a in actors if a["class_name"] == "CohortTrial"
                            and re.fullmatch(r"raycl watched trial \w+", a.get("repr_name") or "")]
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
    assert trial_actors, f"no trial actor named after its search and trial in {actors}"
    statuses = {re.search(r'status="(\w+)"', line).group(1) for line in gauges}
    assert {"completed", "pruned", "running", "pending"} <= statuses, gauges
