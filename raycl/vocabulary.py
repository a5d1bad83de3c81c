"""The search's vocabulary: what a configuration's status can be, the names of its metrics and
columns, the files a search writes, and the record a cohort keeps of each configuration.

A leaf module (no torch, no Ray, nothing of raycl's), so that the trainable, the export, the
progress lines, the report and the tools all read one spelling of each name.
"""

from __future__ import annotations

import dataclasses
import enum


class Status(enum.StrEnum):
    """A configuration's status. A StrEnum: it is the string in the table, the records and the logs."""

    RUNNING = "running"
    COMPLETED = "completed"  # trained every task
    PRUNED = "pruned"  # stopped at a rung
    DIVERGED = "diverged"  # a seed's loss turned non-finite
    ERRORED = "errored"  # its trial failed


ENDED_STATUSES = (Status.COMPLETED, Status.PRUNED, Status.DIVERGED, Status.ERRORED)

# Metrics a trial reports and the table holds.
OBJECTIVE = "objective"  # mean validation accuracy over the tasks seen (the benchmark's first setting)
RUNG_SCORE = "rung_score"  # the objective with ties broken by the lower validation loss
TASK = "task"  # tasks trained so far (Tune's time attribute)
VAL_LOSS = "val_loss"  # mean validation cross-entropy over the tasks seen
VAL_BY_TASK = "val_by_task"  # a configuration summary's validation accuracy per setting, one per task seen

# Keys of a trial's config.
COHORT = "cohort"  # the list of the cohort's configurations
AUDIT = "audit"  # which of them are audited (never stopped early)
JOB = "job"  # a job of the promotion form: its segment and its configurations (raycl.tune.promotion)
CONFIGS = "configs"  # a trial's result: its configurations' summaries, a list, each naming its SUMMARY_KEY
SUMMARY_KEY = "key"  # which configuration a summary is of: a cohort's index (a string), a job's configuration id

# Files of an experiment folder.
TRIALS_FILE = "trials.parquet"  # one row per configuration
SPACE_FILE = "search_space.yaml"  # the space searched, as run
RESULT_FILE = "result.json"  # Tune's per-trial report log
RUNGS_FILE = "rungs.jsonl"  # every rung decision of the search
SIGNAL_FILE = "rung_signal.json"  # each rung's predictive value
TRACKERS_FILE = "trackers.json"  # the runs each experiment tracker (MLflow, W&B, TensorBoard) holds
TENSORBOARD_FOLDER = "tensorboard"  # one TensorBoard run folder per configuration
# Files of a checkpoint.
COHORT_STATE_FILE = "stream.pt"  # a cohort's population state
SELECTION_STATE_FILE = "selection.pt"  # a per-task selection's state
COHORT_FILE = "cohort.json"  # every configuration's record
MATRICES_FILE = "matrices.json"  # accuracy matrices so far per configuration
CHOICES_FILE = "choices.json"  # a per-task selection's choices so far
# Folders of an experiment searched in the promotion form.
MEMBERS_DIR = "members"  # members/<configuration>/after-task<k>.pt: its member states at a rung
JOBS_DIR = "jobs"  # jobs/<job>.json: a finished job's records, matrices and timings


@dataclasses.dataclass
class ConfigRecord:
    """What a cohort knows of one of its configurations."""

    status: str = Status.RUNNING
    tasks: int = 0
    objective_by_task: list[float] = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    test: dict | None = None
    reason: str | None = None
    audit: bool = False

    def summary(self) -> dict:
        """The part the searcher and the experiment trackers see (never test accuracy)."""
        return {"status": self.status, TASK: self.tasks, OBJECTIVE: self.metrics.get(OBJECTIVE),
                RUNG_SCORE: self.metrics.get(RUNG_SCORE), "reason": self.reason,
                VAL_LOSS: self.metrics.get(VAL_LOSS), VAL_BY_TASK: validation_by_task(self.metrics)}


def validation_by_task(metrics: dict) -> dict[str, list[float]]:
    """Per setting, the validation accuracy on each task seen, from a configuration's metrics
    (``val_<setting>_task<j>``)."""
    found: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        setting, _, task = key.removeprefix("val_").rpartition("_task")
        if key.startswith("val_") and setting and task.isdigit():
            found.setdefault(setting, {})[int(task)] = value
    return {setting: [tasks[j] for j in sorted(tasks)] for setting, tasks in sorted(found.items())}


def config_summaries(result: dict) -> dict[str, dict]:
    """Each configuration's summary in a trial's result, by its key (a cohort's index as a string, or
    a job's configuration id). Trials report a list: Tune would flatten a mapping into one metric per
    configuration and value, and keep, analyse and write each of them in every snapshot of the
    experiment. Results written before hold a mapping, nested or as Tune flattened it
    (``configs/<key>/<name>``), and are read too."""
    reported = result.get(CONFIGS)
    if isinstance(reported, list):
        return {str(s[SUMMARY_KEY]): {k: v for k, v in s.items() if k != SUMMARY_KEY}
                for s in reported if isinstance(s, dict) and SUMMARY_KEY in s}
    out = {str(k): dict(v) for k, v in (reported or {}).items() if isinstance(v, dict)}
    for key, value in result.items():
        parts = str(key).split("/")
        if len(parts) == 3 and parts[0] == CONFIGS:
            out.setdefault(parts[1], {})[parts[2]] = value
    return out


def config_id(cohort: str, index: int, size: int) -> str:
    """The name of configuration ``index`` of a cohort trial of ``size``: the trial's id when alone."""
    return cohort if size == 1 else f"{cohort}-{index}"


def ended_status(status: str, tasks: int, final_task: int, errored: bool) -> Status:
    """A configuration's status once its trial has ended: one still running then failed with its
    trial, or was stopped (by ASHA) before the last task, or trained them all."""
    if status != Status.RUNNING:
        return Status(status)
    return Status.ERRORED if errored else Status.COMPLETED if tasks >= final_task else Status.PRUNED
