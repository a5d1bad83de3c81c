"""Atomic writes and the best-args YAML file (dataset -> method -> buffer size -> entry)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from raycl.errors import RayclError, unknown

log = logging.getLogger(__name__)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def locked(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path``'s sidecar ``.lock`` file (read-modify-write of one file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RayclError(f"file not found: {path}")
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RayclError(f"{path} is not valid YAML: {problem}{at}") from None


def buffer_key(config: dict) -> int:
    """Best-args entries are keyed by buffer size; methods without a buffer use 0."""
    return int(config.get("buffer_size", 0))


def best_args_entry(path: str | os.PathLike, dataset: str, method: str, buffer_size: int | None) -> tuple[int, dict]:
    """The key (buffer size) and entry of (dataset, method, buffer size) in a best-args file; with
    ``buffer_size`` None the file must hold exactly one buffer size for the pair. A file that is not
    of the best-args shape is one RayclError naming the part that is not."""
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise RayclError(f"{path}: expected a mapping dataset -> method -> buffer size")
    if dataset not in data:
        raise unknown("dataset", dataset, [str(d) for d in data], where=str(path))
    methods = data[dataset] or {}
    if not isinstance(methods, dict):
        raise RayclError(f"{path}: {dataset} must map methods to their entries, not be a {type(methods).__name__}")
    if method not in methods:
        raise unknown(f"method for dataset {dataset!r}", method, [str(m) for m in methods], where=str(path))
    raw = methods[method] or {}
    if not isinstance(raw, dict):
        raise RayclError(f"{path}: {dataset}/{method} must map buffer sizes to entries, not be a {type(raw).__name__}")
    sizes = {}
    for key, entry in raw.items():
        size = _whole(key)
        if size is None:
            raise RayclError(f"{path}: {dataset}/{method} has the key {key!r}; entries are keyed by buffer size, a "
                             "whole number (0 for a method without a buffer)")
        sizes[size] = entry
    if buffer_size is None:
        if len(sizes) != 1:
            raise RayclError(f"{path} holds {dataset}/{method} for buffer sizes {sorted(sizes)}; "
                             "choose one with --buffer-size")
        buffer_size = next(iter(sizes))
    if buffer_size not in sizes:
        raise unknown(f"buffer size for {dataset}/{method}", buffer_size, sizes, where=str(path))
    entry = sizes[buffer_size] or {}
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise RayclError(f"{path}: entry {dataset}/{method}/{buffer_size} has no 'config' mapping")
    return buffer_size, entry


def _whole(value: Any) -> int | None:
    """``value`` as a whole number (an int, or a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None


def load_best_args(path: str | os.PathLike, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The stored hyperparameters for (dataset, method, buffer size).

    With ``buffer_size`` None the file must hold exactly one buffer size for the pair. An entry keyed
    by a buffer size whose config names none (a hand-written file) trains with the size its key
    names, said in one line; one whose config names another is an error.
    """
    key, entry = best_args_entry(path, dataset, method, buffer_size)
    config = dict(entry["config"])
    if key and "buffer_size" not in config:
        log.info("%s: entry %s/%s/%s names no buffer_size in its config: it trains with the buffer size its key "
                 "names, %s", path, dataset, method, key, key)
        config["buffer_size"] = key
    elif "buffer_size" in config and _whole(config["buffer_size"]) != key:
        raise RayclError(f"{path}: entry {dataset}/{method}/{key} has buffer_size {config['buffer_size']!r} in its "
                         "config; an entry's key is the buffer size its config trains with")
    return config


def save_best_args(path: str | os.PathLike, dataset: str, method: str, config: dict,
                   provenance: dict) -> None:
    """Merge one entry into the best-args file, keeping every other entry; atomic and locked."""
    path = Path(path)
    with locked(path):
        data = (read_yaml(path) or {}) if path.is_file() else {}
        if not isinstance(data, dict):
            raise RayclError(f"{path}: expected a mapping dataset -> method -> buffer size")
        methods = data.setdefault(dataset, {}) or {}
        if not isinstance(methods, dict):
            raise RayclError(f"{path}: {dataset} must map methods to their entries; fix the file or choose another")
        data[dataset] = methods
        sizes = methods.setdefault(method, {}) or {}
        if not isinstance(sizes, dict):
            raise RayclError(f"{path}: {dataset}/{method} must map buffer sizes to entries; fix the file or choose "
                             "another")
        methods[method] = sizes
        sizes[buffer_key(config)] = {"config": dict(config), "provenance": dict(provenance)}
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))


def load_best_args_provenance(path: str | os.PathLike, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The provenance stored with the entry :func:`load_best_args` reads (empty if it has none)."""
    _, entry = best_args_entry(path, dataset, method, buffer_size)
    provenance = entry.get("provenance")
    return dict(provenance) if isinstance(provenance, dict) else {}
