"""Weights & Biases: one run per configuration, grouped with the search's own run.

The project is ``--tracker wandb:PROJECT``, else ``WANDB_PROJECT``, else ``raycl``; the entity,
mode (``WANDB_MODE=offline`` writes local run files for ``wandb sync``) and folder (``WANDB_DIR``)
are W&B's own settings. Every run of a search is in the group ``<experiment>-<search run id>``: the
search's run (job type ``search``) and one run per configuration (job type ``configuration``). A
configuration's run has its hyperparameters and, under ``raycl``, the method, dataset, buffer size,
protocol, trials, cohort and audit mark as its config; its validation metrics one step per task
trained; its status in its summary and tags, and as the run's end (diverged or errored: failed).
A completed configuration's run stays open until the search ends, to take its test accuracy
(summary ``test_<setting>``); the best-args file and trials table are an artifact of the search's run.
"""

from __future__ import annotations

import os
import uuid

from raycl.tune.trackers.events import SearchInfo, SearchOutcome
from raycl.tune.trackers.queue import ConfigUpdate, Runs, artifact_files, outcome_update, unlogged, up_to_date
from raycl.vocabulary import Status

FAILED = (Status.DIVERGED, Status.ERRORED)


class WandbBackend:
    kind = "wandb"

    def __init__(self, project: str | None):
        import wandb

        self.wandb = wandb
        self.project = project or os.environ.get("WANDB_PROJECT") or "raycl"
        # Read now and passed to every run: W&B reads its environment once per process, and a process
        # may run several searches.
        self.mode, self.dir = os.environ.get("WANDB_MODE"), os.environ.get("WANDB_DIR")
        self.where = f"project {self.project}, {self.mode or 'online'}"
        self.info: SearchInfo | None = None
        self.search_run = None
        self.open_runs: dict[str, object] = {}  # configuration id -> its open W&B run

    def _settings(self):
        # Many runs in one process that is not theirs: no console capture, no system metrics, no code.
        return self.wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                   x_disable_machine_info=True, save_code=False, disable_git=True,
                                   disable_job_creation=True)

    def _init(self, run_id: str, name: str, job_type: str, config: dict, tags: list[str]):
        return self.wandb.init(project=self.project, group=self.group, name=name, id=run_id, job_type=job_type,
                               config=config, tags=tags, resume="allow", reinit="create_new", mode=self.mode,
                               dir=self.dir, settings=self._settings())

    @property
    def group(self) -> str:
        return f"{self.info.experiment}-{self._parent_id}"

    # ----- the search's run ---------------------------------------------------------------------------
    def open(self, info: SearchInfo, runs: Runs) -> None:
        self.info = info
        parent = runs.parent or uuid.uuid4().hex[:12]
        self._parent_id = parent
        config = {"raycl": {**info.tags(), "samples": info.samples, "population": info.population,
                            "search_space": info.space_source, "experiment_dir": info.experiment_dir}}
        self.search_run = self._init(parent, info.experiment, "search", config, self._tags())
        runs.parent = parent

    def _tags(self) -> list[str]:
        info = self.info
        return [info.method, info.dataset, info.protocol] + ([] if info.buffer_size is None
                                                             else [f"buffer {info.buffer_size}"])

    # ----- configurations -----------------------------------------------------------------------------
    def write(self, updates: list[ConfigUpdate], runs: Runs) -> None:
        for update in updates:
            self._write(update, runs)

    def _run(self, update: ConfigUpdate, runs: Runs):
        """The configuration's open run: opened now if need be, a new one or its earlier one resumed."""
        run = self.open_runs.get(update.config)
        if run is None:
            entry = runs.run(update.config)
            run_id = entry["run"] if entry and entry["run"] else uuid.uuid4().hex[:12]
            config = {**update.params, "raycl": self._raycl(update, entry["trials"] if entry else [])}
            run = self._init(run_id, update.config, "configuration", config, self._tags())
            self.open_runs[update.config] = run
            runs.set(update.config, run=run_id, params=True)
        return run

    def _raycl(self, update: ConfigUpdate, trials: list[str]) -> dict:
        trials = list(dict.fromkeys([*trials, *update.trials]))
        # Its cohort is the trial it first trained in (a promoted configuration trains in several).
        return {**self.info.tags(), "trials": trials, "cohort": trials[0] if trials else update.cohort,
                "audit": update.audit}

    def _write(self, update: ConfigUpdate, runs: Runs, keep_completed: bool = True) -> None:
        run = self._run(update, runs)
        entry = runs.run(update.config)
        raycl = self._raycl(update, entry["trials"])
        if raycl["trials"] != entry["trials"]:
            run.config.update({"raycl": raycl}, allow_val_change=True)
        steps = unlogged(entry, update.steps, in_order=True)  # W&B drops a step below its last
        for step in steps:
            run.log(update.steps[step], step=step)
        run.summary["status"] = str(update.status)
        runs.set(update.config, trials=raycl["trials"], steps=sorted({*entry["steps"], *steps}),
                 status=None if update.status == Status.RUNNING else str(update.status))
        if update.status != Status.RUNNING and not (keep_completed and update.status == Status.COMPLETED):
            self._end(update.config, update.status)

    def _end(self, config: str, status: str) -> None:
        run = self.open_runs.pop(config)
        run.tags = tuple(run.tags) + (str(status),)
        run.finish(exit_code=1 if status in FAILED else 0)

    # ----- after the search ---------------------------------------------------------------------------
    def finish(self, outcome: SearchOutcome, runs: Runs) -> None:
        for config in outcome.configs:
            entry = runs.run(config.config)
            tested = config.status == Status.COMPLETED and config.test and not (entry and entry["tested"])
            if up_to_date(entry, config, in_order=True) and not tested and config.config not in self.open_runs:
                continue
            self._write(outcome_update(config, entry), runs)
            if tested:
                self.open_runs[config.config].summary.update(config.test)
                runs.set(config.config, tested=True)
            if config.config in self.open_runs:
                self._end(config.config, config.status)
        self.search_run.summary.update(outcome.summary)
        artifact = self.wandb.Artifact(f"{self.info.experiment}-outputs", type="search")
        with artifact_files(outcome.artifacts) as files:
            for path in files:
                artifact.add_file(str(path), name=path.name)
            self.search_run.log_artifact(artifact)
        self.search_run.finish()
        self.search_run = None

    def close(self, runs: Runs) -> None:
        """Runs still open end here (an interrupted search's running configurations, which a resumed
        search takes up again)."""
        for config in list(self.open_runs):
            run = self.open_runs.pop(config)
            run.mark_preempting()
            run.finish()
        if self.search_run is not None:
            self.search_run.mark_preempting()
            self.search_run.finish()
            self.search_run = None
