"""The Tune trainable: the one training loop, reporting after every task.

A trial trains its configuration on ``seeds`` (``--trial-seeds``) as one population. Each report
carries ``task`` (1..T, ASHA's time attribute), ``objective`` (mean validation accuracy over the
tasks seen so far, in the benchmark's first setting, averaged over the trial's seeds), each
seed's objective and their spread, the per-task validation accuracies and every setting's mean,
and a checkpoint so a retried trial resumes at the last task boundary. Test accuracy is computed
once, after the last task, and stored only inside the final checkpoint (``test.json``): it never
reaches the scheduler or the searcher. A seed that diverges makes its trial diverged: a
configuration that fails on one seed in S is not one to recommend.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import torch
from ray import tune

import numpy as np

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.train import PopulationRun

log = logging.getLogger(__name__)

STATE_FILE = "stream.pt"
TEST_FILE = "test.json"
# Accuracy matrices so far (val: every evaluated cell; test: the final row only), read by the report.
MATRICES_FILE = "matrices.json"
OBJECTIVE = "objective"
RUNG_SCORE = "rung_score"


def task_metrics(stream: PopulationRun, task: int) -> dict:
    """The metrics reported after ``task`` (0-based) from the population's validation matrices,
    each the mean over the trial's seeds (every seed's own objective is reported too)."""
    primary = stream.benchmark.settings[0]
    seen = task + 1
    members = stream.alive
    out = {"task": seen, "diverged": False}
    for setting in stream.benchmark.settings:
        rows = stream.val[setting][members, task, :seen]
        out[f"val_{setting}"] = float(rows.mean())
        for j, acc in enumerate(rows.mean(0), start=1):
            out[f"val_{setting}_task{j}"] = float(acc)
        # The MER paper's learning accuracy (mean of the diagonal so far) and BTI = RA - LA.
        diagonal = np.stack([stream.val[setting][m].diagonal()[:seen] for m in members])
        learning = float(diagonal.mean())
        out[f"val_{setting}_learning_acc"] = learning
        out[f"val_{setting}_bti"] = out[f"val_{setting}"] - learning
    out[OBJECTIVE] = out[f"val_{primary}"]
    per_seed = stream.val[primary][members, task, :seen].mean(1)
    for m, value in zip(members, per_seed):
        out[f"{OBJECTIVE}_seed{stream.seeds[m]}"] = float(value)
    out[f"{OBJECTIVE}_std"] = float(per_seed.std())
    out["val_loss"] = float(stream.val_loss[members, task, :seen].mean())
    # ASHA ranks by this: the objective, with ties (common when early tasks are nearly solved, as
    # seq-mnist's first task is at ~99.8% for most configurations) broken by the lower val loss.
    # The loss term stays far below one validation example's worth of accuracy.
    out[RUNG_SCORE] = out[OBJECTIVE] - 1e-4 * min(out["val_loss"], 100.0)
    return out


def matrices(stream: PopulationRun) -> dict:
    """The val and test accuracy matrices (mean over the trial's seeds) as JSON-ready lists,
    unevaluated cells None."""
    def rows(matrix) -> list[list[float | None]]:
        return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]

    return {split: {s: rows(getattr(stream, split)[s][stream.alive].mean(0)) for s in stream.benchmark.settings}
            for split in ("val", "test")}


def cl_trainable(config: dict, *, benchmarks: list[Benchmark], method: str, seeds: list[int], threads: int) -> None:
    """Train ``method`` with hyperparameters ``config`` under Tune, on every seed of ``seeds`` at
    once; seed i trains on ``benchmarks[i]`` when there is one benchmark per seed, else on the one."""
    torch.set_num_threads(max(1, threads))
    hyperparameters = make_config(method, config, benchmarks[0].defaults)
    stream = PopulationRun(benchmarks, method, hyperparameters, seeds, test_every_task=False)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            stream.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=False))
        log.info("resumed at task %d", stream.next_task + 1)
    while stream.next_task < stream.benchmark.n_tasks:
        task = stream.next_task
        report = stream.run_task()
        if report.diverged:
            # A diverged trial ends here, marked, with the worst objective; the search goes on.
            reasons = "; ".join(f"seed {seeds[m]}: {r}" for m, r in report.diverged.items())
            tune.report({"task": task + 1, OBJECTIVE: 0.0, RUNG_SCORE: -1.0, "diverged": True,
                         "diverged_reason": reasons})
            return
        metrics = task_metrics(stream, task)
        metrics["loss"] = float(np.mean(report.loss))
        with tempfile.TemporaryDirectory() as folder:
            torch.save(stream.state_dict(), Path(folder) / STATE_FILE)
            if report.test is not None:
                test = {s: report.test[s].mean(0).tolist() for s in report.test}
                (Path(folder) / TEST_FILE).write_text(json.dumps(test))
            (Path(folder) / MATRICES_FILE).write_text(json.dumps(matrices(stream)))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
