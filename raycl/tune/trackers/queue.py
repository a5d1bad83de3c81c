"""The trackers' common machinery: a background worker per tracker, fed configuration events through
a queue, and the record of the runs each tracker holds.

The search's driver only puts events on a queue (:meth:`TrackerWorker.submit` never waits). Each
tracker's worker thread takes whatever has arrived, merges it per configuration (the latest status,
every task's metrics not yet logged) and hands it to its backend in one batch, at most every
``interval`` seconds. A call that fails (the tracker is down, refuses or times out) prints one
warning line for the whole search, keeps the batch, and is tried again later with a growing pause;
so a slow or absent tracker never stalls the search, and the runs catch up if it comes back. At the
end the worker is given the finished search (:class:`raycl.tune.trackers.events.SearchOutcome`)
and completes every run from it, waiting at most a bounded time.

The runs each tracker holds (its parent run, each configuration's run, the last task logged) are
kept in the experiment folder (``trackers.json``, written atomically), so ``--resume`` continues the
same runs without logging a task twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from raycl import storage
from raycl.errors import RayclError
from raycl.tune.trackers.events import ConfigEvent, ConfigOutcome, SearchInfo, SearchOutcome
from raycl.vocabulary import TRACKERS_FILE, Status

log = logging.getLogger("raycl.tune.trackers")

# Seconds between two batches a worker sends, and the first and longest pause after a failure.
BATCH_INTERVAL_S = 1.0
RETRY_FIRST_S = 5.0
RETRY_LONGEST_S = 60.0
# Seconds the registry of runs may go unsaved while runs change, at the least: saving rewrites the
# whole file, so the interval grows to SAVE_SHARE times the last save's duration, as Tune does for its
# experiment snapshots (a search of 10,000 configurations has a registry of megabytes).
SAVE_INTERVAL_S = 2.0
SAVE_SHARE = 20


@dataclasses.dataclass
class ConfigUpdate:
    """What a tracker has still to log of one configuration: merged events, oldest first."""

    config: str
    trials: list[str]
    params: dict
    cohort: str
    audit: bool
    status: str = Status.RUNNING
    steps: dict[int, dict[str, float]] = dataclasses.field(default_factory=dict)

    def merge(self, event: ConfigEvent) -> None:
        if event.trial not in self.trials:
            self.trials.append(event.trial)
        if event.params:
            self.params = event.params
        if event.metrics and event.task > 0:
            self.steps[event.task] = dict(event.metrics)
        self.status = event.status

    @classmethod
    def of(cls, event: ConfigEvent) -> ConfigUpdate:
        update = cls(event.config, [], dict(event.params), event.cohort, event.audit)
        update.merge(event)
        return update


class Runs:
    """One tracker's runs (its part of ``trackers.json``): the parent run's id, and per configuration
    its run's id, the tasks logged, whether its hyperparameters and test accuracy are logged, the
    trials it trained in and the status its run was ended with (None while it runs)."""

    def __init__(self, record: dict, lock: threading.Lock):
        self.record = record
        self.record.setdefault("parent", None)
        self.record.setdefault("runs", {})
        self.lock = lock
        self.touched = time.monotonic()  # when the tracker last did something

    @property
    def parent(self) -> str | None:
        return self.record["parent"]

    @parent.setter
    def parent(self, run: str) -> None:
        with self.lock:
            self.record["parent"] = run
            self.touched = time.monotonic()

    def run(self, config: str) -> dict | None:
        return self.record["runs"].get(config)

    def set(self, config: str, **values) -> dict:
        with self.lock:
            entry = self.record["runs"].setdefault(config, {"run": None, "steps": [], "params": False,
                                                            "status": None, "trials": [], "tested": False})
            entry.update(values)
            self.touched = time.monotonic()
            return entry

    def __len__(self) -> int:
        return len(self.record["runs"])


class RunRegistry:
    """The runs every tracker of a search holds, kept in ``<experiment>/trackers.json``."""

    def __init__(self, experiment_dir: str):
        self.location = storage.join(experiment_dir, TRACKERS_FILE)
        self.lock = threading.Lock()
        raw = storage.read_bytes(self.location)
        try:
            data = json.loads(raw) if raw else {}
            trackers = data.get("trackers", {}) if isinstance(data, dict) else None
        except json.JSONDecodeError as exc:
            trackers, raw = None, str(exc)
        if not isinstance(trackers, dict):
            raise RayclError(f"{self.location} is not the record of a search's tracker runs; move it away to "
                             "start the trackers' runs afresh")
        self.trackers = trackers
        self._saved = time.monotonic()
        self._interval = SAVE_INTERVAL_S
        self._dirty = False

    def runs(self, key: str) -> Runs:
        with self.lock:
            record = self.trackers.setdefault(key, {})
        return Runs(record, self.lock)

    def changed(self) -> None:
        """Runs changed: save now if the last save is older than the interval."""
        self._dirty = True
        if time.monotonic() - self._saved >= self._interval:
            self.save()

    def save(self) -> None:
        # Written under the lock: two workers' saves land in the order they read the runs.
        with self.lock:
            if not self._dirty:
                return
            began = time.monotonic()
            data = json.dumps({"trackers": self.trackers}, indent=1, sort_keys=True).encode()
            self._dirty = False
            storage.write_bytes(self.location, data)
            self._saved = time.monotonic()
            self._interval = max(SAVE_INTERVAL_S, SAVE_SHARE * (self._saved - began))


class Backend(Protocol):
    """A tracker's calls. Each may raise anything on failure (the worker keeps the batch and retries);
    each records in ``runs`` what it has done as soon as it has done it."""

    kind: str  # "mlflow", "wandb", "tensorboard"
    where: str  # its address or folder, for messages

    def open(self, info: SearchInfo, runs: Runs) -> None:
        """Create the search's parent run, or take up the one ``runs`` names."""

    def write(self, updates: list[ConfigUpdate], runs: Runs) -> None:
        """Log each configuration's new tasks and status: create its run where it has none, its
        hyperparameters once, each task not yet logged as one step, and end its run with its status."""

    def finish(self, outcome: SearchOutcome, runs: Runs) -> None:
        """Complete every configuration's run from the finished search (what the live events missed,
        the final status, test accuracy of the completed ones), add the files to the parent run and
        end it."""

    def close(self, runs: Runs) -> None:
        """Release what the backend holds open (open runs, writers); runs not ended stay as they are."""


def unlogged(entry: dict, steps, in_order: bool = False) -> list[int]:
    """The tasks of ``steps`` a configuration's run (its ``entry``) has not logged; ``in_order``: only
    those after the last it logged (a tracker whose steps can only grow, as W&B's)."""
    logged = set(entry["steps"])
    last = max(logged, default=0)
    return sorted(t for t in steps if t not in logged and (not in_order or t > last))


def expected_steps(outcome: ConfigOutcome) -> set[int]:
    """The tasks a finished configuration has metrics for (none for one that diverged in its first)."""
    return set(range(1, min(outcome.tasks, len(outcome.objective_by_task)) + 1))


def outcome_update(outcome: ConfigOutcome, entry: dict | None) -> ConfigUpdate:
    """The update that completes a configuration's run (``entry``, None if it has none) from the
    finished search: the objective of every task not logged, all its metrics at its last task."""
    update = ConfigUpdate(outcome.config, list(outcome.trials), dict(outcome.params), outcome.cohort,
                          outcome.audit, status=outcome.status)
    logged = set(entry["steps"]) if entry else set()
    for task in sorted(expected_steps(outcome) - logged):
        update.steps[task] = {"objective": outcome.objective_by_task[task - 1]}
    if outcome.tasks in expected_steps(outcome) and outcome.tasks not in logged and outcome.metrics:
        update.steps[outcome.tasks] = {**update.steps.get(outcome.tasks, {}), **outcome.metrics}
    return update


@contextlib.contextmanager
def artifact_files(locations: tuple[str, ...]) -> Iterator[list[Path]]:
    """The files at ``locations`` (local paths or URIs) as local files, for the time of the block:
    those in an object store copied into a temporary folder; those missing left out."""
    with tempfile.TemporaryDirectory(prefix="raycl-artifacts-") as folder:
        files = []
        for location in locations:
            if not storage.is_uri(location):
                if Path(location).is_file():
                    files.append(Path(location))
                continue
            data = storage.read_bytes(location)
            if data is not None:
                files.append(Path(folder, storage.name(location)))
                files[-1].write_bytes(data)
        yield files


def up_to_date(entry: dict | None, outcome: ConfigOutcome, in_order: bool = False) -> bool:
    """Whether a configuration's run (its ``entry`` in :class:`Runs`) holds everything of its
    ``outcome`` but test accuracy: every task (``in_order``: up to its last), its hyperparameters,
    its trials and its final status."""
    if entry is None or entry["run"] is None or not entry["params"] or entry["status"] != outcome.status \
            or not set(outcome.trials) <= set(entry["trials"]):
        return False
    expected = expected_steps(outcome)
    if in_order:
        return max(entry["steps"], default=0) >= max(expected, default=0)
    return expected <= set(entry["steps"])


class TrackerWorker:
    """A background thread that sends one tracker its batches; see the module's docstring."""

    def __init__(self, backend: Backend, info: SearchInfo, registry: RunRegistry, key: str):
        self.backend = backend
        self.info = info
        self.registry = registry
        self.runs = registry.runs(key)
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.pending: dict[str, ConfigUpdate] = {}
        self.opened = False
        self.failed = False  # the last call failed
        self.warned = False
        self.finished = threading.Event()
        self._retry_at = 0.0
        self._pause = RETRY_FIRST_S
        self._outcome: SearchOutcome | None = None
        self._stopping = False
        self._stop_asked = 0.0
        self.thread = threading.Thread(target=self._loop, name=f"raycl-{backend.kind}", daemon=True)
        self.thread.start()

    # ----- the driver's side ------------------------------------------------------------------------
    def submit(self, events: list[ConfigEvent]) -> None:
        if events:
            self.inbox.put(events)

    def stop(self, outcome: SearchOutcome | None = None) -> None:
        """Ask the worker to send what it holds (and, given the finished search, complete every run
        from it), then close; :meth:`wait` for it."""
        self._stop_asked = time.monotonic()
        self.inbox.put(("stop", outcome))

    def wait(self, stalled_after: float) -> bool:
        """Wait for the worker to end while its tracker makes progress: give up once it has done
        nothing for ``stalled_after`` seconds (a slow tracker with many runs to complete is waited
        for; a tracker that hangs is not). Whether it ended."""
        while not self.finished.wait(1.0):
            if time.monotonic() - max(self.runs.touched, self._stop_asked) > stalled_after:
                return False
        return True

    # ----- the worker's side ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stopping:
                self._take(block=True)
                if self._stopping:
                    break
                if self.pending and time.monotonic() >= self._retry_at:
                    self._attempt(self._send)
                    if not self.failed:
                        time.sleep(BATCH_INTERVAL_S)  # let the next batch gather
            # A last try of what is pending and, for a finished search, of completing every run, even
            # if a call failed a moment ago: the search is over and the tracker may be back.
            if self.pending:
                self._attempt(self._send)
            if self._outcome is not None and not self.failed:
                self._attempt(lambda: self.backend.finish(self._outcome, self.runs))
            try:
                self.backend.close(self.runs)
            except Exception as exc:  # a tracker that went away while closing
                self._warn(exc)
            self.registry.save()
        except Exception as exc:  # never let a tracker's bug end the search: it is reported instead
            log.debug("tracker %s stopped", self.backend.kind, exc_info=True)
            self._warn(exc)
        finally:
            self.finished.set()

    def _take(self, block: bool) -> None:
        try:
            item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if isinstance(item, tuple) and item[0] == "stop":
                self._stopping, self._outcome = True, item[1]
            else:
                for event in item:
                    if event.config in self.pending:
                        self.pending[event.config].merge(event)
                    else:
                        self.pending[event.config] = ConfigUpdate.of(event)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _send(self) -> None:
        if not self.pending:
            return
        batch = list(self.pending.values())
        self.backend.write(batch, self.runs)
        for update in batch:  # what arrived meanwhile stays pending
            if self.pending.get(update.config) is update:
                del self.pending[update.config]

    def _attempt(self, call) -> None:
        try:
            if not self.opened:
                self.backend.open(self.info, self.runs)
                self.opened = True
            call()
        except Exception as exc:  # any tracker failure: reported once, retried later
            self.failed = True
            self._warn(exc)
            self._retry_at = time.monotonic() + self._pause
            self._pause = min(2 * self._pause, RETRY_LONGEST_S)
        else:
            if self.failed:
                log.info("tracker %s (%s) answers again: its runs catch up", self.backend.kind, self.backend.where)
            self.failed = False
            self._pause = RETRY_FIRST_S
        finally:
            self.registry.changed()

    def _warn(self, exc: BaseException) -> None:
        if self.warned:
            return
        self.warned = True
        reason = " ".join(str(exc).split())
        # An HTTP client's message names the request first and what went wrong last.
        reason = reason.rsplit("(Caused by ", 1)[-1].removesuffix(")") if "(Caused by " in reason else reason
        reason = reason[:200] or type(exc).__name__
        log.warning("warning: tracker %s (%s) failed: %s: %s; the search goes on without it (its own files are "
                    "the record) and completes its runs at the end if it comes back", self.backend.kind,
                    self.backend.where, type(exc).__name__, reason)
