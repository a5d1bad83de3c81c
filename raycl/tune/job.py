"""The Tune trainable of the promotion form: one job (:mod:`raycl.tune.promotion`) trained as one
population over its segment of the stream.

A job of new configurations builds them afresh; a promoted job loads each configuration's member
states, saved where it waited at its rung, so each continues exactly as it would alone. After every
task the job reports each configuration's summary under ``configs`` and the seconds each task took.
After a task before the segment's end it saves its population's state in ``jobs/<job>.state.pt``
(one file, replaced task after task, with that task's report), so a job run again, retried on
another node or handed out again after an interruption, reports that task again and continues
from it. It is the job's file, not a Tune
checkpoint: Tune keeps a trial's last checkpoints for the whole experiment (a search of thousands of
jobs would keep thousands of population states nothing reads again) and, to keep them consistent
with its snapshot of the experiment, writes that snapshot, every trial's state, after each job of two.
At the end of the segment the job saves the member states of the configurations that wait at the
rung, then writes ``jobs/<job>.json`` (records, matrices, timings; test accuracy only there, never in
what Tune or Optuna see), deletes its state file and reports. A job asked to run again after that
file exists (an interruption before the searcher heard of its end) reports what the file holds
without training.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time

import torch
from ray import tune

from raycl import storage
from raycl.cohort import Cohort
from raycl.data import Benchmark
from raycl.vocabulary import JOB, JOBS_DIR, MEMBERS_DIR, ConfigRecord, Status

log = logging.getLogger(__name__)


def member_file(experiment: str, config: str, task: int) -> str:
    """Where configuration ``config``'s member states are saved after ``task`` tasks."""
    return storage.join(experiment, MEMBERS_DIR, config, f"after-task{task}.pt")


def job_file(experiment: str, job: str) -> str:
    return storage.join(experiment, JOBS_DIR, f"{job}.json")


def job_state_file(experiment: str, job: str) -> str:
    """Where job ``job`` keeps its population's state after its last task trained, while it runs."""
    return storage.join(experiment, JOBS_DIR, f"{job}.state.pt")


def read_job(experiment: str, job: str) -> dict | None:
    data = storage.read_bytes(job_file(experiment, job))
    return None if data is None else json.loads(data)


def save_member(experiment: str, config: str, task: int, states: list, record: ConfigRecord) -> None:
    sink = io.BytesIO()
    torch.save({"states": states, "record": dataclasses.asdict(record)}, sink)
    storage.write_bytes(member_file(experiment, config, task), sink.getvalue())


def load_member(experiment: str, config: str, task: int, device: torch.device) -> tuple[list, ConfigRecord]:
    data = storage.read_bytes(member_file(experiment, config, task))
    if data is None:
        raise FileNotFoundError(f"no saved member state of configuration {config} after task {task}: "
                                f"{member_file(experiment, config, task)}")
    saved = torch.load(io.BytesIO(data), map_location=device, weights_only=False)
    return saved["states"], ConfigRecord(**saved["record"])


def job_trainable(config: dict, *, benchmarks: list[Benchmark], method: str, seeds: list[int], threads: int,
                  experiment: str, gpus: float = 0.0, precision: str = "fp32") -> None:
    """Train the job ``config[JOB]`` under Tune, every configuration on every seed of ``seeds``, on the
    GPU Ray assigned the trial (``gpus`` of one), else the CPU, at ``precision``."""
    import ray

    from raycl.tune.placement import trial_device

    job = config[JOB]
    done = read_job(experiment, job["id"])
    if done is not None:
        storage.delete(job_state_file(experiment, job["id"]))  # in case the job ended between the two
        tune.report(done["result"])
        return
    torch.set_num_threads(max(1, threads))
    device = trial_device(gpus, precision, benchmarks[0])
    ids = [c["id"] for c in job["configs"]]
    if job["start"] == 0:
        cohort = Cohort([c["params"] for c in job["configs"]], benchmarks, method, seeds,
                        audit=[bool(c.get("audit")) for c in job["configs"]], device=device, precision=precision,
                        end=job["end"], ids=ids)
    else:
        loaded = [load_member(experiment, c, job["start"], device) for c in ids]
        cohort = Cohort.promoted([states for states, _ in loaded], [record for _, record in loaded], benchmarks,
                                 method, job["end"], ids, device=device, precision=precision)
    seconds: list[float] = []
    started = time.time()
    state = storage.read_bytes(job_state_file(experiment, job["id"]))
    if state is not None:
        saved = torch.load(io.BytesIO(state), map_location=device, weights_only=False)
        cohort.load_state_dict(saved["cohort"])
        seconds, started = list(saved["seconds"]), saved["started"]
        # The state is saved before its task's report: the report may have been lost with the process.
        tune.report(saved["metrics"])
    trial_id = tune.get_context().get_trial_id()
    node = ray.get_runtime_context().get_node_id()
    node_ip = ray.util.get_node_ip_address()
    print(f"trial {trial_id}: {job['id']}, {len(ids)} configuration(s) x {len(seeds)} seed(s) on {device} "
          f"({precision}), tasks {cohort.next_task + 1}-{job['end']}", flush=True)
    while True:
        start = time.perf_counter()
        task = cohort.run_task()
        seconds.append(time.perf_counter() - start)
        metrics = cohort.report(task)
        metrics.update({JOB: job["id"], "node_id": node, "task_seconds": list(seconds), "width": len(ids)})
        if cohort.finished:
            break
        sink = io.BytesIO()
        torch.save({"cohort": cohort.state_dict(), "seconds": seconds, "started": started, "metrics": metrics}, sink)
        storage.write_bytes(job_state_file(experiment, job["id"]), sink.getvalue())
        tune.report(metrics)
    final_task = cohort.n_tasks
    for index, record in enumerate(cohort.records):
        if record.status == Status.RUNNING and record.tasks < final_task:
            save_member(experiment, ids[index], record.tasks, cohort.member_states(index), record)
    summary = {"job": job["id"], "trial": trial_id, "node_id": node, "node_ip": node_ip, "start": job["start"], "end": job["end"],
               "seconds": seconds, "device": str(device), "started": started, "ended": time.time(),
               "members": len(ids) * len(seeds), "planned": job["planned"] * len(seeds),
               "records": {ids[i]: dataclasses.asdict(r) for i, r in enumerate(cohort.records)},
               "matrices": cohort.matrices(), "result": metrics}
    storage.write_bytes(job_file(experiment, job["id"]), json.dumps(summary).encode())
    storage.delete(job_state_file(experiment, job["id"]))
    tune.report(metrics)
