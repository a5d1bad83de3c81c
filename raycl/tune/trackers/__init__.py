"""Experiment trackers: MLflow, Weights & Biases and TensorBoard, one run per configuration.

``--tracker mlflow[:URI]`` and ``--tracker wandb[:PROJECT]`` (repeatable) log a stream search live,
from the driver: a parent run for the search and one run per configuration (not per Tune trial,
which is a cohort of configurations), tagged, with its hyperparameters, its validation metrics one
step per task, its final status, and after the search its test accuracy and the search's files.
TensorBoard gets a run folder per configuration in every search with a local experiment folder.

How: :class:`TrackerCallback` (a Tune callback) turns each result into configuration events with
:func:`raycl.tune.trackers.events.config_events`, the one adapter from Tune's results, and hands
them to one background worker per tracker (:mod:`raycl.tune.trackers.queue`); the backends
(:mod:`.mlflow`, :mod:`.wandb`, :mod:`.tensorboard`) only ever see those events.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging

from ray.tune import Callback

from raycl import storage
from raycl.errors import RayclError, unknown
from raycl.tune.trackers.events import (ConfigEvent, SearchInfo, SearchOutcome, config_events, ended_events,
                                        outcomes)
from raycl.tune.trackers.queue import RunRegistry, TrackerWorker
from raycl.vocabulary import COHORT, TENSORBOARD_FOLDER

log = logging.getLogger("raycl.tune.trackers")

# --tracker KIND[:TARGET]: what TARGET is, and the package (and raycl extra) each kind needs.
TRACKER_KINDS = {"mlflow": ("URI", "mlflow"), "wandb": ("PROJECT", "wandb")}
# At the end of a search the driver waits for each tracker while it makes progress, and gives up
# on one that has done nothing for this many seconds.
STALLED_AFTER_S = 30.0


@dataclasses.dataclass(frozen=True)
class TrackerSpec:
    kind: str
    target: str | None = None  # mlflow: the tracking URI; wandb: the project; tensorboard: the folder

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target}"


def parse_tracker(text: str) -> TrackerSpec:
    """``mlflow``, ``mlflow:URI``, ``wandb`` or ``wandb:PROJECT``; RayclError otherwise."""
    kind, colon, target = str(text).partition(":")
    if kind not in TRACKER_KINDS:
        raise unknown("tracker", kind, [f"{k}[:{what}]" for k, (what, _) in TRACKER_KINDS.items()],
                      where=f"--tracker {text}")
    if colon and not target:
        raise RayclError(f"--tracker {text}: nothing after the colon; give {kind}:{TRACKER_KINDS[kind][0]} or "
                         f"{kind} alone")
    return TrackerSpec(kind, target or None)


def check_trackers(texts) -> tuple[TrackerSpec, ...]:
    """The ``--tracker`` values, each parsed, its package installed, none twice."""
    specs = tuple(parse_tracker(t) for t in texts or ())
    for spec in specs:
        package = TRACKER_KINDS[spec.kind][1]
        if importlib.util.find_spec(package) is None:
            raise RayclError(f"--tracker {spec}: {package} is not installed; pip install 'raycl[{package}]'")
    seen = [str(s) for s in specs]
    twice = next((s for s in seen if seen.count(s) > 1), None)
    if twice:
        raise RayclError(f"--tracker {twice} is given twice")
    return specs


def _backend(spec: TrackerSpec):
    if spec.kind == "mlflow":
        from raycl.tune.trackers.mlflow import MlflowBackend

        return MlflowBackend(spec.target)
    if spec.kind == "wandb":
        from raycl.tune.trackers.wandb import WandbBackend

        return WandbBackend(spec.target)
    from raycl.tune.trackers.tensorboard import TensorboardBackend

    return TensorboardBackend(spec.target)


class SearchTrackers:
    """The trackers of one search: a worker per tracker over one record of their runs."""

    def __init__(self, specs: tuple[TrackerSpec, ...], info: SearchInfo, stalled_after: float = STALLED_AFTER_S):
        self.info = info
        self.stalled_after = stalled_after
        self.registry = RunRegistry(info.experiment_dir)
        self.workers = [TrackerWorker(_backend(spec), info, self.registry, str(spec)) for spec in specs]
        self._callback = TrackerCallback(self)
        self._closed = False

    def callback(self) -> TrackerCallback:
        """The Tune callback that feeds these trackers."""
        return self._callback

    @property
    def writes_tensorboard(self) -> bool:
        return any(worker.backend.kind == "tensorboard" for worker in self.workers)

    def take_over(self, tuner) -> None:
        """Make a restored Tuner (``--resume``) feed these trackers: Tune restores the callbacks the
        search was started with, so its tracker callback (if any) is replaced by this one."""
        local = getattr(tuner, "_local_tuner", None)  # where Ray keeps a restored search's run config
        run_config = local.get_run_config() if local is not None else None
        if run_config is None:
            log.info("the trackers cannot follow this resumed search live; they complete its runs at the end")
            return
        kept = [c for c in run_config.callbacks or [] if not isinstance(c, TrackerCallback)]
        run_config.callbacks = [*kept, self._callback]

    def submit(self, events: list[ConfigEvent]) -> None:
        for worker in self.workers:
            worker.submit(events)

    def finish(self, report) -> None:
        """Complete every run from the finished stream search's ``report`` (its trials table's
        configurations, the best-args file and the table as the parent run's files) and close."""
        # A table search has a report per buffer size and one trials table.
        parts = {f"_b{size}": r for size, r in report.reports.items()} if hasattr(report, "reports") else {"": report}
        artifacts = [str(report.parquet_path)]
        summary, configs = {}, []
        for suffix, part in parts.items():
            summary.update({f"configurations_{s}{suffix}": float(n) for s, n in part.counts.items()})
            summary[f"task_fraction{suffix}"] = float(part.task_fraction)
            if part.best is not None:
                summary[f"best_objective{suffix}"] = float(part.best.objective)
            if part.best_args_path:
                artifacts.append(str(part.best_args_path))
            configs.extend(outcomes(part))
        self._stop(SearchOutcome(tuple(configs), tuple(dict.fromkeys(artifacts)), summary))

    def close(self) -> None:
        """Send what the trackers hold and release them (runs not ended stay open for ``--resume``)."""
        self._stop(None)

    def _stop(self, outcome: SearchOutcome | None) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self.workers:
            worker.stop(outcome)
        for worker in self.workers:
            if not worker.wait(self.stalled_after):
                if not worker.warned:
                    worker.warned = True
                    log.warning("warning: tracker %s (%s) did nothing for %.0f s; its runs stay as they are and "
                                "the search's own files are the record", worker.backend.kind, worker.backend.where,
                                self.stalled_after)
            elif outcome is not None and not worker.failed and worker.backend.kind != "tensorboard":
                log.info("tracker %s (%s): %d configuration runs under the search's run %s", worker.backend.kind,
                         worker.backend.where, len(worker.runs), worker.runs.parent)


class TrackerCallback(Callback):
    """Feeds a search's trackers from Tune's results: each result's configuration events, and when a
    trial ends the status its ending gives the configurations it was still training."""

    def __init__(self, trackers: SearchTrackers):
        self.trackers = trackers
        self.final_task = trackers.info.final_task
        self.last: dict[str, list[ConfigEvent]] = {}

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; the trackers stay with this process (a
        # resumed search hands its own to the callbacks it restores: SearchTrackers.take_over).
        return {"final_task": self.final_task}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, trackers=None, last={})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.trackers is None:
            return
        events = config_events(trial.trial_id, trial.config, result)
        if COHORT in (trial.config or {}):
            # A cohort's configurations end with their trial; a configuration that trains in several
            # trials (a promotion's job) may wait at a rung when one ends, and is told its status.
            self.last[trial.trial_id] = events
        self.trackers.submit(events)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, errored=False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, errored=True)

    def _end(self, trial, errored: bool) -> None:
        last = self.last.pop(trial.trial_id, [])
        if self.trackers is not None:
            self.trackers.submit(ended_events(last, self.final_task, errored))


def search_trackers(options, space, final_task: int) -> SearchTrackers | None:
    """The trackers of a stream search: its ``--tracker`` ones, and TensorBoard in a local experiment
    folder (None when there are none)."""
    specs = list(check_trackers(options.trackers))
    if not storage.is_uri(options.experiment_dir):
        specs.append(TrackerSpec("tensorboard", storage.join(options.experiment_dir, TENSORBOARD_FOLDER)))
    if not specs:
        return None
    buffer_size = ",".join(map(str, options.buffer_sizes)) if options.table else options.buffer_size
    if buffer_size is None:
        from raycl.methods import get_method

        buffer_size = getattr(get_method(options.method).Config(), "buffer_size", None)
    info = SearchInfo(experiment=options.experiment_name, experiment_dir=options.experiment_dir,
                      method=options.method, dataset=options.dataset, buffer_size=buffer_size,
                      protocol=options.protocol, samples=options.samples, population=options.population,
                      final_task=final_task, space_source=space.source)
    return SearchTrackers(tuple(specs), info)


__all__ = ["TRACKER_KINDS", "ConfigEvent", "SearchInfo", "SearchTrackers", "TrackerCallback",
           "TrackerSpec", "check_trackers", "config_events", "parse_tracker", "search_trackers"]
