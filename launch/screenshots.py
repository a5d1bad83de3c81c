#!/usr/bin/env python
"""Screenshots of a search as a person watches it: the Ray dashboard while it runs, then the Optuna
study in optuna-dashboard, taken with headless Chromium (Debian: ``apt-get install chromium``).

    python launch/screenshots.py                   # writes docs/dashboard-*.png
    python launch/screenshots.py --out /tmp/shots --method derpp --samples 32

The search runs on a local cluster with its own dashboard (``--dashboard``) in a temporary folder;
optuna-dashboard (``pip install optuna-dashboard``) is skipped with a message when it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no headless Chromium found: apt-get install chromium")


def screenshot(url: str, path: Path, width: int = 1600, height: int = 1000, wait_ms: int = 8000) -> None:
    """``url`` rendered by headless Chromium, after ``wait_ms`` of page time for its scripts."""
    subprocess.run([chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}",
                    f"--screenshot={path}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {path}", flush=True)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def running_trials(dashboard: str) -> list[dict]:
    actors = get_json(f"{dashboard}/api/v0/actors?detail=1&limit=1000")["data"]["result"]["result"]
    return [a for a in actors if a["class_name"] == "CohortTrial" and a["state"] == "ALIVE"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "docs"), help="folder for the PNG files (default docs/)")
    parser.add_argument("--method", default="vib")
    parser.add_argument("--dataset", default="seq-digits")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--population", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per task (longer trials to look at)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="raycl-screenshots-"))
    study = f"sqlite:///{work / 'optuna.db'}"
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", args.method, "--dataset", args.dataset,
           "--samples", str(args.samples), "--population", str(args.population), "--dashboard",
           "--optuna-storage", study, "--storage-path", str(work / "experiments"), "--name", "watched",
           "--best-args", str(work / "best.yaml"), "--n-epochs", str(args.epochs)]
    search = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={"RAY_AUTH_MODE": "disabled", **os.environ})
    dashboard = None
    for line in search.stdout:
        print(line, end="", flush=True)
        match = re.match(r"Ray dashboard: (http://\S+)", line)
        if match:
            dashboard = match.group(1)
            break
    if dashboard is None:
        raise SystemExit("the search printed no dashboard URL")
    deadline = time.time() + 300
    while time.time() < deadline and search.poll() is None:
        try:
            if len(running_trials(dashboard)) >= 2:
                break
        except OSError:
            pass
        time.sleep(1)
    screenshot(f"{dashboard}/#/actors", out / "dashboard-actors.png")
    screenshot(f"{dashboard}/#/jobs", out / "dashboard-jobs.png", height=700)
    for line in search.stdout:
        print(line, end="", flush=True)
    if search.wait() != 0:
        raise SystemExit(f"the search failed ({search.returncode})")

    if shutil.which("optuna-dashboard") is None:
        print("optuna-dashboard not installed (pip install optuna-dashboard): no screenshot of the study")
        return
    port = free_port()
    server = subprocess.Popen(["optuna-dashboard", study, "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(60):
            try:
                studies = get_json(f"{url}/api/studies")["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise SystemExit("optuna-dashboard did not answer")
        screenshot(f"{url}/dashboard/studies/{studies[0]['study_id']}", out / "optuna-dashboard.png", height=1300)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
