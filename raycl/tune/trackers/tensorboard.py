"""TensorBoard: one run folder per configuration, ``<folder>/<configuration id>/`` (by default the
experiment's ``tensorboard/`` folder), beside the per-trial logs Ray Tune writes.

A configuration's validation metrics are scalars, one step per task trained, its hyperparameters
and raycl tags one text entry; after the search its final status is a text entry and a completed
configuration's test accuracy scalars at its last task.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import yaml

from raycl.tune.trackers.events import SearchInfo, SearchOutcome
from raycl.tune.trackers.queue import ConfigUpdate, Runs, outcome_update, unlogged, up_to_date
from raycl.vocabulary import Status


# A writer holds a file, a pipe and a thread: a search of thousands of configurations waiting at
# rungs would run out of file descriptors with one open per configuration.
MAX_OPEN_WRITERS = 32


class TensorboardBackend:
    kind = "tensorboard"

    def __init__(self, folder: str, max_open: int = MAX_OPEN_WRITERS):
        self.folder = Path(folder)
        self.where = str(self.folder)
        self.info: SearchInfo | None = None
        self.max_open = max_open
        # configuration id -> its open SummaryWriter, the least recently written first
        self.writers: OrderedDict[str, object] = OrderedDict()
        self._opened: dict[str, int] = {}  # configuration id -> writers opened for it

    def open(self, info: SearchInfo, runs: Runs) -> None:
        self.info = info
        self.folder.mkdir(parents=True, exist_ok=True)
        runs.parent = str(self.folder)

    def _writer(self, config: str, runs: Runs):
        """``config``'s writer, opened again (a new event file in its folder) if it was closed to keep
        at most ``max_open`` open."""
        if config in self.writers:
            self.writers.move_to_end(config)
            return self.writers[config]
        from tensorboardX import SummaryWriter

        while len(self.writers) >= self.max_open:
            self._close(next(iter(self.writers)))
        opened = self._opened[config] = self._opened.get(config, 0) + 1
        # Event files are named by the second they were opened in: a suffix keeps a reopened writer
        # from writing over the file of the one before.
        self.writers[config] = SummaryWriter(str(self.folder / config), flush_secs=10,
                                             filename_suffix=f".{opened}")
        if not (runs.run(config) or {}).get("run"):
            runs.set(config, run=config)
        return self.writers[config]

    def write(self, updates: list[ConfigUpdate], runs: Runs) -> None:
        for update in updates:
            self._write(update, runs)

    def _write(self, update: ConfigUpdate, runs: Runs) -> None:
        writer = self._writer(update.config, runs)
        entry = runs.run(update.config)
        if not entry["params"]:
            text = yaml.safe_dump({"config": update.params, "raycl": {**self.info.tags(), "cohort": update.cohort,
                                                                      "audit": update.audit}}, sort_keys=True)
            writer.add_text("configuration", f"```\n{text}```", 0)
        trials = list(dict.fromkeys([*entry["trials"], *update.trials]))
        if trials != entry["trials"]:
            writer.add_text("trials", ", ".join(trials), max(entry["steps"], default=0))
        steps = unlogged(entry, update.steps)
        for step in steps:
            for name, value in update.steps[step].items():
                writer.add_scalar(name, value, step)
        entry = runs.set(update.config, params=True, trials=trials, steps=sorted({*entry["steps"], *steps}))
        if update.status != Status.RUNNING and entry["status"] != update.status:
            writer.add_text("status", str(update.status), max(entry["steps"], default=0))
            runs.set(update.config, status=str(update.status))
            self._close(update.config)

    def _close(self, config: str) -> None:
        writer = self.writers.pop(config, None)
        if writer is not None:
            writer.close()

    def finish(self, outcome: SearchOutcome, runs: Runs) -> None:
        for config in outcome.configs:
            entry = runs.run(config.config)
            tested = config.status == Status.COMPLETED and config.test and not (entry and entry["tested"])
            if not up_to_date(entry, config):
                self._write(outcome_update(config, entry), runs)
            if tested:
                writer = self._writer(config.config, runs)
                for name, value in config.test.items():
                    writer.add_scalar(name, value, config.tasks)
                runs.set(config.config, tested=True)
            self._close(config.config)

    def close(self, runs: Runs) -> None:
        for config in list(self.writers):
            self._close(config)
