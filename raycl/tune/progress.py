"""Compact progress of a running search: one status line and, now and then, the top configurations.

A Tune callback that counts configurations (a trial is a cohort of them) as finished, running,
pruned and diverged out of the samples, with the best completed objective so far, the elapsed
time and an estimate of what is left. On a terminal the status is one line tqdm redraws; in a
log file or CI it is a plain line every ``interval`` seconds. The table of the best completed
configurations is printed when it changes, at most every ``table_interval`` seconds.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sys
import time

from ray.tune import Callback
from tqdm import tqdm

from raycl.tune.tables import config_table
from raycl.vocabulary import COHORT, JOB, OBJECTIVE, TASK, Status, config_id, config_summaries, ended_status

TOP = 5
# A journal in object storage cannot be read from where the last read stopped, only whole: at most
# this often (seconds), and once more when the search ends.
REMOTE_JOURNAL_INTERVAL = 10.0


def _terminal_width(stream) -> int:
    """Columns of the terminal ``stream`` writes to; 0 when it is not one (or one without a size,
    where a redrawn line would show nothing)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def _ranked(record: tuple[str, int, float | None, dict]) -> bool:
    """Whether a configuration's record has a place among the completed ones."""
    objective = record[2]
    return record[0] == Status.COMPLETED and objective is not None and not math.isnan(objective)


class SearchTally(Callback):
    """Counts a running search's configurations from Tune's hooks: a trial is a cohort of them, or in
    the promotion form a job of them (then a configuration waiting at a rung is still running, and
    the decisions to prune are read from the search's ``journal`` as it grows).

    Tune calls the progress at every step: the counts by status and the completed configurations in
    order of objective are kept up to date as configurations change, so that reading them costs
    nothing that grows with the search."""

    def __init__(self, samples: int, final_task: int, journal: str | None = None):
        self.samples = samples
        self.final_task = final_task
        self.journal = journal
        self._journal_segment, self._journal_offset = 0, 0  # in an object store, within a segment
        self._remote_read_at = -math.inf
        # configuration id -> (status, tasks, objective, config)
        self.configs: dict[str, tuple[str, int, float | None, dict]] = {}
        self._counts = {Status.COMPLETED: 0, Status.RUNNING: 0, Status.PRUNED: 0, Status.DIVERGED: 0,
                        Status.ERRORED: 0}
        self._arrival: dict[str, int] = {}  # configuration id -> when it was first seen (ties keep this order)
        self._ranked: list[tuple[float, int, str]] = []  # completed ones: (-objective, arrival, id), best first

    def _update(self, key: str, record: tuple[str, int, float | None, dict]) -> None:
        """Record ``key``'s (status, tasks, objective, config), keeping the counts and the ranking."""
        old = self.configs.get(key)
        if old is not None:
            self._counts[old[0]] -= 1
            if _ranked(old):
                del self._ranked[bisect.bisect_left(self._ranked, (-old[2], self._arrival[key], key))]
        else:
            self._arrival[key] = len(self._arrival)
        self.configs[key] = record
        self._counts[record[0]] = self._counts.get(record[0], 0) + 1
        if _ranked(record):
            bisect.insort(self._ranked, (-record[2], self._arrival[key], key))

    @staticmethod
    def _members(trial) -> list[tuple[str, dict]]:
        """(configuration id, values) of every configuration a trial trains."""
        config = trial.config or {}
        if JOB in config:
            return [(c["id"], c["params"]) for c in config[JOB]["configs"]]
        configs = config.get(COHORT) or []
        return [(config_id(trial.trial_id, i, len(configs)), c) for i, c in enumerate(configs)]

    # ----- Tune's hooks -----------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        for key, values in self._members(trial):
            status, tasks, objective, _ = self.configs.get(key, (Status.RUNNING, 0, None, values))
            self._update(key, (Status.RUNNING, tasks, objective, values))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        members = self._members(trial)
        keys = [key for key, _ in members]
        values = dict(members)
        for name, summary in config_summaries(result).items():
            key = name if name in values else keys[int(name)] if name.isdigit() and int(name) < len(keys) else name
            objective = summary.get(OBJECTIVE)
            self._update(key, (summary.get("status", Status.RUNNING), int(summary.get(TASK) or 0),
                            None if objective is None else float(objective), values.get(key, {})))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial, errored=False)

    def on_experiment_end(self, trials, **info):
        self._remote_read_at = -math.inf  # the last counts read every decision

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, errored=True)

    def _end(self, trial, errored: bool) -> None:
        job = JOB in (trial.config or {})
        for key, _ in self._members(trial):
            status, tasks, objective, config = self.configs.get(key, (Status.RUNNING, 0, None, {}))
            if job and not errored and status == Status.RUNNING and tasks < self.final_task:
                continue  # waits at its rung
            self._update(key, (ended_status(status, tasks, self.final_task, errored), tasks, objective, config))

    def _read_journal(self) -> None:
        """Apply the pruning decisions recorded since the last read."""
        if not self.journal:
            return
        from raycl import storage

        if storage.is_uri(self.journal):
            if time.monotonic() - self._remote_read_at < REMOTE_JOURNAL_INTERVAL:
                return
            self._remote_read_at = time.monotonic()
            from raycl.tune.journal import segments

            # An object store keeps the journal in segments: every one but the last is read once.
            parts = segments(self.journal)
            for index in range(self._journal_segment, len(parts)):
                if index > self._journal_segment:
                    self._journal_segment, self._journal_offset = index, 0
                data = storage.read_bytes(parts[index]) or b""
                self._journal_offset += self._apply(data[self._journal_offset:])
            return
        try:
            with open(self.journal, "rb") as stream:
                stream.seek(self._journal_offset)
                fresh = stream.read()
        except FileNotFoundError:
            return
        self._journal_offset += self._apply(fresh)

    def _apply(self, fresh: bytes) -> int:
        """Apply the pruning events among ``fresh``'s complete lines; returns the bytes they take."""
        complete = fresh[: fresh.rfind(b"\n") + 1]
        for line in complete.decode(errors="replace").splitlines():
            if '"pruned"' not in line:
                continue
            event = json.loads(line)
            key = event.get("id")
            if event.get("event") == "pruned" and key in self.configs:
                _, tasks, objective, config = self.configs[key]
                self._update(key, (Status.PRUNED, tasks, objective, config))
        return len(complete)

    # ----- state ------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        self._read_journal()
        return dict(self._counts)

    def completed(self, limit: int | None = None) -> list[tuple[float, str, dict]]:
        """(objective, id, config) of the completed configurations, best first (the first ``limit``)."""
        ranked = self._ranked if limit is None else self._ranked[:limit]
        return [(-negative, key, self.configs[key][3]) for negative, _, key in ranked]


class SearchMetrics(SearchTally):
    """The search's progress as Ray metrics (``ray_raycl_configurations`` by status and
    ``ray_raycl_best_objective``, tagged with the experiment), which every Ray node exports on its
    metrics endpoint for Prometheus; set at most every ``interval`` seconds."""

    def __init__(self, samples: int, final_task: int, experiment: str, interval: float = 5.0,
                 journal: str | None = None):
        super().__init__(samples, final_task, journal)
        self.experiment = experiment
        self.interval = interval
        self._set = float("-inf")
        self._gauges = None

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_gauges"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _gauges=None)

    def on_step_end(self, iteration, trials, **info):
        if time.monotonic() - self._set >= self.interval:
            self.record()

    def on_experiment_end(self, trials, **info):
        super().on_experiment_end(trials, **info)
        self.record()

    def record(self) -> None:
        from ray.util.metrics import Gauge

        if self._gauges is None:
            self._gauges = (
                Gauge("raycl_configurations", "configurations of a raycl search by status", ("experiment", "status")),
                Gauge("raycl_best_objective", "best completed objective of a raycl search", ("experiment",)),
            )
        configurations, best = self._gauges
        counts = self.counts()
        counts["pending"] = max(0, self.samples - sum(counts.values()))
        for status, count in counts.items():
            configurations.set(count, tags={"experiment": self.experiment, "status": status})
        top = self.completed(1)
        if top:
            best.set(top[0][0], tags={"experiment": self.experiment})
        self._set = time.monotonic()


class SearchProgress(SearchTally):
    def __init__(self, samples: int, final_task: int, searched: list[str], stream=None, interval: float = 30.0,
                 table_interval: float = 60.0, journal: str | None = None):
        super().__init__(samples, final_task, journal)
        self.searched = searched
        self.start = time.monotonic()
        self.stream = stream or sys.stdout
        self.interval = interval
        self.table_interval = table_interval
        self._printed = self._table_printed = float("-inf")
        self._table_shown: list = []
        self._bar = None

    def __getstate__(self) -> dict:
        # Tune pickles its callbacks with the experiment; the terminal stays with this process.
        return {k: v for k, v in self.__dict__.items() if k not in ("stream", "_bar")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, stream=sys.stdout, _bar=None)

    @property
    def bar(self) -> tqdm | None:
        """The redrawn status line, on a terminal only."""
        if self._bar is None and _terminal_width(self.stream) > 0:
            self._bar = tqdm(total=self.samples, file=self.stream, dynamic_ncols=True, leave=False,
                             bar_format="{desc}")
        return self._bar

    # ----- Tune's hooks -----------------------------------------------------------------------------
    def on_step_end(self, iteration, trials, **info):
        self.show()

    def on_experiment_end(self, trials, **info):
        super().on_experiment_end(trials, **info)
        self.show(force=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._write(self.status_line())  # the redrawn line is cleared: leave its last state

    # ----- output -----------------------------------------------------------------------------------
    def status_line(self) -> str:
        counts = self.counts()
        finished = sum(v for k, v in counts.items() if k != Status.RUNNING)
        elapsed = time.monotonic() - self.start
        line = (f"[{_duration(elapsed)}] {finished}/{self.samples} configurations finished "
                f"({counts[Status.COMPLETED]} completed, {counts[Status.PRUNED]} pruned, {counts[Status.DIVERGED]} diverged"
                + (f", {counts[Status.ERRORED]} errored" if counts[Status.ERRORED] else "")
                + f"), {counts[Status.RUNNING]} running")
        best = self.completed(1)
        if best:
            line += f"; best {best[0][0]:.2f} ({best[0][1]})"
        if 0 < finished < self.samples:
            line += f"; about {_duration(elapsed * (self.samples - finished) / finished)} left"
        return line

    def table(self) -> str:
        top = self.completed(TOP)
        return config_table(["top configurations", "objective"], [[name, f"{objective:.2f}"] for objective, name, _ in top],
                            [config for *_, config in top], self.searched)

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        top = [name for _, name, _ in self.completed(TOP)]
        if top and top != self._table_shown and (force or now - self._table_printed >= self.table_interval):
            self._write(self.table())
            self._table_shown, self._table_printed = top, now
        if self.bar is not None:
            self.bar.set_description_str(self.status_line())
        elif force or now - self._printed >= self.interval:
            self._write(self.status_line())
            self._printed = now

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

