"""TensorBoard: one run folder per configuration, ``<folder>/<configuration id>/`` (by default the
experiment's ``tensorboard/`` folder), beside the per-trial JSON and CSV logs Ray Tune writes (its own
TensorBoard logger is off where this tracker runs: :func:`raycl.tune.search._stream_callbacks`).

A configuration's validation metrics are scalars, one step per task trained, its hyperparameters
and raycl tags one text entry; after the search its final status is a text entry and a completed
configuration's test accuracy scalars at its last task.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import yaml

from raycl.tune.trackers.events import SearchInfo, SearchOutcome
from raycl.tune.trackers.queue import ConfigUpdate, Runs, outcome_update, unlogged, up_to_date
from raycl.vocabulary import Status

EVENT_FILE_SUFFIX = ".raycl"  # names the event file raycl appends to in a configuration's folder


def _record(data: bytes) -> bytes:
    """``data`` framed as a TFRecord: length, its masked CRC-32C, data, the data's masked CRC-32C."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _complete_length(data: bytes) -> int:
    """The length of the complete records at the start of ``data`` (an event file cut by a crash ends
    within a record)."""
    position = 0
    while position + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[position:position + 8])
        if position + 12 + length + 4 > len(data):
            break
        position += 12 + length + 4
    return position


class EventFile:
    """A configuration's TensorBoard event file, opened for each batch of events, appended to and
    closed again: a search holds no file, pipe or thread for the thousands of configurations waiting
    at its rungs (tensorboardX's SummaryWriter holds all three while open, and truncates when opened).
    TensorBoard reads a growing event file as it grows."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(folder.glob(f"events.out.tfevents.*{EVENT_FILE_SUFFIX}"))
        if existing:  # a resumed search: go on in the same file, cut after its last complete record
            self.path = existing[-1]
            data = self.path.read_bytes()
            complete = _complete_length(data)
            if complete < len(data):
                with open(self.path, "r+b") as file:
                    file.truncate(complete)
            return
        from tensorboardX.proto import event_pb2

        self.path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}{EVENT_FILE_SUFFIX}"
        self.append([event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")])

    def append(self, events: list) -> None:
        data = b"".join(_record(event.SerializeToString()) for event in events)
        with open(self.path, "ab") as file:
            file.write(data)


class TensorboardBackend:
    kind = "tensorboard"

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.where = str(self.folder)
        self.info: SearchInfo | None = None
        self.files: dict[str, EventFile] = {}  # configuration id -> its event file (a path: nothing held open)

    def open(self, info: SearchInfo, runs: Runs) -> None:
        self.info = info
        self.folder.mkdir(parents=True, exist_ok=True)
        runs.parent = str(self.folder)

    def _file(self, config: str, runs: Runs) -> EventFile:
        if config not in self.files:
            self.files[config] = EventFile(self.folder / config)
            if not (runs.run(config) or {}).get("run"):
                runs.set(config, run=config)
        return self.files[config]

    @staticmethod
    def _event(summary, step: int):
        from tensorboardX.proto import event_pb2

        return event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)

    def _scalar(self, name: str, value: float, step: int):
        from tensorboardX.summary import scalar

        return self._event(scalar(name, value), step)

    def _text(self, tag: str, text: str, step: int):
        from tensorboardX.summary import text as text_summary

        return self._event(text_summary(tag, text), step)

    def write(self, updates: list[ConfigUpdate], runs: Runs) -> None:
        for update in updates:
            self._write(update, runs)

    def _write(self, update: ConfigUpdate, runs: Runs) -> None:
        file = self._file(update.config, runs)
        entry = runs.run(update.config)
        events = []
        if not entry["params"]:
            text = yaml.safe_dump({"config": update.params, "raycl": {**self.info.tags(), "cohort": update.cohort,
                                                                      "audit": update.audit}}, sort_keys=True)
            events.append(self._text("configuration", f"```\n{text}```", 0))
        trials = list(dict.fromkeys([*entry["trials"], *update.trials]))
        if trials != entry["trials"]:
            events.append(self._text("trials", ", ".join(trials), max(entry["steps"], default=0)))
        steps = unlogged(entry, update.steps)
        for step in steps:
            events += [self._scalar(name, value, step) for name, value in update.steps[step].items()]
        ended = update.status != Status.RUNNING and entry["status"] != update.status
        if ended:
            events.append(self._text("status", str(update.status), max([*entry["steps"], *steps], default=0)))
        file.append(events)
        runs.set(update.config, params=True, trials=trials, steps=sorted({*entry["steps"], *steps}))
        if ended:
            runs.set(update.config, status=str(update.status))

    def finish(self, outcome: SearchOutcome, runs: Runs) -> None:
        for config in outcome.configs:
            entry = runs.run(config.config)
            tested = config.status == Status.COMPLETED and config.test and not (entry and entry["tested"])
            if not up_to_date(entry, config):
                self._write(outcome_update(config, entry), runs)
            if tested:
                self._file(config.config, runs).append(
                    [self._scalar(name, value, config.tasks) for name, value in config.test.items()])
                runs.set(config.config, tested=True)

    def close(self, runs: Runs) -> None:
        self.files.clear()
