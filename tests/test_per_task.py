"""Per-task protocols end to end: a chf search's schedule through best-args, train.py and the report;
the round trip in float64; an interrupted per-task search resumed with the same decisions."""

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

from conftest import ray_address
from test_tune import REPO, assert_short_trial_folders, search


def test_a_per_task_search_exports_its_schedule_and_train_replays_it(tmp_path, ray_cluster):
    report = search(tmp_path, method="der", protocol="chf", name="chf", buffer_size=30, chf_grid=(0.1, 0.01),
                    chf_drop=0.02, chf_decay_limit=2, final_eval_seeds=2)
    assert [c.task for c in report.choices] == [0, 1, 2, 3, 4]
    rows = pq.read_table(report.parquet_path).to_pylist()
    # Per task one population of the grid (2) and each learning rate's first ladder step (2); the other two
    # steps of the ladder train only on a task where the first step fell short.
    assert [len(c.candidates) for c in report.choices] == [4 if c.evidence["decays"] == 0 and
                                                           c.evidence["accepted"] else 6 for c in report.choices]
    assert len(rows) == sum(len(c.candidates) for c in report.choices)
    assert [r["task"] for r in rows if r["chosen"]] == [1, 2, 3, 4, 5]
    assert {r["phase"] for r in rows} == {"plasticity", "stability"}
    entry = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())["seq-digits"]["der"][30]
    assert entry["provenance"]["protocol"] == "chf" and len(entry["provenance"]["per_task"]) == 5
    assert entry["provenance"]["precision"] == "fp32"
    for task, (choice, row) in enumerate(zip(entry["provenance"]["per_task"], [r for r in rows if r["chosen"]])):
        assert choice["chosen"]["alpha"] == pytest.approx(row["config.alpha"])
        for name in ("lr", "alpha"):
            value = entry["config"][name]
            assert (value[task] if isinstance(value, list) else value) == pytest.approx(row[f"config.{name}"])
    assert report.final_eval["seeds"] == [0, 1]
    assert_short_trial_folders(tmp_path / "exp" / "chf", 1)
    # launch/train.py replays the schedule: the same data and seed, so the same path up to float32
    # rounding (the search trained it among its candidates).
    out = tmp_path / "replay.json"
    proc = subprocess.run([sys.executable, str(REPO / "launch" / "train.py"), "--method", "der", "--load-best-args",
                           str(tmp_path / "best.yaml"), "--n-epochs", "2", "--threads", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    replay = json.loads(out.read_text())
    assert replay["schedule"] == {k: v for k, v in entry["config"].items() if isinstance(v, list)}
    assert replay["test"]["class_il"]["mean"] == pytest.approx(sum(report.test["class_il"]) / 5, abs=1.5)
    from raycl.tune.report import write_report

    files = write_report(tmp_path / "exp" / "chf", tmp_path / "report")
    assert [f.name for f in files.figures] == ["schedule.png"] and "The schedule" in files.page.read_text()


def test_a_schedule_written_to_best_args_and_read_back_replays_the_chosen_path(tmp_path, digits):
    """Export, load, replay (float64): the round trip of a per-task search's result."""
    import dataclasses

    import numpy as np
    import torch

    from raycl.files import load_best_args, save_best_args
    from raycl.methods import make_config
    from raycl.selection import Branches, ChfSettings, run_schedule, schedule_configs, select_per_task
    from raycl.tune.export_schedule import schedule_config

    tasks = [dataclasses.replace(t, train_x=t.train_x[:80], train_y=t.train_y[:80]) for t in digits.tasks]
    bench = dataclasses.replace(digits, tasks=tasks)
    fixed = {"n_epochs": 1, "buffer_size": 30, "minibatch_size": 10}
    base = make_config("derpp", fixed, bench.defaults)
    result = select_per_task(Branches(bench, "derpp", base, seed=2, dtype=torch.float64), "chf",
                             ChfSettings(grid=(0.2, 0.02), drop=0.01, decay_limit=3))
    config = schedule_config(fixed, result.choices)
    assert any(isinstance(v, list) for v in config.values())  # something changed between tasks
    save_best_args(tmp_path / "best.yaml", "seq-digits", "derpp", config, {"protocol": "chf"})
    loaded = load_best_args(tmp_path / "best.yaml", "seq-digits", "derpp", 30)
    configs = [make_config("derpp", c, bench.defaults) for c in schedule_configs(loaded, bench.n_tasks)]
    replay = run_schedule(bench, "derpp", configs, [2], dtype=torch.float64)
    for setting in bench.settings:
        assert np.array_equal(replay.val[setting][0], result.run.val[setting][0], equal_nan=True)
        assert np.array_equal(replay.test[setting][0, -1], result.run.test[setting][0, -1])


@pytest.mark.parametrize("protocol", ["chf", "seen-tasks-val"])
def test_an_interrupted_per_task_search_resumes_with_the_same_decisions(tmp_path, ray_cluster, protocol):
    # The uninterrupted search in this process, the interrupted one and its resume from the command line.
    search(tmp_path, method="derpp", protocol=protocol, buffer_size=50, fixed={"n_epochs": 4}, chf_grid=(0.1, 0.02),
           chf_decay_limit=2, candidates=3, name="whole", best_args=str(tmp_path / "whole.yaml"))
    cmd = [sys.executable, str(REPO / "launch" / "tune.py"), "--method", "derpp", "--protocol", protocol,
           "--buffer-size", "50", "--n-epochs", "4", "--chf-grid", "0.1", "0.02", "--chf-decay-limit", "2",
           "--candidates", "3", "--address", ray_address(), "--storage-path", str(tmp_path / "exp"), "--name", "cut",
           "--best-args", str(tmp_path / "cut.yaml"), "--verbose", "0"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    reported = 0
    while reported < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        reported = sum(len(p.read_text().splitlines()) for p in (tmp_path / "exp" / "cut").glob("*/result.json"))
    assert reported >= 2 and proc.poll() is None, proc.poll() is None or proc.stdout.read()
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "interrupted" in output, output[-2000:]
    resumed = subprocess.run([*cmd, "--resume"], env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    tables = {n: pq.read_table(tmp_path / "exp" / n / "trials.parquet").to_pylist() for n in ("whole", "cut")}
    columns = [k for k in tables["whole"][0] if k.startswith("config.") or k in ("task", "chosen", "current_task_val")]
    assert [[r[k] for k in columns] for r in tables["cut"]] == [[r[k] for k in columns] for r in tables["whole"]]


def test_pbt_trials_choose_inside_and_exploit_across_each_other(tmp_path, ray_cluster):
    report = search(tmp_path, method="derpp", protocol="pbt", name="pbt", samples=4, candidates=2, buffer_size=30,
                    fixed={"n_epochs": 1}, max_concurrent=2)
    rows = pq.read_table(report.parquet_path).to_pylist()
    trials = {r["trial_id"] for r in rows}
    assert len(trials) == 4  # every trial's lineage, by the trial that ended it
    assert_short_trial_folders(tmp_path / "exp" / "pbt", 4)
    winner = [r for r in rows if r["winner"]]
    assert [r["task"] for r in winner if r["chosen"]] == [1, 2, 3, 4, 5]
    assert all(sum(r["task"] == t for r in winner) == 2 for t in range(1, 6))  # its centre and a perturbation
    entry = yaml.safe_load(Path(tmp_path / "best.yaml").read_text())["seq-digits"]["derpp"][30]
    assert entry["provenance"]["protocol"] == "pbt" and entry["provenance"]["trials"] == 4
    # The schedule the best-args file holds is the winner's lineage.
    for task, row in enumerate([r for r in winner if r["chosen"]]):
        value = entry["config"]["lr"]
        assert (value[task] if isinstance(value, list) else value) == pytest.approx(row["config.lr"])
    # At least one exploit: a trial whose lineage begins with another trial's first task.
    first = {}
    for r in rows:
        if r["task"] == 1 and r["chosen"]:
            first.setdefault((r["config.lr"], r["current_task_val"]), set()).add(r["trial_id"])
    assert any(len(ids) > 1 for ids in first.values()), first
