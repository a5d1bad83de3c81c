"""A cohort: P configurations of one method, each on S seeds, trained as one population.

Member ``c * S + i`` of the population is configuration c on seed i. After every task each
configuration's objective is its mean validation accuracy over the tasks seen (in the benchmark's
first setting), averaged over its seeds. At the rungs (ASHA's, tasks trained) a ``judge`` decides
which live configurations go on; those stopped are dropped from the population. A configuration
with a diverging seed is diverged; the rest of its cohort goes on. Test accuracy is computed after
the last task and kept in the records only (never in what a judge or searcher sees).

No Ray here: the Tune trainable (:mod:`raycl.tune.trainable`) drives a cohort and checkpoints it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from raycl.data import Benchmark
from raycl.methods import make_config
from raycl.population.record import AccuracyRecord
from raycl.train import PopulationRun
from raycl.vocabulary import CONFIGS, OBJECTIVE, RUNG_SCORE, SUMMARY_KEY, TASK, ConfigRecord, Status

# judge(rung, {configuration index: rung score}) -> the indices that go on past the rung.
Judge = Callable[[int, dict[int, float]], set[int]]


def task_metrics(record: AccuracyRecord, seeds: list[int], task: int, members: list[int]) -> dict:
    """The metrics of one configuration after ``task`` (0-based) from its ``members``' (its seeds')
    validation matrices in ``record``, each the mean over the seeds (every seed's own objective too;
    ``seeds[m]`` is member m's seed)."""
    primary = record.settings[0]
    out = {}
    for setting in record.settings:
        rows = record.seen(members, task, setting)
        out[f"val_{setting}"] = float(rows.mean())
        for j, acc in enumerate(rows.mean(0), start=1):
            out[f"val_{setting}_task{j}"] = float(acc)
        # The MER paper's learning accuracy (mean of the diagonal so far) and BTI = RA - LA.
        learning = float(record.learning(members, task, setting).mean())
        out[f"val_{setting}_learning_acc"] = learning
        out[f"val_{setting}_bti"] = out[f"val_{setting}"] - learning
    out[OBJECTIVE] = out[f"val_{primary}"]
    per_seed = record.seen(members, task, primary).mean(1)
    for m, value in zip(members, per_seed):
        out[f"{OBJECTIVE}_seed{seeds[m]}"] = float(value)
    out[f"{OBJECTIVE}_std"] = float(per_seed.std())
    out["val_loss"] = float(record.seen_loss(members, task).mean())
    # Halving and ASHA rank by this: the objective, with ties (common when early tasks are nearly
    # solved, as seq-mnist's first task is at ~99.8% for most configurations) broken by the lower
    # val loss. The loss term stays far below one validation example's worth of accuracy.
    out[RUNG_SCORE] = out[OBJECTIVE] - 1e-4 * min(out["val_loss"], 100.0)
    return out


class Cohort:
    """P configurations x S seeds of one method as one population, judged by ``judge`` at ``rungs``
    (tasks trained); configurations marked in ``audit`` are judged too but never stopped.

    A job of the promotion form trains a cohort over one segment: it stops after task ``end``
    (its configurations still running there wait at the rung), names its configurations ``ids``
    in its reports, and a promoted job starts from its configurations' saved member states
    (:meth:`promoted`)."""

    def __init__(self, configs: list[dict], benchmarks: list[Benchmark], method: str, seeds: list[int],
                 rungs: tuple[int, ...] = (), judge: Judge | None = None, audit: list[bool] | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, precision: str = "fp32",
                 end: int | None = None, ids: list[str] | None = None, population: PopulationRun | None = None,
                 records: list[ConfigRecord] | None = None):
        self.seeds = list(seeds)
        per_config = len(self.seeds)
        if population is None:
            defaults = benchmarks[0].defaults_for(method)
            hyperparameters = [make_config(method, c, defaults) for c in configs]
            # Seed i of every configuration trains on benchmarks[i] when there is one benchmark per seed.
            data = [i if len(benchmarks) == per_config else 0 for i in range(per_config)]
            population = PopulationRun(
                benchmarks, method, [h for h in hyperparameters for _ in self.seeds], self.seeds * len(configs),
                member_data=data * len(configs), device=device, dtype=dtype, test_every_task=False,
                precision=precision)
        self.population = population
        audit = list(audit or [False] * len(configs))
        self.records = records if records is not None else [ConfigRecord(audit=bool(a)) for a in audit]
        self.rungs = tuple(rungs) if judge is not None else ()
        self.judge = judge
        self.end = self.population.benchmark.n_tasks if end is None else end
        self.ids = list(ids) if ids is not None else None

    @classmethod
    def promoted(cls, states: list[list], records: list[ConfigRecord], benchmarks: list[Benchmark], method: str,
                 end: int, ids: list[str], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 precision: str = "fp32") -> Cohort:
        """A job of configurations that continue from their saved member states (``states[c]``: the
        states of configuration c's seeds, in seed order) and ``records``."""
        population = PopulationRun.from_members(benchmarks, method, [s for config in states for s in config],
                                                device=device, dtype=dtype, precision=precision,
                                                test_every_task=False)
        seeds = [s.seed for s in states[0]]
        return cls([{}] * len(states), benchmarks, method, seeds, end=end, ids=ids, population=population,
                   records=[dataclasses.replace(r) for r in records], device=device, dtype=dtype, precision=precision)

    def member_states(self, config: int) -> list:
        """The member states of configuration ``config``'s seeds, to continue in another population."""
        return self.population.export_members(self.members(config))

    @property
    def n_tasks(self) -> int:
        return self.population.benchmark.n_tasks

    @property
    def next_task(self) -> int:
        return self.population.next_task

    def members(self, config: int) -> list[int]:
        size = len(self.seeds)
        return list(range(config * size, (config + 1) * size))

    @property
    def live(self) -> list[int]:
        return [c for c, r in enumerate(self.records) if r.status == Status.RUNNING]

    @property
    def finished(self) -> bool:
        return not self.live or self.population.next_task >= self.end

    def run_task(self) -> int:
        """Train every live configuration on the next task, update the records, stop those the
        judge stops at a rung; returns the task trained (0-based)."""
        population = self.population
        task = population.next_task
        report = population.run_task()
        for config in self.live:
            failed = [m for m in self.members(config) if m in report.diverged]
            if failed:
                record = self.records[config]
                record.status, record.tasks = Status.DIVERGED, task + 1
                record.reason = "; ".join(f"seed {population.seeds[m]}: {report.diverged[m]}" for m in failed)
                population.drop(self.members(config))
        for config in self.live:
            record = self.records[config]
            record.metrics = task_metrics(population.record, population.seeds, task, self.members(config))
            record.tasks = task + 1
            record.objective_by_task.append(record.metrics[OBJECTIVE])
        if task + 1 == self.n_tasks:
            for config in self.live:
                record = self.records[config]
                record.status = Status.COMPLETED
                record.test = {s: population.record.row(self.members(config), task, s, "test").mean(0).tolist()
                               for s in population.benchmark.settings}
        elif task + 1 in self.rungs and self.live:
            kept = self.judge(task + 1, {c: self.records[c].metrics[RUNG_SCORE] for c in self.live})
            for config in self.live:
                if config not in kept:
                    self.records[config].status = Status.PRUNED
                    population.drop(self.members(config))
        return task

    def report(self, task: int) -> dict:
        """What Tune sees after ``task``: every configuration's summary, and the best configuration
        that trained this task in full at the top level."""
        candidates = [c for c in range(len(self.records)) if self.records[c].status != Status.DIVERGED
                      and self.records[c].tasks == task + 1]
        out = {TASK: task + 1, "live": len(self.live),
               CONFIGS: [{SUMMARY_KEY: self.key(c), **r.summary()} for c, r in enumerate(self.records)]}
        if not candidates:  # every configuration diverged
            out.update({OBJECTIVE: 0.0, RUNG_SCORE: -1.0, "diverged": all(r.status == Status.DIVERGED
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

        record = self.population.record
        return {self.key(c): {split: {s: rows(m) for s, m in record.mean_matrices(self.members(c), split).items()}
                              for split in ("val", "test")} for c in range(len(self.records))}

    def key(self, config: int) -> str:
        """How reports name configuration ``config``: its id in a job, else its index."""
        return self.ids[config] if self.ids is not None else str(config)

    def state_dict(self) -> dict:
        # "stream" is the checkpoint's key for the population's state since the first cohorts: kept, so
        # checkpoints written before the rename still resume.
        return {"stream": self.population.state_dict(), "records": [dataclasses.asdict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        self.population.load_state_dict(state["stream"])
        self.records = [ConfigRecord(**r) for r in state["records"]]
