"""Atomic writes and the best-args YAML file (dataset -> method -> buffer size -> entry)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from raycl.errors import RayclError, unknown


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
        raise RayclError(f"{path} is not valid YAML: {exc}") from None


def buffer_key(config: dict) -> int:
    """Best-args entries are keyed by buffer size; methods without a buffer use 0."""
    return int(config.get("buffer_size", 0))


def load_best_args(path: str | os.PathLike, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The stored hyperparameters for (dataset, method, buffer size).

    With ``buffer_size`` None the file must hold exactly one buffer size for the pair.
    """
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise RayclError(f"{path}: expected a mapping dataset -> method -> buffer size")
    if dataset not in data:
        raise unknown("dataset", dataset, data, where=str(path))
    methods = data[dataset] or {}
    if method not in methods:
        raise unknown(f"method for dataset {dataset!r}", method, methods, where=str(path))
    sizes = {int(k): v for k, v in (methods[method] or {}).items()}
    if buffer_size is None:
        if len(sizes) != 1:
            raise RayclError(f"{path} holds {dataset}/{method} for buffer sizes {sorted(sizes)}; "
                             "choose one with --buffer-size")
        buffer_size = next(iter(sizes))
    if buffer_size not in sizes:
        raise unknown(f"buffer size for {dataset}/{method}", buffer_size, sizes, where=str(path))
    entry = sizes[buffer_size] or {}
    config = entry.get("config")
    if not isinstance(config, dict):
        raise RayclError(f"{path}: entry {dataset}/{method}/{buffer_size} has no 'config' mapping")
    return dict(config)


def save_best_args(path: str | os.PathLike, dataset: str, method: str, config: dict,
                   provenance: dict) -> None:
    """Merge one entry into the best-args file, keeping every other entry; atomic and locked."""
    path = Path(path)
    with locked(path):
        data = (read_yaml(path) or {}) if path.is_file() else {}
        if not isinstance(data, dict):
            raise RayclError(f"{path}: expected a mapping dataset -> method -> buffer size")
        methods = data.setdefault(dataset, {}) or {}
        data[dataset] = methods
        sizes = methods.setdefault(method, {}) or {}
        methods[method] = sizes
        sizes[buffer_key(config)] = {"config": dict(config), "provenance": dict(provenance)}
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=True))


def load_best_args_provenance(path: str | os.PathLike, dataset: str, method: str, buffer_size: int | None) -> dict:
    """The provenance stored with the entry :func:`load_best_args` reads (empty if it has none)."""
    config = load_best_args(path, dataset, method, buffer_size)  # checks that the entry exists
    sizes = {int(k): v for k, v in ((read_yaml(path) or {})[dataset][method] or {}).items()}
    entry = sizes[buffer_key(config) if buffer_size is None else int(buffer_size)] or {}
    provenance = entry.get("provenance")
    return dict(provenance) if isinstance(provenance, dict) else {}
