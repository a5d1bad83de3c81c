"""Where ``--optuna-storage`` keeps a search's Optuna study: a journal file or a database.

Optuna writes to its storage at every ask, suggestion, report and tell, a dozen writes per
configuration. A database commits each one: SQLite in its default rollback-journal mode syncs the
disk at every commit, which makes the study's writes the dearest part of a search of small
configurations. So:

- a plain file path (``optuna.log``) is Optuna's journal storage: each write one appended line,
  read back incrementally; optuna-dashboard opens the file as it is (``optuna-dashboard optuna.log``);
- a database URL (``sqlite:///optuna.db``, ``postgresql://...``) is Optuna's RDB storage; a SQLite
  file is opened in write-ahead-log mode with normal synchronisation (commits no longer wait for
  the disk; a power cut, not a crash of the search, can lose the last ones).
"""

from __future__ import annotations

from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages.journal import JournalFileBackend

from raycl.errors import RayclError


def is_database_url(location: str) -> bool:
    return "://" in location


def open_storage(location: str):
    """The Optuna storage at ``location`` (see the module's docstring); RayclError in one line when
    it cannot be opened."""
    if not is_database_url(location):
        path = Path(location).expanduser()
        if not path.parent.is_dir():
            raise RayclError(f"--optuna-storage {location}: its folder {path.parent} does not exist "
                             "(a journal file path, e.g. optuna.log, or a database URL, e.g. sqlite:///optuna.db)")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        storage = (_WriteAheadStorage if location.startswith("sqlite") else optuna.storages.RDBStorage)(location)
    except Exception as exc:  # SQLAlchemy's errors: a missing folder, a bad URL, no driver
        reason = str(exc).strip().splitlines()[0]
        raise RayclError(f"--optuna-storage {location}: cannot open the database ({reason}); "
                         "e.g. sqlite:///optuna.db (its folder must exist), or a journal file path such as "
                         "optuna.log") from None
    return storage


def _pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class _WriteAheadStorage(optuna.storages.RDBStorage):
    """A SQLite study whose connections are in write-ahead-log mode, synchronised at checkpoints (also
    once unpickled, as Tune restores its searcher)."""

    def __init__(self, url: str):
        super().__init__(url)
        self._write_ahead()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._write_ahead()

    def _write_ahead(self) -> None:
        sqlalchemy.event.listen(self.engine, "connect", _pragmas)
        self.engine.dispose()  # the connections opened before the listener: reopened with it
