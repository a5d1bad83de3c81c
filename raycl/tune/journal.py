"""A search's record of its decisions: JSON lines, appended, never rewritten on a local disk.

The first line says what the search was asked (its settings); every later line is one event the
scheduler recorded before acting on it (:mod:`raycl.tune.promotion`). A process killed in the middle
of a write leaves a torn last line: reading skips it (that event had not taken effect) and says
so. An object store cannot append: there the record is kept in segments of at most
``SEGMENT_EVENTS`` events (``<name>.part-00000``, ...), the last one written again with every event,
so an event costs a bounded write however long the search.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from raycl import storage

log = logging.getLogger(__name__)

SEGMENT_EVENTS = 1000


def segments(location: str) -> list[str]:
    """The segments of a journal kept in an object store, in order."""
    return storage.siblings(location, f"{storage.name(location)}.part-")


class Journal:
    """Appends events to ``location`` (a local path or a URI)."""

    def __init__(self, location: str):
        self.location = location
        self._segment: tuple[int, list[str]] | None = None  # an object store's last segment: index, lines

    def append(self, event: dict) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        if not storage.is_uri(self.location):
            path = Path(self.location)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as stream:
                stream.write(line)
            return
        if self._segment is None:
            existing = segments(self.location)
            data = storage.read_bytes(existing[-1]) if existing else None
            self._segment = (len(existing) - 1 if existing else 0, data.decode().splitlines(True) if data else [])
        index, lines = self._segment
        if len(lines) >= SEGMENT_EVENTS:
            index, lines = index + 1, []
        lines.append(line)
        self._segment = (index, lines)
        storage.write_bytes(f"{self.location}.part-{index:05d}", "".join(lines).encode())

    def __getstate__(self) -> dict:
        return {"location": self.location, "_segment": None}


def read_journal(location: str) -> list[dict]:
    """Every event recorded at ``location`` ([] when there is none); a torn last line is skipped."""
    if storage.is_uri(location):
        data = b"".join(storage.read_bytes(part) or b"" for part in segments(location))
    else:
        data = storage.read_bytes(location)
    if not data:
        return []
    lines = data.decode(errors="replace").splitlines()
    events = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):
                log.warning("%s: its last line was cut short (the search was killed while writing it); "
                            "that decision had not taken effect and is taken again", location)
                break
            raise
    return events


def repair_journal(location: str) -> None:
    """Cut a torn last line off a local journal, so that the next event starts a line of its own."""
    if storage.is_uri(location):
        return
    path = Path(location)
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
