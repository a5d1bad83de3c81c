"""What a tracker is told: configuration events, read from a Tune result by one adapter.

The unit a tracker logs is the **configuration** (one run each), identified by a stable id, never
by where it trained: a Tune trial is a cohort of configurations, and a configuration may train in
several trials. :func:`config_events` is the one place that reads Tune's results for the trackers;
everything behind it (:mod:`raycl.tune.trackers.queue` and the backends) sees only these events.
"""

from __future__ import annotations

import dataclasses
import math
import re

from raycl.vocabulary import (AUDIT, COHORT, OBJECTIVE, TASK, VAL_BY_TASK, VAL_LOSS, Status, config_id,
                              config_summaries, ended_status)

ENDED = {s.value for s in (Status.COMPLETED, Status.PRUNED, Status.DIVERGED, Status.ERRORED)}


@dataclasses.dataclass(frozen=True)
class SearchInfo:
    """The search a tracker's parent run stands for."""

    experiment: str  # the experiment's name
    experiment_dir: str  # its folder (a local path or a URI)
    method: str
    dataset: str
    buffer_size: int | str | None  # a table search's sizes: "200,500,5120"
    protocol: str
    samples: int
    population: int | str
    final_task: int
    space_source: str = ""

    def tags(self) -> dict[str, str]:
        """What every run of the search is tagged with."""
        return {"method": self.method, "dataset": self.dataset,
                "buffer_size": "-" if self.buffer_size is None else str(self.buffer_size),
                "protocol": self.protocol, "experiment": self.experiment}


@dataclasses.dataclass(frozen=True)
class ConfigEvent:
    """A configuration's state after it trained ``task`` tasks in Tune trial ``trial``: its
    validation ``metrics`` at that task (empty when it has none), its ``status`` (a
    :class:`raycl.vocabulary.Status` value) and its hyperparameters."""

    config: str  # the configuration's stable id
    trial: str  # the Tune trial it trained in
    task: int
    status: str
    metrics: dict[str, float]
    params: dict
    cohort: str = ""
    audit: bool = False

    @property
    def ended(self) -> bool:
        return self.status in ENDED


@dataclasses.dataclass(frozen=True)
class ConfigOutcome:
    """A configuration as the finished search classified it (its row of ``trials.parquet``): what
    the trackers are completed with after the search, test accuracy included."""

    config: str
    trials: tuple[str, ...]
    status: str
    tasks: int
    objective_by_task: tuple[float, ...]
    metrics: dict[str, float]
    params: dict
    test: dict[str, float]
    cohort: str = ""
    audit: bool = False


@dataclasses.dataclass(frozen=True)
class SearchOutcome:
    """The finished search: every configuration, the files that go with the parent run and its
    summary numbers."""

    configs: tuple[ConfigOutcome, ...]
    artifacts: tuple[str, ...]  # local paths or URIs
    summary: dict[str, float]


def summary_metrics(summary: dict) -> dict[str, float]:
    """The validation metrics a configuration's summary carries: the objective, the validation loss,
    and per setting the mean over the tasks seen and each task's accuracy."""
    out = {}
    if summary.get(OBJECTIVE) is not None:
        out[OBJECTIVE] = float(summary[OBJECTIVE])
    if summary.get(VAL_LOSS) is not None:
        out[VAL_LOSS] = float(summary[VAL_LOSS])
    for setting, accuracies in (summary.get(VAL_BY_TASK) or {}).items():
        values = [float(a) for a in accuracies if a is not None]
        if values:
            out[f"val_{setting}"] = sum(values) / len(values)
        for j, value in enumerate(accuracies, start=1):
            if value is not None:
                out[f"val_{setting}_task{j}"] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def trial_configurations(trial_id: str, trial_config: dict | None) -> list[tuple[str, dict, bool]]:
    """(id, hyperparameters, audit mark) of every configuration a trial trains, as its config lists
    them: a cohort's list (ids :func:`raycl.vocabulary.config_id` of the trial and the index), or a
    job's entries, each with its ``id``, ``params`` and ``audit``."""
    trial_config = trial_config or {}
    job = trial_config.get("job")
    if isinstance(job, dict) and isinstance(job.get("configs"), list):
        return [(str(c.get("id")), dict(c.get("params") or {}), bool(c.get(AUDIT))) for c in job["configs"]]
    configs = list(trial_config.get(COHORT) or [])
    audit = list(trial_config.get(AUDIT) or [])
    return [(config_id(trial_id, i, len(configs)), dict(c), bool(audit[i]) if i < len(audit) else False)
            for i, c in enumerate(configs)]


def config_events(trial_id: str, trial_config: dict | None, result: dict) -> list[ConfigEvent]:
    """The configuration events of one Tune result of trial ``trial_id``: one per configuration the
    result summarises (``result["configs"]``). A summary's ``id`` names its configuration where it
    has one; otherwise its key does, an index into the trial's cohort (the id a cohort's
    configuration has always had, :func:`raycl.vocabulary.config_id` of the trial and the index)
    or a configuration's id itself. Its hyperparameters are the summary's ``config`` where given,
    else the trial's entry for it (:func:`trial_configurations`)."""
    members = trial_configurations(trial_id, trial_config)
    by_id = {name: (params, audit) for name, params, audit in members}
    summaries = config_summaries(result)
    size = len(members) or len(summaries)
    events = []
    for key, summary in sorted(summaries.items(), key=lambda item: (len(item[0]), item[0])):
        if summary.get("id") is not None:
            name = str(summary["id"])
        elif key.isdigit() and key not in by_id and int(key) < size:
            name = members[int(key)][0] if members else config_id(trial_id, int(key), size)
        else:
            name = key
        params, audited = by_id.get(name, ({}, False))
        events.append(ConfigEvent(config=name, trial=trial_id, task=int(summary.get(TASK) or 0),
                                  status=str(summary.get("status") or Status.RUNNING),
                                  metrics=summary_metrics(summary), params=dict(summary.get("config") or params),
                                  cohort=str(summary.get(COHORT) or trial_id),
                                  audit=bool(summary.get(AUDIT, audited))))
    return events


def ended_events(last: list[ConfigEvent], final_task: int, errored: bool) -> list[ConfigEvent]:
    """The configurations of ``last`` (a cohort trial's last events) still running when their trial
    ended, with the status that ending gives them (:func:`raycl.vocabulary.ended_status`)."""
    return [dataclasses.replace(e, metrics={}, status=str(ended_status(e.status, e.task, final_task, errored)))
            for e in last if e.status == Status.RUNNING]


def outcomes(report) -> tuple[ConfigOutcome, ...]:
    """Every configuration of a finished stream search's report (:class:`raycl.tune.export.SearchReport`),
    as its trials table holds it."""
    out = []
    for record in report.trials:
        metrics = {k: float(v) for k, v in record.last_metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                   and (k == OBJECTIVE or k == VAL_LOSS or re.fullmatch(r"val_[a-z_]+?(_task\d+)?", k))
                   and not k.endswith(("_learning_acc", "_bti"))}
        test = {f"test_{s}": sum(v) / len(v) for s, v in (record.test or {}).items() if v}
        trials = tuple(getattr(record, "trials", None) or (record.cohort,))
        out.append(ConfigOutcome(config=record.trial_id, trials=trials, status=str(record.status),
                                 tasks=int(record.tasks_trained),
                                 objective_by_task=tuple(float(v) for v in record.objective_by_task),
                                 metrics=metrics, params=dict(record.config), test=test, cohort=record.cohort,
                                 audit=bool(record.audit)))
    return tuple(out)
