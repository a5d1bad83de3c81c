"""MLflow: a parent run for the search and, nested under it, one run per configuration.

Any tracking URI MLflow takes works (a server's ``http://`` address, ``sqlite:///file.db``, a
``file:`` store); without one, MLflow's own default (``MLFLOW_TRACKING_URI``, else its local store).
The experiment is the search's name. Every run is tagged ``raycl.*`` (method, dataset, buffer size,
protocol, experiment; a configuration's run also its trials, cohort, audit mark and status); a
configuration's hyperparameters are its parameters, its validation metrics one step per task
trained; its status ends the run (completed: FINISHED, pruned: KILLED, diverged or errored: FAILED).
Test accuracy is logged after the search, for the completed configurations only; the best-args file
and the trials table are the parent run's artifacts.

Calls go through :class:`mlflow.tracking.MlflowClient` (no active-run state in the process). Its
HTTP requests are given a short timeout and no retry unless the environment sets its own
(``MLFLOW_HTTP_REQUEST_TIMEOUT``, ``MLFLOW_HTTP_REQUEST_MAX_RETRIES``): the worker retries itself.
"""

from __future__ import annotations

import os
import time

from raycl.tune.trackers.events import SearchInfo, SearchOutcome
from raycl.tune.trackers.queue import ConfigUpdate, Runs, artifact_files, outcome_update, unlogged, up_to_date
from raycl.vocabulary import Status

RUN_STATUS = {Status.COMPLETED: "FINISHED", Status.PRUNED: "KILLED", Status.DIVERGED: "FAILED",
              Status.ERRORED: "FAILED"}
# MLflow's limits per log_batch call.
BATCH_METRICS, BATCH_PARAMS, BATCH_TAGS = 1000, 100, 100
CLIENT_ENVIRONMENT = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                      "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class MlflowBackend:
    kind = "mlflow"

    def __init__(self, uri: str | None):
        for name, value in CLIENT_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.where = uri or "MLflow's default tracking URI"
        self.client = MlflowClient(tracking_uri=uri) if uri else MlflowClient()
        self.experiment_id: str | None = None
        self.info: SearchInfo | None = None

    # ----- the parent run -----------------------------------------------------------------------------
    def open(self, info: SearchInfo, runs: Runs) -> None:
        self.info = info
        experiment = self.client.get_experiment_by_name(info.experiment)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(info.experiment)
        if runs.parent is None:
            tags = {**self._tags(info.tags()), "raycl.run": "search"}
            parent = self.client.create_run(self.experiment_id, run_name=info.experiment, tags=tags)
            runs.parent = parent.info.run_id
            self._log(runs.parent, params={"samples": info.samples, "population": info.population,
                                           "search_space": info.space_source, "experiment_dir": info.experiment_dir})
        elif self.client.get_run(runs.parent).info.status != "RUNNING":  # a resumed search
            self.client.update_run(runs.parent, status="RUNNING")

    # ----- configurations -----------------------------------------------------------------------------
    def write(self, updates: list[ConfigUpdate], runs: Runs) -> None:
        for update in updates:
            self._write(update, runs)

    def _write(self, update: ConfigUpdate, runs: Runs) -> None:
        entry = runs.run(update.config) or runs.set(update.config)
        run = entry["run"]
        if run is None:
            tags = {**self._tags(self.info.tags()), "mlflow.parentRunId": runs.parent, "raycl.run": "configuration"}
            run = self.client.create_run(self.experiment_id, run_name=update.config, tags=tags).info.run_id
            entry = runs.set(update.config, run=run)
        elif entry["status"] is not None and update.status == Status.RUNNING:
            self.client.update_run(run, status="RUNNING")  # it trains again (promoted, or resumed)
            entry = runs.set(update.config, status=None)
        trials = list(dict.fromkeys([*entry["trials"], *update.trials]))
        # Its cohort is the trial it first trained in (a promoted configuration trains in several).
        tags = {"raycl.cohort": trials[0] if trials else update.cohort, "raycl.audit": str(update.audit).lower(),
                "raycl.status": str(update.status)}
        if trials != entry["trials"]:
            tags["raycl.trials"] = ",".join(trials)
        now = int(time.time() * 1000)
        steps = unlogged(entry, update.steps)
        metrics = [(name, value, now, step) for step in steps for name, value in update.steps[step].items()]
        self._log(run, params=None if entry["params"] else update.params, tags=tags, metrics=metrics)
        entry = runs.set(update.config, params=True, trials=trials, steps=sorted({*entry["steps"], *steps}))
        if update.status in RUN_STATUS and entry["status"] != update.status:
            self.client.set_terminated(run, status=RUN_STATUS[Status(update.status)])
            runs.set(update.config, status=str(update.status))

    def _log(self, run: str, params: dict | None = None, tags: dict | None = None,
             metrics: list[tuple] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        params = [Param(str(k), str(v)) for k, v in (params or {}).items()]
        tags = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        metrics = [Metric(k, float(v), t, s) for k, v, t, s in metrics or []]
        while params or tags or metrics:
            self.client.log_batch(run, metrics=metrics[:BATCH_METRICS], params=params[:BATCH_PARAMS],
                                  tags=tags[:BATCH_TAGS])
            params, tags, metrics = params[BATCH_PARAMS:], tags[BATCH_TAGS:], metrics[BATCH_METRICS:]

    @staticmethod
    def _tags(values: dict) -> dict:
        return {f"raycl.{k}": str(v) for k, v in values.items()}

    # ----- after the search ---------------------------------------------------------------------------
    def finish(self, outcome: SearchOutcome, runs: Runs) -> None:
        for config in outcome.configs:
            entry = runs.run(config.config)
            if not up_to_date(entry, config):
                self._write(outcome_update(config, entry), runs)
                entry = runs.run(config.config)
            if config.status == Status.COMPLETED and config.test and not entry["tested"]:
                now = int(time.time() * 1000)
                self._log(entry["run"], metrics=[(k, v, now, config.tasks) for k, v in config.test.items()])
                runs.set(config.config, tested=True)
        self._log(runs.parent, metrics=[(k, v, int(time.time() * 1000), 0) for k, v in outcome.summary.items()])
        with artifact_files(outcome.artifacts) as files:
            for path in files:
                self.client.log_artifact(runs.parent, str(path))
        self.client.set_terminated(runs.parent, status="FINISHED")

    def close(self, runs: Runs) -> None:
        pass  # a client holds nothing open; runs not ended stay RUNNING for a resumed search
