"""The Tune trainable: a cohort (:class:`raycl.cohort.Cohort`) trained under Tune, reporting after every task.

A trial is a **cohort**: the P configurations the searcher proposed together (``--population``),
each trained on the trial's seeds (``--trial-seeds`` S). At the rungs every live configuration is
judged against every configuration of the search recorded there (:mod:`raycl.tune.rungs`, ASHA's
rule); a cohort with none left ends, freeing its slot.

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
import tempfile
from pathlib import Path

import torch
from ray import tune

from raycl.cohort import Cohort
from raycl.data import Benchmark
from raycl.vocabulary import AUDIT, COHORT, COHORT_FILE, COHORT_STATE_FILE, MATRICES_FILE, ConfigRecord, config_id

log = logging.getLogger(__name__)


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
            cohort.load_state_dict(torch.load(Path(folder) / COHORT_STATE_FILE, map_location=device, weights_only=False))
        log.info("resumed at task %d with %d live configurations", cohort.next_task + 1, len(cohort.live))
    node = ray.get_runtime_context().get_node_id()
    # The actor's log (the Ray dashboard shows it) says which trials it ran.
    print(f"trial {trial_id}: {len(cohort.records)} configuration(s) x {len(seeds)} seed(s) on {device} "
          f"({precision}), from task {cohort.next_task + 1}", flush=True)
    while not cohort.finished:
        task = cohort.run_task()
        metrics = cohort.report(task)
        metrics["node_id"] = node
        with tempfile.TemporaryDirectory() as folder:
            torch.save(cohort.state_dict(), Path(folder) / COHORT_STATE_FILE)
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
