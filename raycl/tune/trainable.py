"""The Tune trainable: a cohort of configurations trained as one population, reporting after every task.

A trial is a **cohort**: the P configurations the searcher proposed together (``--population``),
each trained on the trial's seeds (``--trial-seeds`` S), so P x S members in one
:class:`raycl.train.PopulationRun`; member ``c * S + i`` is configuration c on seed i. After
every task each configuration's objective is its mean validation accuracy over the tasks seen (in
the benchmark's first setting), averaged over its seeds. At the rungs every live configuration is
judged against every configuration of the search recorded there (:mod:`raycl.tune.rungs`, ASHA's
rule); those stopped are dropped from the population, and a cohort with none left ends, freeing
its slot. A configuration with a diverging seed is diverged; the rest of its cohort goes on.

Each report carries ``task``, every configuration's status and objective under ``configs`` (what
the searcher tells Optuna), the best configuration's full metrics at the top level, and a
checkpoint (population state + every configuration's record) so a retried or resumed trial
continues at the last task boundary with the same live members. Test accuracy is computed after
the last task and stored only in the checkpoint: it never reaches the rung board or the searcher.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from ray import tune

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.train import PopulationRun

log = logging.getLogger(__name__)

COHORT = "cohort"  # the trial config's key: the list of the cohort's configurations
AUDIT = "audit"  # the trial config's key: which of them are audited (never stopped early)
STATE_FILE = "stream.pt"
# Every configuration's record (status, objective after each task, last metrics, test accuracy).
COHORT_FILE = "cohort.json"
# Accuracy matrices so far per configuration (val: every evaluated cell; test: the final row only).
MATRICES_FILE = "matrices.json"
OBJECTIVE = "objective"
RUNG_SCORE = "rung_score"
RUNNING, COMPLETED, PRUNED, DIVERGED = "running", "completed", "pruned", "diverged"


@dataclasses.dataclass
class ConfigRecord:
    """What the cohort knows of one of its configurations."""

    status: str = RUNNING
    tasks: int = 0
    objective_by_task: list[float] = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    test: dict | None = None
    reason: str | None = None
    audit: bool = False

    def summary(self) -> dict:
        """The part the searcher sees (never test accuracy)."""
        return {"status": self.status, "task": self.tasks, OBJECTIVE: self.metrics.get(OBJECTIVE),
                RUNG_SCORE: self.metrics.get(RUNG_SCORE), "reason": self.reason}


def config_id(cohort: str, index: int, size: int) -> str:
    """The name of configuration ``index`` of a cohort trial of ``size``: the trial's id when alone."""
    return cohort if size == 1 else f"{cohort}-{index}"


def ended_status(status: str, tasks: int, final_task: int, errored: bool) -> str:
    """A configuration's status once its trial has ended: one still running then failed with its
    trial, or was stopped (by ASHA) before the last task, or trained them all."""
    if status != RUNNING:
        return status
    return "errored" if errored else COMPLETED if tasks >= final_task else PRUNED


def task_metrics(stream: PopulationRun, task: int, members: list[int]) -> dict:
    """The metrics of one configuration after ``task`` (0-based) from its ``members``' (its seeds')
    validation matrices, each the mean over the seeds (every seed's own objective too)."""
    primary = stream.benchmark.settings[0]
    seen = task + 1
    out = {}
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
    # Halving and ASHA rank by this: the objective, with ties (common when early tasks are nearly
    # solved, as seq-mnist's first task is at ~99.8% for most configurations) broken by the lower
    # val loss. The loss term stays far below one validation example's worth of accuracy.
    out[RUNG_SCORE] = out[OBJECTIVE] - 1e-4 * min(out["val_loss"], 100.0)
    return out


# judge(rung, {configuration index: rung score}) -> the indices that go on past the rung.
Judge = Callable[[int, dict[int, float]], set[int]]


class Cohort:
    """P configurations x S seeds of one method as one population, judged by ``judge`` at ``rungs``
    (tasks trained); configurations marked in ``audit`` are judged too but never stopped."""

    def __init__(self, configs: list[dict], benchmarks: list[Benchmark], method: str, seeds: list[int],
                 rungs: tuple[int, ...] = (), judge: Judge | None = None, audit: list[bool] | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, precision: str = "fp32"):
        self.seeds = list(seeds)
        per_config = len(self.seeds)
        defaults = benchmarks[0].defaults_for(method)
        hyperparameters = [make_config(method, c, defaults) for c in configs]
        # Seed i of every configuration trains on benchmarks[i] when there is one benchmark per seed.
        data = [i if len(benchmarks) == per_config else 0 for i in range(per_config)]
        self.stream = PopulationRun(
            benchmarks, method, [h for h in hyperparameters for _ in self.seeds], self.seeds * len(configs),
            member_data=data * len(configs), device=device, dtype=dtype, test_every_task=False, precision=precision)
        audit = list(audit or [False] * len(configs))
        self.records = [ConfigRecord(audit=bool(a)) for a in audit]
        self.rungs = tuple(rungs) if judge is not None else ()
        self.judge = judge

    @property
    def n_tasks(self) -> int:
        return self.stream.benchmark.n_tasks

    def members(self, config: int) -> list[int]:
        size = len(self.seeds)
        return list(range(config * size, (config + 1) * size))

    @property
    def live(self) -> list[int]:
        return [c for c, r in enumerate(self.records) if r.status == RUNNING]

    @property
    def finished(self) -> bool:
        return not self.live or self.stream.next_task >= self.n_tasks

    def run_task(self) -> int:
        """Train every live configuration on the next task, update the records, stop those the
        judge stops at a rung; returns the task trained (0-based)."""
        task = self.stream.next_task
        report = self.stream.run_task()
        for config in self.live:
            failed = [m for m in self.members(config) if m in report.diverged]
            if failed:
                record = self.records[config]
                record.status, record.tasks = DIVERGED, task + 1
                record.reason = "; ".join(f"seed {self.stream.seeds[m]}: {report.diverged[m]}" for m in failed)
                self.stream.drop(self.members(config))
        for config in self.live:
            record = self.records[config]
            record.metrics = task_metrics(self.stream, task, self.members(config))
            record.tasks = task + 1
            record.objective_by_task.append(record.metrics[OBJECTIVE])
        if task + 1 == self.n_tasks:
            for config in self.live:
                record = self.records[config]
                record.status = COMPLETED
                record.test = {s: self.stream.test[s][self.members(config), task, :].mean(0).tolist()
                               for s in self.stream.benchmark.settings}
        elif task + 1 in self.rungs and self.live:
            kept = self.judge(task + 1, {c: self.records[c].metrics[RUNG_SCORE] for c in self.live})
            for config in self.live:
                if config not in kept:
                    self.records[config].status = PRUNED
                    self.stream.drop(self.members(config))
        return task

    def report(self, task: int) -> dict:
        """What Tune sees after ``task``: every configuration's summary, and the best configuration
        that trained this task in full at the top level."""
        candidates = [c for c in range(len(self.records)) if self.records[c].status != DIVERGED
                      and self.records[c].tasks == task + 1]
        out = {"task": task + 1, "live": len(self.live),
               "configs": {str(c): r.summary() for c, r in enumerate(self.records)}}
        if not candidates:  # every configuration diverged
            out.update({OBJECTIVE: 0.0, RUNG_SCORE: -1.0, "diverged": all(r.status == DIVERGED
                                                                          for r in self.records)})
            return out
        best = max(candidates, key=lambda c: self.records[c].metrics[RUNG_SCORE])
        out.update(self.records[best].metrics)
        out.update({"best_config": best, "diverged": False})
        return out

    def matrices(self) -> dict:
        """Each configuration's val and test accuracy matrices (mean over its seeds), None where not
        evaluated."""
        def rows(matrix) -> list[list[float | None]]:
            return [[None if math.isnan(v) else float(v) for v in row] for row in matrix]

        out = {}
        for c in range(len(self.records)):
            members = self.members(c)
            out[str(c)] = {split: {s: rows(getattr(self.stream, split)[s][members].mean(0))
                                   for s in self.stream.benchmark.settings} for split in ("val", "test")}
        return out

    def state_dict(self) -> dict:
        return {"stream": self.stream.state_dict(), "records": [dataclasses.asdict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state["stream"])
        self.records = [ConfigRecord(**r) for r in state["records"]]


def read_records(folder: Path) -> list[ConfigRecord] | None:
    path = folder / COHORT_FILE
    return [ConfigRecord(**r) for r in json.loads(path.read_text())] if path.is_file() else None


def cl_trainable(config: dict, *, benchmarks: list[Benchmark], method: str, seeds: list[int], threads: int,
                 rungs: tuple[int, ...] = (), board=None, gpus: float = 0.0, precision: str = "fp32") -> None:
    """Train the cohort ``config[COHORT]`` under Tune, every configuration on every seed of ``seeds``,
    judged at ``rungs`` by the search's rung ``board``; on the GPU Ray assigned the trial (``gpus`` of
    one), else the CPU, at ``precision``."""
    import ray

    from raycl.tune.placement import trial_device

    torch.set_num_threads(max(1, threads))
    device = trial_device(gpus, precision, benchmarks[0])
    configs = config[COHORT]
    audit = list(config.get(AUDIT) or [False] * len(configs))
    trial_id = tune.get_context().get_trial_id()
    names = [config_id(trial_id, c, len(configs)) for c in range(len(configs))]
    judge = None
    if board is not None and rungs:
        from raycl.tune.rungs import cohort_judge

        judge = cohort_judge(lambda *call: ray.get(board.judge.remote(*call)), names, audit)
    cohort = Cohort(configs, benchmarks, method, seeds, rungs, judge, audit, device=device, precision=precision)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # Onto this trial's device, whichever the checkpoint was saved from (GPU or CPU node).
            cohort.load_state_dict(torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=False))
        log.info("resumed at task %d with %d live configurations", cohort.stream.next_task + 1, len(cohort.live))
    node = ray.get_runtime_context().get_node_id()
    # The actor's log (the Ray dashboard shows it) says which trials it ran.
    print(f"trial {trial_id}: {len(cohort.records)} configuration(s) x {len(seeds)} seed(s) on {device} "
          f"({precision}), from task {cohort.stream.next_task + 1}", flush=True)
    while not cohort.finished:
        task = cohort.run_task()
        metrics = cohort.report(task)
        metrics["node_id"] = node
        with tempfile.TemporaryDirectory() as folder:
            torch.save(cohort.state_dict(), Path(folder) / STATE_FILE)
            (Path(folder) / COHORT_FILE).write_text(json.dumps([dataclasses.asdict(r) for r in cohort.records]))
            (Path(folder) / MATRICES_FILE).write_text(json.dumps(cohort.matrices()))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def named_trainable(trainable, search: str, per_trial: bool):
    """``trainable`` as the Tune actor class ``CohortTrial``, whose repr (the name the Ray dashboard
    shows for the actor and its tasks) is ``search``, and the trial id when ``per_trial``.

    Ray records an actor's repr once, when it starts, so only an actor that is not reused for later
    trials can carry its trial's id; a reused one says which trials it ran in its log.
    """
    from ray.tune.trainable import wrap_function

    class CohortTrial(wrap_function(trainable)):
        def __repr__(self) -> str:
            return f"{search} trial {self.trial_id}" if per_trial else search

    CohortTrial.__qualname__ = CohortTrial.__name__  # the class name the dashboard lists
    return CohortTrial
