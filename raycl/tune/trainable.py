"""The Tune trainable: the one training loop, reporting after every task.

Each report carries ``task`` (1..T, ASHA's time attribute), ``objective`` (mean validation
accuracy over the tasks seen so far, in the benchmark's first setting), the per-task validation
accuracies and every setting's mean, and a checkpoint so a retried trial resumes at the last
task boundary. Test accuracy is computed once, after the last task, and stored only inside the
final checkpoint (``test.json``): it never reaches the scheduler or the searcher.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path

import torch
from ray import tune

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.train import DivergedError, StreamRun

log = logging.getLogger(__name__)

STATE_FILE = "stream.pt"
TEST_FILE = "test.json"
# Accuracy matrices so far (val: every evaluated cell; test: the final row only), read by the report.
MATRICES_FILE = "matrices.json"
OBJECTIVE = "objective"
RUNG_SCORE = "rung_score"


def task_metrics(stream: StreamRun, task: int) -> dict:
    """The metrics reported after ``task`` (0-based) from the stream's validation matrix."""
    primary = stream.benchmark.settings[0]
    seen = task + 1
    out = {"task": seen, "diverged": False}
    for setting in stream.benchmark.settings:
        row = stream.val[setting][task, :seen]
        out[f"val_{setting}"] = float(row.mean())
        for j, acc in enumerate(row, start=1):
            out[f"val_{setting}_task{j}"] = float(acc)
        # The MER paper's learning accuracy (mean of the diagonal so far) and BTI = RA - LA.
        learning = float(stream.val[setting].diagonal()[:seen].mean())
        out[f"val_{setting}_learning_acc"] = learning
        out[f"val_{setting}_bti"] = out[f"val_{setting}"] - learning
    out[OBJECTIVE] = out[f"val_{primary}"]
    out["val_loss"] = float(stream.val_loss[task, :seen].mean())
    # ASHA ranks by this: the objective, with ties (common when early tasks are nearly solved, as
    # seq-mnist's first task is at ~99.8% for most configurations) broken by the lower val loss.
    # The loss term stays far below one validation example's worth of accuracy.
    out[RUNG_SCORE] = out[OBJECTIVE] - 1e-4 * min(out["val_loss"], 100.0)
    return out


def matrices(stream: StreamRun) -> dict:
    """The stream's val and test accuracy matrices as JSON-ready lists, unevaluated cells None."""
    def rows(matrix) -> list[list[float | None]]:
        return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]

    return {split: {s: rows(getattr(stream, split)[s]) for s in stream.benchmark.settings}
            for split in ("val", "test")}


def cl_trainable(config: dict, *, benchmark: Benchmark, method: str, seed: int, threads: int) -> None:
    """Train ``method`` with hyperparameters ``config`` on ``benchmark`` under Tune."""
    torch.set_num_threads(max(1, threads))
    hyperparameters = make_config(method, config, benchmark.defaults)
    stream = StreamRun(benchmark, method, hyperparameters, seed, test_every_task=False)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            stream.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=False))
        log.info("resumed at task %d", stream.next_task + 1)
    while stream.next_task < benchmark.n_tasks:
        task = stream.next_task
        try:
            report = stream.run_task()
        except DivergedError as exc:
            # A diverged trial ends here, marked, with the worst objective; the search goes on.
            tune.report({"task": task + 1, OBJECTIVE: 0.0, RUNG_SCORE: -1.0, "diverged": True,
                         "diverged_reason": str(exc)})
            return
        metrics = task_metrics(stream, task)
        metrics["loss"] = report.loss
        with tempfile.TemporaryDirectory() as folder:
            torch.save(stream.state_dict(), Path(folder) / STATE_FILE)
            if report.test is not None:
                (Path(folder) / TEST_FILE).write_text(json.dumps(report.test))
            (Path(folder) / MATRICES_FILE).write_text(json.dumps(matrices(stream)))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
